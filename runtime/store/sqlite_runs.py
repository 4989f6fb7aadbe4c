"""SQLite tables behind the runs view: an index row per run, its sortable values, its metric series.

- `runIndex`: one row per run (scope, Engine/MLInstance/Experiment, mode, state, times), kept by
  triggers on `experimentRuns` and `runStatus`, so every writer (server, CLI, another process)
  keeps it current without knowing it exists.
- `runValues`: (run, kind, key) -> val for `param` (the resolved parameters), `metric` (the final
  value: the run's result metric, else the last step of its series) and `best` (the best step or
  final value; lower is better except for accuracy-like names). Indexed on (kind, key, val), which
  is what the table sorts on.
- `runMetrics`: the per-step series; `runMetricsRead` how far a run's metrics.jsonl was read.

`create_run_views` is a migration step: frozen once released (changes go in a new migration).
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Optional, Sequence

from . import Scope

# Metric names (lower case, without separators) for which a higher value is better.
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "fscore", "f1", "f1score", "auc", "rsquared",
                    "r2", "map", "ndcg")
_NORMALISED = "lower(replace(replace(replace({k}, '-', ''), '_', ''), ' ', ''))"


def higher_is_better(name: str) -> bool:
    return re.sub(r"[-_ ]", "", name.lower()) in HIGHER_IS_BETTER


def _best_of(key: str, old: str, new: str) -> str:
    higher = ", ".join(f"'{n}'" for n in HIGHER_IS_BETTER)
    return (f"CASE WHEN {old} IS NULL THEN {new} WHEN {new} IS NULL THEN {old} "
            f"WHEN {_NORMALISED.format(k=key)} IN ({higher}) THEN max({old}, {new}) "
            f"ELSE min({old}, {new}) END")


_RESULT_METRICS = ("SELECT {run}, '{kind}', json_extract(j.value, '$.name'), "
                   "json_extract(j.value, '$.value') FROM json_each({doc}, '$.result.metrics') j "
                   "WHERE json_extract(j.value, '$.name') IS NOT NULL")
_PARAMS = ("SELECT {run}, 'param', j.key, j.value FROM json_each({doc}, '$.runtime.resolved.values') j")


def _status_update(row: str) -> str:
    return (f"UPDATE runIndex SET state = {row}.state, "
            f"started = json_extract({row}.doc, '$.status.tasks[0].started'), "
            f"ended = json_extract({row}.doc, '$.status.tasks[0].ended'), "
            f"duration_s = (julianday(json_extract({row}.doc, '$.status.tasks[0].ended')) - "
            f"julianday(json_extract({row}.doc, '$.status.tasks[0].started'))) * 86400.0 "
            f"WHERE id = {row}.id")


def create_run_views(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE runIndex (id TEXT PRIMARY KEY, org TEXT NOT NULL, sandbox TEXT NOT NULL,"
        " deleted INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, mode TEXT, experimentId TEXT,"
        " mlInstanceId TEXT, engineId TEXT, state TEXT, started TEXT, ended TEXT, duration_s REAL)")
    for name, cols in (("created", "deleted, created"), ("state", "deleted, state, created"),
                       ("mode", "deleted, mode, created"), ("duration", "deleted, duration_s"),
                       ("engine", "engineId, deleted, created"),
                       ("instance", "mlInstanceId, deleted, created"),
                       ("experiment", "experimentId, deleted, created")):
        conn.execute(f"CREATE INDEX runIndex_{name} ON runIndex (org, sandbox, {cols})")
    conn.execute("CREATE TABLE runValues (run TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,"
                 " val, PRIMARY KEY (run, kind, key)) WITHOUT ROWID")
    conn.execute("CREATE INDEX runValues_sort ON runValues (kind, key, val)")
    conn.execute("CREATE TABLE runMetrics (run TEXT NOT NULL, name TEXT NOT NULL,"
                 " step INTEGER NOT NULL, value REAL, ts REAL, PRIMARY KEY (run, name, step))"
                 " WITHOUT ROWID")
    conn.execute("CREATE TABLE runMetricsRead (run TEXT PRIMARY KEY, offset INTEGER NOT NULL)")

    instance = "(SELECT mlInstanceId FROM experiments WHERE id = new.experimentId)"
    engine = ("(SELECT m.engineId FROM experiments e JOIN mlInstances m ON m.id = e.mlInstanceId"
              " WHERE e.id = new.experimentId)")
    conn.execute(
        "CREATE TRIGGER runIndex_insert AFTER INSERT ON experimentRuns BEGIN "
        "INSERT OR REPLACE INTO runIndex (id, org, sandbox, deleted, created, mode, experimentId,"
        " mlInstanceId, engineId) VALUES (new.id, new.org, new.sandbox, new.deleted, new.created,"
        f" new.mode, new.experimentId, {instance}, {engine}); END")
    conn.execute(
        "CREATE TRIGGER runIndex_deleted AFTER UPDATE OF deleted ON experimentRuns "
        "WHEN new.deleted IS NOT old.deleted BEGIN "
        "UPDATE runIndex SET deleted = new.deleted WHERE id = new.id; END")
    conn.execute(
        "CREATE TRIGGER runValues_params AFTER UPDATE OF doc ON experimentRuns "
        "WHEN json_extract(new.doc, '$.runtime.resolved.values') IS NOT "
        "json_extract(old.doc, '$.runtime.resolved.values') BEGIN "
        "DELETE FROM runValues WHERE run = new.id AND kind = 'param'; "
        "INSERT OR REPLACE INTO runValues (run, kind, key, val) "
        + _PARAMS.format(run="new.id", doc="new.doc") + "; END")
    # The final metrics win over the series' last value; `best` keeps the better of both.
    conn.execute(
        "CREATE TRIGGER runValues_result AFTER UPDATE OF doc ON experimentRuns "
        "WHEN json_extract(new.doc, '$.result.metrics') IS NOT "
        "json_extract(old.doc, '$.result.metrics') BEGIN "
        "INSERT OR REPLACE INTO runValues (run, kind, key, val) "
        + _RESULT_METRICS.format(run="new.id", kind="metric", doc="new.doc") + "; "
        "INSERT INTO runValues (run, kind, key, val) "
        + _RESULT_METRICS.format(run="new.id", kind="best", doc="new.doc")
        + " ON CONFLICT (run, kind, key) DO UPDATE SET val = "
        + _best_of("excluded.key", "runValues.val", "excluded.val") + "; END")
    for event in ("INSERT", "UPDATE"):
        conn.execute(f"CREATE TRIGGER runIndex_status_{event.lower()} AFTER {event} ON runStatus "
                     f"BEGIN {_status_update('new')}; END")

    # Runs recorded before this migration.
    conn.execute(
        "INSERT INTO runIndex (id, org, sandbox, deleted, created, mode, experimentId, mlInstanceId,"
        " engineId) SELECT r.id, r.org, r.sandbox, r.deleted, r.created, r.mode, r.experimentId,"
        " e.mlInstanceId, m.engineId FROM experimentRuns r LEFT JOIN experiments e"
        " ON e.id = r.experimentId LEFT JOIN mlInstances m ON m.id = e.mlInstanceId")
    conn.execute("UPDATE runIndex SET state = s.state, "
                 "started = json_extract(s.doc, '$.status.tasks[0].started'), "
                 "ended = json_extract(s.doc, '$.status.tasks[0].ended') "
                 "FROM runStatus s WHERE s.id = runIndex.id")
    conn.execute("UPDATE runIndex SET duration_s = (julianday(ended) - julianday(started)) * 86400.0")
    conn.execute("INSERT OR REPLACE INTO runValues (run, kind, key, val) "
                 + _PARAMS.format(run="r.id", doc="r.doc").replace("FROM json_each", "FROM experimentRuns r, json_each"))
    for kind in ("metric", "best"):
        conn.execute("INSERT OR REPLACE INTO runValues (run, kind, key, val) "
                     + _RESULT_METRICS.format(run="r.id", kind=kind, doc="r.doc").replace(
                         "FROM json_each", "FROM experimentRuns r, json_each"))


_SYSTEM = ("SELECT {run}, 'system', j.key, j.value FROM json_each({doc}, '$.result.system') j "
           "WHERE j.type IN ('integer', 'real')")
_TAGS = "SELECT {run}, 'tag', j.key, j.value FROM json_each({doc}, '$.tags') j"


def create_run_search(conn: sqlite3.Connection) -> None:
    """Migration step: the run's system metrics' summary (`system`, numbers only) and its tags
    (`tag`) in runValues, kept by triggers, so the runs table sorts and the search language
    (runtime.run_search) filters on them with the index the table already has."""
    for kind, select, path in (("system", _SYSTEM, "$.result.system"), ("tag", _TAGS, "$.tags")):
        conn.execute(
            f"CREATE TRIGGER runValues_{kind} AFTER UPDATE OF doc ON experimentRuns "
            f"WHEN json_extract(new.doc, '{path}') IS NOT json_extract(old.doc, '{path}') BEGIN "
            f"DELETE FROM runValues WHERE run = new.id AND kind = '{kind}'; "
            "INSERT OR REPLACE INTO runValues (run, kind, key, val) "
            + select.format(run="new.id", doc="new.doc") + "; END")
        if kind == "tag":   # a run's tags come with it; its summary comes at its end
            conn.execute("CREATE TRIGGER runValues_tag_insert AFTER INSERT ON experimentRuns BEGIN "
                         "INSERT OR REPLACE INTO runValues (run, kind, key, val) "
                         + select.format(run="new.id", doc="new.doc") + "; END")
        conn.execute("INSERT OR REPLACE INTO runValues (run, kind, key, val) "
                     + select.format(run="r.id", doc="r.doc").replace(
                         "FROM json_each", "FROM experimentRuns r, json_each"))


# --- the series --------------------------------------------------------------------------------

def _offset_key(run_id: str, source: str) -> str:
    """runMetricsRead's key: the run for metrics.jsonl, `RUN:system` for system.jsonl."""
    return f"{run_id}:{source}" if source else run_id


