"""`run db copy`: a whole registry from one store to another (SQLite <-> PostgreSQL), table by
table, in one destination transaction, then the counts of both compared.

Every document (deleted ones too, with their timestamps and insertion order), run status, run
ledger row, data set, schedule, MLService state and the runs view's rows (index, values, metric
series and read offsets) move as they are. Leases do not: they belong to live processes of the
source. The runs view's tables are filled by the destination's triggers as documents arrive, then
replaced by the source's rows, so both hold the same values whatever the triggers derive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from . import Store

# Parents before children, so that triggers reading a run's Experiment and MLInstance find them;
# run statuses after their runs. The other tables follow in name order.
FIRST = ("engines", "mlInstances", "experiments", "experimentRuns", "models", "insights",
         "mlServices", "runStatus")
# Written by the destination's triggers from the documents: emptied, then copied as the source has them.
DERIVED = ("runIndex", "runValues")
NOT_COPIED = ("leases",)


@dataclass
class CopyReport:
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)   # table: (source, dest)
    skipped: dict[str, str] = field(default_factory=dict)              # table: why

    @property
    def ok(self) -> bool:
        return all(s == d for s, d in self.counts.values())


def _ordered(tables: list[str]) -> list[str]:
    rest = sorted(t for t in tables if t not in FIRST and t not in DERIVED)
    return [t for t in FIRST if t in tables] + rest + [t for t in DERIVED if t in tables]


def copy_registry(source: Store, dest: Store, *, force: bool = False) -> CopyReport:
    """Copies every table `source` and `dest` share. A destination that holds anything is refused
    unless `force`, which empties its tables first (the destination becomes the source's copy)."""
    if source.url == dest.url:
        raise StoreError(f"The source and the destination are the same registry ({dest.url})")
    report = CopyReport()
    src_tables, dst_tables = set(source.table_names()), set(dest.table_names())
    for table in sorted(src_tables | dst_tables):
        if table in NOT_COPIED:
            report.skipped[table] = "held by live processes, not copied"
        elif table not in dst_tables:
            report.skipped[table] = "only in the source"
        elif table not in src_tables:
            report.skipped[table] = "only in the destination"
    tables = _ordered([t for t in src_tables & dst_tables if t not in NOT_COPIED])
    full = [t for t in tables if dest.table_count(t)]
    if full and not force:
        raise StoreError(f"The destination {dest.url} is not empty ({', '.join(full)} hold rows): "
                         "copy into a new database or home, or pass --force to replace its registry")
    with dest.transaction(), source.snapshot():
        for table in reversed(tables):
            dest.table_clear(table)
        for table in tables:
            if table in DERIVED:
                dest.table_clear(table)
            columns = [c for c in source.table_columns(table) if c in set(dest.table_columns(table))]
            dest.table_load(table, columns, source.table_rows(table, columns))
        counts = {t: source.table_count(t) for t in tables}
    for table in tables:
        report.counts[table] = (counts[table], dest.table_count(table))
    return report


def describe(report: CopyReport) -> dict[str, Any]:
    return {"ok": report.ok,
            "tables": {t: {"source": s, "destination": d} for t, (s, d) in report.counts.items()},
            "skipped": report.skipped}
