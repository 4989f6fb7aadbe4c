"""`run db copy --from SRC --to DST`: a home's registry into PostgreSQL, or back, counts verified."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import StoreError


def store_url(where: str, *, must_exist: bool) -> str:
    """A store URL as given, or the SQLite file of a runtime home folder (or a .db file)."""
    if "://" in where:
        return where
    path = Path(where).expanduser().resolve()
    db = path if path.suffix == ".db" or path.is_file() else path / "registry.db"
    if must_exist and not db.is_file():
        raise StoreError(f"No registry at {db}: name a runtime home folder, a sqlite:/// URL or a "
                         "postgresql:// URL")
    return f"sqlite:///{db}"


def copy_main(args: argparse.Namespace) -> int:
    from ..store import open_store
    from ..store.copy import copy_registry, describe

    source = open_store(store_url(args.source, must_exist=True))
    try:
        dest = open_store(store_url(args.dest, must_exist=False))
        try:
            report = copy_registry(source, dest, force=args.force)
        finally:
            dest.close()
    finally:
        source.close()
    if args.json:
        print(json.dumps({"source": source.url, "destination": dest.url, **describe(report)},
                         indent=2))
    else:
        print(f"Copied the registry {source.url} -> {dest.url}")
        rows = [("TABLE", "SOURCE", "DESTINATION", "")] + [
            (t, str(s), str(d), "" if s == d else "MISMATCH") for t, (s, d) in report.counts.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for name, s, d, note in rows:
            print(f"  {name.ljust(widths[0])}  {s.rjust(widths[1])}  {d.rjust(widths[2])}  {note}"
                  .rstrip())
        for table, why in report.skipped.items():
            print(f"  {table}: {why}")
        print("Artifacts (recipes, models, run folders) stay where they are: point the new "
              "registry's servers at the same artifact location.")
    if not report.ok:
        raise StoreError("The copy's row counts differ from the source's (see above)")
    return 0