def read_offset(conn: sqlite3.Connection, run_id: str) -> int:
    row = conn.execute("SELECT offset FROM runMetricsRead WHERE run = ?", (run_id,)).fetchone()
    return row[0] if row else 0


def add_points(conn: sqlite3.Connection, run_id: str, points: Sequence[dict[str, Any]],
               offset: int, offset_key: Optional[str] = None) -> None:
    """Inside the caller's transaction: the points, the read offset, and each series' last and
    best value (a step logged twice keeps its latest value)."""
    conn.executemany("INSERT OR REPLACE INTO runMetrics (run, name, step, value, ts) "
                     "VALUES (?, ?, ?, ?, ?)",
                     [(run_id, p["name"], p["step"], p["value"], p["ts"]) for p in points])
    conn.execute("INSERT INTO runMetricsRead (run, offset) VALUES (?, ?) "
                 "ON CONFLICT (run) DO UPDATE SET offset = excluded.offset",
                 (offset_key or run_id, offset))
    # System metrics (system/...) are summarised by the worker, not sorted by their last step.
    names = sorted({p["name"] for p in points if not p["name"].startswith("system/")})
    for name in names:
        last = conn.execute("SELECT value FROM runMetrics WHERE run = ? AND name = ? "
                            "ORDER BY step DESC LIMIT 1", (run_id, name)).fetchone()
        agg = "max" if higher_is_better(name) else "min"
        best = conn.execute(f"SELECT {agg}(value) FROM runMetrics WHERE run = ? AND name = ?",
                            (run_id, name)).fetchone()
        conn.execute("INSERT OR REPLACE INTO runValues (run, kind, key, val) VALUES (?, 'metric', ?, ?)",
                     (run_id, name, last[0] if last else None))
        conn.execute("INSERT INTO runValues (run, kind, key, val) VALUES (?, 'best', ?, ?) "
                     "ON CONFLICT (run, kind, key) DO UPDATE SET val = "
                     + _best_of("excluded.key", "runValues.val", "excluded.val"),
                     (run_id, name, best[0] if best else None))


def series(conn: sqlite3.Connection, run_ids: Sequence[str],
           names: Optional[Iterable[str]] = None) -> dict[str, dict[str, dict[str, list]]]:
    """{run: {name: {"steps": [...], "values": [...]}}} in step order."""
    out: dict[str, dict[str, dict[str, list]]] = {r: {} for r in run_ids}
    wanted = set(names) if names else None
    for run_id in run_ids:
        for name, step, value in conn.execute(
                "SELECT name, step, value FROM runMetrics WHERE run = ? ORDER BY name, step",
                (run_id,)):
            if wanted is not None and name not in wanted:
                continue
            entry = out[run_id].setdefault(name, {"steps": [], "values": []})
            entry["steps"].append(step)
            entry["values"].append(value)
    return out


# --- the runs table ----------------------------------------------------------------------------

INDEX_COLUMNS = ("created", "mode", "state", "started", "ended", "duration_s")
FILTER_COLUMNS = ("engineId", "mlInstanceId", "experimentId", "state", "mode")
VALUE_KINDS = ("param", "metric", "best", "system", "tag")


_ROW = ("r.id, r.created, r.mode, r.state, r.started, r.ended, r.duration_s, r.experimentId,"
        " r.mlInstanceId, r.engineId")
_ROW_NAMES = ("id", "created", "mode", "state", "started", "ended", "duration_s", "experimentId",
              "mlInstanceId", "engineId")


def table_page(conn: sqlite3.Connection, org: str, sandbox: str, filters: dict[str, str],
               sort_kind: Optional[str], sort_key: str, descending: bool, start: int,
               limit: int, search: Any = None) -> tuple[list[dict[str, Any]], int]:
    """One page of runIndex rows, filtered and sorted, and the count of matches. Runs without
    the sort value (not finished, or without that metric) come last, newest first; in a metric
    sort, runs that did not end DONE (an ABORTED run's partial curve, a FAILED run's) come after
    the DONE ones, whatever their value. `search` is a compiled search over `r`
    (runtime.run_search.CompiledSearch): SQL with placeholders, its arguments, and the
    value-index SELECTs that can drive its count."""
    where = ["r.org = ?", "r.sandbox = ?", "r.deleted = 0"]
    args: list[Any] = [org, sandbox]
    for column in FILTER_COLUMNS:
        if filters.get(column):
            where.append(f"r.{column} = ?")
            args.append(filters[column])
    base, base_args = " AND ".join(where), list(args)
    if search is not None:
        where.append(f"({search.sql})")
        args.extend(search.args)
    clause = " AND ".join(where)
    total, driver_sizes = _count(conn, clause, args, base, base_args, search)
    direction = "DESC" if descending else "ASC"
    if sort_kind is None and sort_key == "created":
        # The index (org, sandbox, deleted, created) walked in order: no sort step.
        rows = conn.execute(f"SELECT {_ROW} FROM runIndex r WHERE {clause} ORDER BY r.created "
                            f"{direction}, r.rowid {direction} LIMIT ? OFFSET ?",
                            (*args, limit, start)).fetchall()
    elif sort_kind is None:
        rows = conn.execute(f"SELECT {_ROW} FROM runIndex r WHERE {clause} ORDER BY "
                            f"(r.{sort_key} IS NULL), r.{sort_key} {direction}, r.created DESC, "
                            f"r.rowid DESC LIMIT ? OFFSET ?", (*args, limit, start)).fetchall()
    else:
        # Walk the value index (kind, key, val, run) in order and probe each run's index row:
        # page 1 of 10,000 runs reads about one page of entries, not every run. A search's value
        # terms probe each run walked too when the page is expected within a short walk.
        if getattr(search, "probe", ("",))[0] and _short_walk(conn, base, base_args, total,
                                                              driver_sizes, start + limit):
            clause, args = f"{base} AND ({search.probe[0]})", [*base_args, *search.probe[1]]
        valued = (f"FROM runValues v INDEXED BY runValues_sort CROSS JOIN runIndex r ON r.id = v.run"
                  f" WHERE v.kind = ? AND v.key = ? AND v.val IS NOT NULL AND {clause}")
        by_value = f"ORDER BY v.val {direction}, v.run {direction}"
        value_args = (sort_kind, sort_key, *args)
        parts = [(f"{valued} AND r.state IS 'DONE'", by_value, value_args)] if sort_kind in (
            "metric", "best") else []
        parts.append((f"{valued} AND r.state IS NOT 'DONE'" if parts else valued, by_value,
                      value_args))
        parts.append((f"FROM runIndex r WHERE {clause} AND NOT EXISTS (SELECT 1 FROM runValues v "
                      "WHERE v.run = r.id AND v.kind = ? AND v.key = ? AND v.val IS NOT NULL)",
                      "ORDER BY r.created DESC, r.rowid DESC", (*args, sort_kind, sort_key)))
        rows = _page_of_parts(conn, parts, start, limit)
    return [dict(zip(_ROW_NAMES, row)) for row in rows], total


def _count(conn: sqlite3.Connection, clause: str, args: list[Any], base: str,
           base_args: list[Any], search: Any) -> tuple[int, list[int]]:
    """How many runs match, and the sizes of the sets of runs the search's AND terms on values
    keep: with such terms, counted from the smallest set (a count over the value index first),
    each run of it probed in runIndex by id."""
    if search is None or not search.drivers:
        return conn.execute(f"SELECT count(*) FROM runIndex r WHERE {clause}", args).fetchone()[0], []
    sized = [(conn.execute(f"SELECT count(*) FROM ({select})", select_args).fetchone()[0],
              select, select_args, rest, rest_args)
             for select, select_args, rest, rest_args in search.drivers]
    _, select, select_args, rest, rest_args = min(sized, key=lambda s: s[0])
    return conn.execute(f"SELECT count(*) FROM ({select}) d CROSS JOIN runIndex r ON r.id = d.run "
                        f"WHERE {base} AND ({rest})", (*select_args, *base_args, *rest_args)
                        ).fetchone()[0], [s[0] for s in sized]


def _short_walk(conn: sqlite3.Connection, base: str, base_args: list[Any], total: int,
                driver_sizes: list[int], rows: int) -> bool:
    """Whether a sort index's walk is expected to find `rows` matches in fewer probes (a few
    per run walked) than the search's IN lists would insert (every run each value term keeps):
    matches spread evenly, a walk passes runs / total runs per match. At 10,000 runs, a search
    keeping a quarter of them: a page within ~200 runs instead of two 5,000-run lists."""
    if not driver_sizes or not total:
        return False
    runs = conn.execute(f"SELECT count(*) FROM runIndex r WHERE {base}", base_args).fetchone()[0]
    return rows * runs / total * len(driver_sizes) < sum(driver_sizes)


def _page_of_parts(conn: sqlite3.Connection, parts: list[tuple[str, str, tuple[Any, ...]]],
                   start: int, limit: int) -> list[tuple[Any, ...]]:
    """Rows `start` to `start + limit` of the parts' rows one after the other, each part a
    (FROM ... WHERE ..., ORDER BY ..., args) query; a part is counted only when the page starts
    past it."""
    rows: list[tuple[Any, ...]] = []
    skip = start
    for source, order, part_args in parts:
        if len(rows) >= limit:
            break
        got = conn.execute(f"SELECT {_ROW} {source} {order} LIMIT ? OFFSET ?",
                           (*part_args, limit - len(rows), skip)).fetchall()
        if rows or got:
            skip = 0
        else:   # the page starts past this part
            skip = max(0, skip - conn.execute(f"SELECT count(*) {source}", part_args).fetchone()[0])
        rows += got
    return rows


def values_of(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{run: {kind: {key: val}}} for the runs of a page."""
    out: dict[str, dict[str, dict[str, Any]]] = {r: {k: {} for k in VALUE_KINDS} for r in run_ids}
    if not run_ids:
        return out
    marks = ", ".join("?" for _ in run_ids)
    for run, kind, key, val in conn.execute(
            f"SELECT run, kind, key, val FROM runValues WHERE run IN ({marks})", tuple(run_ids)):
        out[run].setdefault(kind, {})[key] = val
    return out


def names_of(conn: sqlite3.Connection, table: str, ids: Iterable[str]) -> dict[str, str]:
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    return dict(conn.execute(f'SELECT id, name FROM "{table}" WHERE id IN ({marks})', ids).fetchall())


def value_keys(conn: sqlite3.Connection, org: str, sandbox: str) -> dict[str, list[str]]:
    """The param and metric keys some live run of the sandbox has: a loose index scan over
    (kind, key), then one existence probe per key."""
    keys: list[tuple[str, str]] = []
    row = conn.execute("SELECT kind, key FROM runValues ORDER BY kind, key LIMIT 1").fetchone()
    while row is not None and len(keys) < 2000:
        keys.append(row)
        row = conn.execute("SELECT kind, key FROM runValues WHERE (kind, key) > (?, ?) "
                           "ORDER BY kind, key LIMIT 1", row).fetchone()
    out: dict[str, list[str]] = {"param": [], "metric": [], "system": []}
    for kind, key in keys:
        if kind not in out:
            continue
        hit = conn.execute(
            "SELECT 1 FROM runValues v JOIN runIndex r ON r.id = v.run WHERE v.kind = ? AND v.key = ?"
            " AND r.org = ? AND r.sandbox = ? AND r.deleted = 0 LIMIT 1",
            (kind, key, org, sandbox)).fetchone()
        if hit:
            out[kind].append(key)
    return out


def scopes_in_use(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every (org, sandbox) that holds a live Engine, MLInstance, Experiment or run, with how many
    runs and objects: a loose walk of each table's (org, sandbox, ...) index."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for table in ("engines", "mlInstances", "experiments", "runIndex"):
        for org, sandbox, n in conn.execute(
                f'SELECT org, sandbox, count(*) FROM "{table}" WHERE deleted = 0 '
                "GROUP BY org, sandbox"):
            entry = found.setdefault((org, sandbox), {"org": org, "sandbox": sandbox,
                                                      "runs": 0, "objects": 0})
            entry["objects"] += n
            if table == "runIndex":
                entry["runs"] = n
    return sorted(found.values(), key=lambda e: (-e["runs"], -e["objects"], e["org"], e["sandbox"]))


def scope_choices(conn: sqlite3.Connection, org: str, sandbox: str) -> dict[str, list[dict[str, str]]]:
    """The Engines, MLInstances and Experiments of a sandbox, for the table's filters."""
    out = {}
    for label, table in (("engines", "engines"), ("mlInstances", "mlInstances"),
                         ("experiments", "experiments")):
        out[label] = [{"id": i, "name": n} for i, n in conn.execute(
            f'SELECT id, name FROM "{table}" WHERE org = ? AND sandbox = ? AND deleted = 0 '
            "ORDER BY created DESC LIMIT 500", (org, sandbox))]
    return out


def owners_of(conn: sqlite3.Connection, run_id: str) -> tuple[Optional[str], Optional[str]]:
    """(Engine id, MLInstance id) of a run, from its index row."""
    return conn.execute("SELECT engineId, mlInstanceId FROM runIndex WHERE id = ?",
                        (run_id,)).fetchone() or (None, None)


# --- what the registry hands out ---------------------------------------------------------------

class RunIndex:
    """The runs view's tables of one SQLite store (`SQLiteStore.run_index()`): the runs table,
    per-run values and metric series. `conn` gives this thread's connection of the store."""

    def __init__(self, conn: Callable[[], sqlite3.Connection],
                 transaction: Callable[[], AbstractContextManager[None]]) -> None:
        self._conn = conn
        self._transaction = transaction

    @staticmethod
    def filter_columns() -> tuple[str, ...]:
        return tuple(FILTER_COLUMNS)

    def add_points(self, run_id: str, read: Callable[[int], tuple[list[dict[str, Any]], int]],
                   source: str = "") -> int:
        """Appends a run's new metric points: `read(offset)` gives the points after the offset
        already read and the new offset; `source` names the file when it is not metrics.jsonl
        ("system"). One transaction, safe from any process."""
        key = _offset_key(run_id, source)
        with self._transaction():
            conn = self._conn()
            offset = read_offset(conn, key)
            points, new_offset = read(offset)
            if new_offset != offset:
                add_points(conn, run_id, points, new_offset, key)
        return len(points)

    def series(self, run_ids: list[str]) -> dict[str, Any]:
        return series(self._conn(), run_ids)

    def table_page(self, scope: Scope, filters: dict[str, str], kind: Optional[str], key: str,
                   descending: bool, start: int, limit: int,
                   search: Any = None) -> tuple[list[dict[str, Any]], int]:
        return table_page(self._conn(), scope.org, scope.sandbox, filters, kind, key, descending,
                          start, limit, search)

    def values_of(self, run_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        return values_of(self._conn(), run_ids)

    def names_of(self, table: str, ids: Iterable[Optional[str]]) -> dict[str, str]:
        return names_of(self._conn(), table, ids)

    def owners_of(self, run_id: str) -> tuple[Optional[str], Optional[str]]:
        """(Engine id, MLInstance id) of a run, from its index row."""
        return owners_of(self._conn(), run_id)

    def scopes_in_use(self) -> list[dict[str, Any]]:
        return scopes_in_use(self._conn())

    def scope_choices(self, scope: Scope) -> dict[str, list[dict[str, str]]]:
        return scope_choices(self._conn(), scope.org, scope.sandbox)

    def value_keys(self, scope: Scope) -> dict[str, list[str]]:
        return value_keys(self._conn(), scope.org, scope.sandbox)
