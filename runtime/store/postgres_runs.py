"""PostgreSQL tables behind the runs view, as store/sqlite_runs.py's: an index row per run, its
sortable values, its metric series, kept by plpgsql triggers on "experimentRuns" and "runStatus".

- "runIndex": one row per run; `seq` is the insertion order that SQLite's rowid gives (ties).
- "runValues": (run, kind, key) -> val for `param`, `metric`, `best`, `system` and `tag`. `val` is
  JSONB: a number stays a number and compares as one, text as text (a boolean is 0/1 and an object
  its JSON text, as SQLite's json_each gives them). `textual` puts text after numbers, as SQLite
  orders mixed values; the index (kind, key, textual, val, run) is what the table sorts on.
- "runMetrics": the per-step series; "runMetricsRead" how far a run's metrics file was read.

The trigger on a run's insert also indexes the parameters, result, summary and tags its document
already has (a run copied from another store arrives whole), and reads its runStatus row if that
came first. `create_run_views` is a migration step: frozen once released.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterable, Optional, Sequence

from . import Scope
from .sqlite_runs import FILTER_COLUMNS, HIGHER_IS_BETTER, VALUE_KINDS, higher_is_better

_TEXT = 'TEXT COLLATE "C"'
_HIGHER = ", ".join(f"'{n}'" for n in HIGHER_IS_BETTER)

_FUNCTIONS = (
    # A JSON value as runValues keeps it: SQL NULL for null, 0/1 for a boolean, an object's text.
    """CREATE FUNCTION "runValueOf"(x jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(x) WHEN 'null' THEN NULL
        WHEN 'boolean' THEN to_jsonb(x::text::boolean::int)
        WHEN 'object' THEN to_jsonb(x::text) WHEN 'array' THEN to_jsonb(x::text) ELSE x END $$""",
    # Seconds between two timestamps of a status (as SQLite's julianday: NULL when either is not one).
    """CREATE FUNCTION "runSeconds"(started text, ended text) RETURNS double precision
    LANGUAGE plpgsql SET timezone = 'UTC' AS $$
    BEGIN
        IF started IS NULL OR ended IS NULL THEN RETURN NULL; END IF;
        RETURN extract(epoch FROM (ended::timestamptz - started::timestamptz));
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$""",
    # The better of two values of a metric: higher for accuracy-like names, else lower.
    f"""CREATE FUNCTION "runBest"(name text, old jsonb, new jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN old IS NULL THEN new WHEN new IS NULL THEN old
        WHEN lower(replace(replace(replace(name, '-', ''), '_', ''), ' ', '')) IN ({_HIGHER})
        THEN greatest(old, new) ELSE least(old, new) END $$""",
    # The values of one kind that a run document holds: `param` (resolved parameters), `system`
    # (the summary's numbers), `tag`, or `metric` (the result's; a name given twice keeps its last).
    """CREATE FUNCTION "runDocValues"(doc jsonb, kind text) RETURNS TABLE (key text, val jsonb)
    LANGUAGE sql IMMUTABLE AS $$
    SELECT j.key, "runValueOf"(j.value) FROM (SELECT CASE kind
        WHEN 'param' THEN doc #> '{runtime,resolved,values}' WHEN 'system' THEN doc #> '{result,system}'
        WHEN 'tag' THEN doc -> 'tags' END AS o) s,
        jsonb_each(CASE WHEN jsonb_typeof(s.o) = 'object' THEN s.o END) j
    WHERE kind <> 'system' OR jsonb_typeof(j.value) = 'number'
    UNION ALL
    SELECT * FROM (SELECT DISTINCT ON (m.value ->> 'name') m.value ->> 'name' AS name,
        "runValueOf"(m.value -> 'value') AS value
        FROM jsonb_array_elements(CASE WHEN kind = 'metric' AND jsonb_typeof(doc #> '{result,metrics}')
            = 'array' THEN doc #> '{result,metrics}' END) WITH ORDINALITY m(value, n)
        WHERE m.value ->> 'name' IS NOT NULL ORDER BY m.value ->> 'name', m.n DESC) last $$""",
    # Replace a run's values of one kind by its document's (params, summary, tags).
    """CREATE FUNCTION "runValuesReplace"(run_id text, doc jsonb, kind text) RETURNS void
    LANGUAGE sql AS $$
    DELETE FROM "runValues" WHERE run = run_id AND "runValues".kind = "runValuesReplace".kind;
    INSERT INTO "runValues" (run, kind, key, val)
        SELECT run_id, "runValuesReplace".kind, d.key, d.val FROM "runDocValues"(doc, kind) d $$""",
    # The result's metrics: the final value wins over the series' last; `best` keeps the better.
    """CREATE FUNCTION "runValuesResult"(run_id text, doc jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO "runValues" (run, kind, key, val)
        SELECT run_id, 'metric', d.key, d.val FROM "runDocValues"(doc, 'metric') d
        ON CONFLICT (run, kind, key) DO UPDATE SET val = excluded.val;
    INSERT INTO "runValues" (run, kind, key, val)
        SELECT run_id, 'best', d.key, d.val FROM "runDocValues"(doc, 'metric') d
        ON CONFLICT (run, kind, key) DO UPDATE
        SET val = "runBest"(excluded.key, "runValues".val, excluded.val) $$""",
    """CREATE FUNCTION "runIndexStatus"(run_id text, state text, doc jsonb) RETURNS void
    LANGUAGE sql AS $$
    UPDATE "runIndex" SET state = "runIndexStatus".state,
        started = doc #>> '{status,tasks,0,started}', ended = doc #>> '{status,tasks,0,ended}',
        duration_s = "runSeconds"(doc #>> '{status,tasks,0,started}', doc #>> '{status,tasks,0,ended}')
    WHERE id = run_id $$""",
    """CREATE FUNCTION "runIndexInsert"() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        d jsonb := new.doc::jsonb;
        s record;
    BEGIN
        INSERT INTO "runIndex" (id, org, sandbox, deleted, created, mode, "experimentId",
                                "mlInstanceId", "engineId")
        SELECT new.id, new.org, new.sandbox, new.deleted, new.created, new.mode, new."experimentId",
               e."mlInstanceId", m."engineId"
        FROM (SELECT 1) one LEFT JOIN "experiments" e ON e.id = new."experimentId"
        LEFT JOIN "mlInstances" m ON m.id = e."mlInstanceId"
        ON CONFLICT (id) DO UPDATE SET org = excluded.org, sandbox = excluded.sandbox,
            deleted = excluded.deleted, created = excluded.created, mode = excluded.mode,
            "experimentId" = excluded."experimentId", "mlInstanceId" = excluded."mlInstanceId",
            "engineId" = excluded."engineId";
        SELECT rs.state, rs.doc::jsonb AS doc INTO s FROM "runStatus" rs WHERE rs.id = new.id;
        IF FOUND THEN PERFORM "runIndexStatus"(new.id, s.state, s.doc); END IF;
        PERFORM "runValuesReplace"(new.id, d, 'tag');
        IF d #> '{runtime,resolved,values}' IS NOT NULL THEN
            PERFORM "runValuesReplace"(new.id, d, 'param'); END IF;
        IF d #> '{result,system}' IS NOT NULL THEN PERFORM "runValuesReplace"(new.id, d, 'system'); END IF;
        IF d #> '{result,metrics}' IS NOT NULL THEN PERFORM "runValuesResult"(new.id, d); END IF;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION "runIndexUpdate"() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        d jsonb := new.doc::jsonb;
        o jsonb := old.doc::jsonb;
    BEGIN
        IF new.deleted IS DISTINCT FROM old.deleted THEN
            UPDATE "runIndex" SET deleted = new.deleted WHERE id = new.id; END IF;
        IF d #> '{runtime,resolved,values}' IS DISTINCT FROM o #> '{runtime,resolved,values}' THEN
            PERFORM "runValuesReplace"(new.id, d, 'param'); END IF;
        IF d #> '{result,metrics}' IS DISTINCT FROM o #> '{result,metrics}' THEN
            PERFORM "runValuesResult"(new.id, d); END IF;
        IF d #> '{result,system}' IS DISTINCT FROM o #> '{result,system}' THEN
            PERFORM "runValuesReplace"(new.id, d, 'system'); END IF;
        IF d -> 'tags' IS DISTINCT FROM o -> 'tags' THEN
            PERFORM "runValuesReplace"(new.id, d, 'tag'); END IF;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION "runIndexStatusTrigger"() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM "runIndexStatus"(new.id, new.state, new.doc::jsonb);
        RETURN NULL;
    END $$""",
)


def create_run_views(cur: Any) -> None:
    """Migration step: the runs view's tables, indexes and triggers, and the index of the runs
    already recorded. `cur` is a cursor inside the migration's transaction."""
    cur.execute(
        f'CREATE TABLE "runIndex" (seq BIGINT GENERATED BY DEFAULT AS IDENTITY, id {_TEXT} PRIMARY KEY,'
        f' org {_TEXT} NOT NULL, sandbox {_TEXT} NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,'
        f' created {_TEXT} NOT NULL, mode {_TEXT}, "experimentId" {_TEXT}, "mlInstanceId" {_TEXT},'
        f' "engineId" {_TEXT}, state {_TEXT}, started {_TEXT}, ended {_TEXT},'
        ' duration_s DOUBLE PRECISION)')
    for name, cols in (("created", "deleted, created, seq"), ("state", "deleted, state, created"),
                       ("mode", "deleted, mode, created"), ("duration", "deleted, duration_s"),
                       ("engine", '"engineId", deleted, created'),
                       ("instance", '"mlInstanceId", deleted, created'),
                       ("experiment", '"experimentId", deleted, created')):
        cur.execute(f'CREATE INDEX "runIndex_{name}" ON "runIndex" (org, sandbox, {cols})')
    cur.execute(
        f'CREATE TABLE "runValues" (run {_TEXT} NOT NULL, kind {_TEXT} NOT NULL, key {_TEXT} NOT NULL,'
        " val JSONB, textual BOOLEAN GENERATED ALWAYS AS (jsonb_typeof(val) = 'string') STORED,"
        " PRIMARY KEY (run, kind, key))")
    cur.execute('CREATE INDEX "runValues_sort" ON "runValues" (kind, key, textual, val, run)')
    # Statistics of (kind, key, val) together: how often a parameter has a value is a fact of its
    # key (batch_size = 128: a third of the runs), not of every value of every key (0.3%); without
    # them the planner probes thousands of runs one by one where a hash join takes a tenth.
    cur.execute('CREATE STATISTICS "runValues_values" (mcv, dependencies) ON kind, key, val'
                ' FROM "runValues"')
    cur.execute(
        f'CREATE TABLE "runMetrics" (run {_TEXT} NOT NULL, name {_TEXT} NOT NULL, step BIGINT NOT NULL,'
        " value DOUBLE PRECISION, ts DOUBLE PRECISION, PRIMARY KEY (run, name, step))")
    cur.execute(f'CREATE TABLE "runMetricsRead" (run {_TEXT} PRIMARY KEY, "offset" BIGINT NOT NULL)')
    for statement in _FUNCTIONS:
        cur.execute(statement)
    cur.execute('CREATE TRIGGER "runIndex_insert" AFTER INSERT ON "experimentRuns" '
                'FOR EACH ROW EXECUTE FUNCTION "runIndexInsert"()')
    cur.execute('CREATE TRIGGER "runIndex_update" AFTER UPDATE OF doc, deleted ON "experimentRuns" '
                'FOR EACH ROW EXECUTE FUNCTION "runIndexUpdate"()')
    cur.execute('CREATE TRIGGER "runIndex_status" AFTER INSERT OR UPDATE ON "runStatus" '
                'FOR EACH ROW EXECUTE FUNCTION "runIndexStatusTrigger"()')
    # Runs recorded before this migration: the insert trigger's work, once for each.
    cur.execute(
        'INSERT INTO "runIndex" (id, org, sandbox, deleted, created, mode, "experimentId",'
        ' "mlInstanceId", "engineId") SELECT r.id, r.org, r.sandbox, r.deleted, r.created, r.mode,'
        ' r."experimentId", e."mlInstanceId", m."engineId" FROM "experimentRuns" r'
        ' LEFT JOIN "experiments" e ON e.id = r."experimentId"'
        ' LEFT JOIN "mlInstances" m ON m.id = e."mlInstanceId" ORDER BY r.created')
    cur.execute('SELECT "runIndexStatus"(id, state, doc::jsonb) FROM "runStatus"')
    cur.execute('SELECT "runValuesReplace"(id, doc::jsonb, k) FROM "experimentRuns",'
                " unnest(ARRAY['tag', 'param', 'system']) k")
    cur.execute('SELECT "runValuesResult"(id, doc::jsonb) FROM "experimentRuns"')


# --- what the registry hands out ---------------------------------------------------------------

_ROW = ('r.id, r.created, r.mode, r.state, r.started, r.ended, r.duration_s, r."experimentId",'
        ' r."mlInstanceId", r."engineId"')
_ROW_NAMES = ("id", "created", "mode", "state", "started", "ended", "duration_s", "experimentId",
              "mlInstanceId", "engineId")
_TABLES = ("engines", "mlInstances", "experiments")


class PgRunIndex:
    """The runs view's tables of one PostgreSQL store (`PostgresStore.run_index()`), with the
    methods and answers of store.sqlite_runs.RunIndex. Reads take `store.connection()`; writes
    run in `store.transaction()`."""

    def __init__(self, store: Any) -> None:
        self._store = store

    @staticmethod
    def filter_columns() -> tuple[str, ...]:
        return tuple(FILTER_COLUMNS)

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._store.connection() as conn:
            return conn.execute(sql, args).fetchall()

    # -- the series ----------------------------------------------------------------------------

    def add_points(self, run_id: str, read: Callable[[int], tuple[list[dict[str, Any]], int]],
                   source: str = "") -> int:
        """Appends a run's new metric points: `read(offset)` gives the points after the offset
        already read and the new offset; `source` names the file when it is not metrics.jsonl
        ("system"). One transaction, safe from any process."""
        key = f"{run_id}:{source}" if source else run_id
        with self._store.transaction(), self._store.connection() as conn:
            row = conn.execute('SELECT "offset" FROM "runMetricsRead" WHERE run = %s', (key,)).fetchone()
            offset = row[0] if row else 0
            points, new_offset = read(offset)
            if new_offset != offset:
                _add_points(conn, run_id, points, new_offset, key)
        return len(points)

    def series(self, run_ids: list[str]) -> dict[str, Any]:
        """{run: {name: {"steps": [...], "values": [...]}}} in step order."""
        out: dict[str, dict[str, dict[str, list]]] = {r: {} for r in run_ids}
        if not run_ids:
            return out
        for run, name, step, value in self._all(
                'SELECT run, name, step, value FROM "runMetrics" WHERE run = ANY(%s) '
                "ORDER BY run, name, step", (list(run_ids),)):
            entry = out[run].setdefault(name, {"steps": [], "values": []})
            entry["steps"].append(step)
            entry["values"].append(value)
        return out

    # -- the runs table ------------------------------------------------------------------------

    def table_page(self, scope: Scope, filters: dict[str, str], kind: Optional[str], key: str,
                   descending: bool, start: int, limit: int,
                   search: Any = None) -> tuple[list[dict[str, Any]], int]:
        """As RunIndex.table_page: runs without the sort value come last, newest first; in a
        metric sort, runs that did not end DONE come after the DONE ones. `search` is a compiled
        search (runtime.run_search); one compiled for SQLite is compiled again for PostgreSQL."""
        where = ["r.org = %s", "r.sandbox = %s", "r.deleted = 0"]
        args: list[Any] = [scope.org, scope.sandbox]
        for column in FILTER_COLUMNS:
            if filters.get(column):
                where.append(f'r."{column}" = %s')
                args.append(filters[column])
        if search is not None:
            if search.dialect != "postgres":
                search = _compiled(search.query)
            where.append(f"({search.sql})")
            args.extend(search.args)
        if any(isinstance(a, str) and "\x00" in a for a in args):
            from ..errors import BadRequest

            raise BadRequest("A filter or search value holds a NUL byte (U+0000), which this "
                             "registry's PostgreSQL store cannot compare: remove it")
        clause = " AND ".join(where)
        direction = "DESC" if descending else "ASC"
        with self._store.connection() as conn:
            total, small = _matches(conn, clause, args, narrowed=len(where) > 3)
            if small is not None:   # a few runs match: sort those, whatever the sort
                clause, args = "r.id = ANY(%s)", [small]
            if kind is None and key == "created":
                rows = conn.execute(
                    f'SELECT {_ROW} FROM "runIndex" r WHERE {clause} ORDER BY r.created {direction},'
                    f" r.seq {direction} LIMIT %s OFFSET %s", (*args, limit, start)).fetchall()
            elif kind is None:
                column = f'r."{key}"'
                rows = conn.execute(
                    f'SELECT {_ROW} FROM "runIndex" r WHERE {clause} ORDER BY ({column} IS NULL),'
                    f" {column} {direction}, r.created DESC, r.seq DESC LIMIT %s OFFSET %s",
                    (*args, limit, start)).fetchall()
            else:
                rows = _page_of_parts(conn, _value_parts(kind, key, direction, clause, args,
                                                         walk=small is None), start, limit)
        return [dict(zip(_ROW_NAMES, row)) for row in rows], total

    def values_of(self, run_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """{run: {kind: {key: val}}} for the runs of a page."""
        out: dict[str, dict[str, dict[str, Any]]] = {r: {k: {} for k in VALUE_KINDS} for r in run_ids}
        if not run_ids:
            return out
        # The values as text, parsed in one JSON array: a page of 50 runs has about 800, and
        # psycopg's JSONB loader parses each on its own (20 ms a page; json_agg on the server, 18).
        rows = self._all('SELECT run, kind, key, val::text FROM "runValues" WHERE run = ANY(%s)',
                         (list(run_ids),))
        values = json.loads("[" + ",".join(r[3] or "null" for r in rows) + "]")
        for (run, kind, key, _), val in zip(rows, values):
            out[run].setdefault(kind, {})[key] = val
        return out

    def names_of(self, table: str, ids: Iterable[Optional[str]]) -> dict[str, str]:
        wanted = sorted({i for i in ids if i})
        if not wanted:
            return {}
        if table not in _TABLES:
            raise ValueError(f"names_of reads {', '.join(_TABLES)}, not {table!r}")
        return dict(self._all(f'SELECT id, name FROM "{table}" WHERE id = ANY(%s)', (wanted,)))

    def owners_of(self, run_id: str) -> tuple[Optional[str], Optional[str]]:
        """(Engine id, MLInstance id) of a run, from its index row."""
        rows = self._all('SELECT "engineId", "mlInstanceId" FROM "runIndex" WHERE id = %s', (run_id,))
        return tuple(rows[0]) if rows else (None, None)

    def scopes_in_use(self) -> list[dict[str, Any]]:
        """Every (org, sandbox) that holds a live Engine, MLInstance, Experiment or run, with how
        many runs and objects."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for table in (*_TABLES, "runIndex"):
            for org, sandbox, n in self._all(f'SELECT org, sandbox, count(*) FROM "{table}" '
                                             "WHERE deleted = 0 GROUP BY org, sandbox"):
                entry = found.setdefault((org, sandbox), {"org": org, "sandbox": sandbox,
                                                          "runs": 0, "objects": 0})
                entry["objects"] += n
                if table == "runIndex":
                    entry["runs"] = n
        return sorted(found.values(), key=lambda e: (-e["runs"], -e["objects"], e["org"], e["sandbox"]))

    def scope_choices(self, scope: Scope) -> dict[str, list[dict[str, str]]]:
        """The Engines, MLInstances and Experiments of a sandbox, for the table's filters."""
        out = {}
        for table in _TABLES:
            out[table] = [{"id": i, "name": n} for i, n in self._all(
                f'SELECT id, name FROM "{table}" WHERE org = %s AND sandbox = %s AND deleted = 0 '
                "ORDER BY created DESC, seq DESC LIMIT 500", (scope.org, scope.sandbox))]
        return out

    def value_keys(self, scope: Scope) -> dict[str, list[str]]:
        """The param, metric and system keys some live run of the sandbox has: a loose index
        scan over (kind, key) and one existence probe per key, in one statement."""
        out: dict[str, list[str]] = {"param": [], "metric": [], "system": []}
        for kind, key in self._all(
                'WITH RECURSIVE k AS ((SELECT kind, key FROM "runValues" ORDER BY kind, key LIMIT 1)'
                ' UNION ALL SELECT n.kind, n.key FROM k, LATERAL (SELECT kind, key FROM "runValues"'
                " WHERE (kind, key) > (k.kind, k.key) ORDER BY kind, key LIMIT 1) n)"
                " SELECT k.kind, k.key FROM (SELECT * FROM k LIMIT 2000) k"
                " WHERE k.kind IN ('param', 'metric', 'system') AND EXISTS (SELECT 1 FROM"
                ' "runValues" v JOIN "runIndex" r ON r.id = v.run WHERE v.kind = k.kind AND'
                " v.key = k.key AND r.org = %s AND r.sandbox = %s AND r.deleted = 0)"
                " ORDER BY k.kind, k.key", (scope.org, scope.sandbox)):
            out[kind].append(key)
        return out


@functools.lru_cache(maxsize=256)
def _compiled(query: str) -> Any:
    """A search compiled for PostgreSQL (the runs view compiles for SQLite; a page refresh or
    the next page asks for the same query again). Read only: its SQL and arguments are shared."""
    from ..run_search import POSTGRES, compile_search

    return compile_search(query, POSTGRES)


def _add_points(conn: Any, run_id: str, points: Sequence[dict[str, Any]], offset: int,
                key: str) -> None:
    """Inside the caller's transaction: the points, the read offset, and each series' last and
    best value (a step logged twice keeps its latest value)."""
    latest = {(p["name"], p["step"]): p for p in points}   # one row per step, as INSERT OR REPLACE
    with conn.cursor() as cur:
        cur.executemany(
            'INSERT INTO "runMetrics" (run, name, step, value, ts) VALUES (%s, %s, %s, %s, %s) '
            "ON CONFLICT (run, name, step) DO UPDATE SET value = excluded.value, ts = excluded.ts",
            [(run_id, p["name"], p["step"], p["value"], p["ts"]) for p in latest.values()])
    conn.execute('INSERT INTO "runMetricsRead" (run, "offset") VALUES (%s, %s) '
                 'ON CONFLICT (run) DO UPDATE SET "offset" = excluded."offset"', (key, offset))
    # System metrics (system/...) are summarised by the worker, not sorted by their last step.
    names = sorted({p["name"] for p in points if not p["name"].startswith("system/")})
    for name in names:
        agg = "max" if higher_is_better(name) else "min"
        last, best = conn.execute(
            'SELECT (SELECT value FROM "runMetrics" WHERE run = %s AND name = %s ORDER BY step DESC'
            f' LIMIT 1), (SELECT {agg}(value) FROM "runMetrics" WHERE run = %s AND name = %s)',
            (run_id, name, run_id, name)).fetchone()
        # a float stays a float (1.0, not 1), as SQLite's REAL gives it back
        conn.execute('INSERT INTO "runValues" (run, kind, key, val) VALUES (%s, \'metric\', %s, %s::jsonb)'
                     " ON CONFLICT (run, kind, key) DO UPDATE SET val = excluded.val",
                     (run_id, name, _number(last)))
        conn.execute('INSERT INTO "runValues" (run, kind, key, val) VALUES (%s, \'best\', %s, %s::jsonb)'
                     ' ON CONFLICT (run, kind, key) DO UPDATE SET val = "runBest"(excluded.key,'
                     ' "runValues".val, excluded.val)', (run_id, name, _number(best)))


def _number(value: Optional[float]) -> Optional[str]:
    return None if value is None or value != value else json.dumps(float(value))


# Up to this many matching runs, a page is sorted from their ids; past it, the value index is
# walked in order (each entry's run probed) until the page is full: with at least SMALL matches
# among N runs, page 1 walks about 50 * N / SMALL entries.
SMALL = 1000


def _matches(conn: Any, clause: str, args: list[Any], narrowed: bool) -> tuple[int, Optional[list[str]]]:
    """How many runs match, and their ids when a filter or a search leaves at most SMALL."""
    total = conn.execute(f'SELECT count(*) FROM "runIndex" r WHERE {clause}', args).fetchone()[0]
    if not narrowed or total > SMALL:
        return total, None
    return total, [r[0] for r in conn.execute(f'SELECT r.id FROM "runIndex" r WHERE {clause}', args)]


def _value_parts(kind: str, key: str, direction: str, clause: str, args: list[Any],
                 walk: bool) -> list[tuple[str, str, tuple[Any, ...], str]]:
    """The value sort's parts: (FROM ..., ORDER BY ..., args, FROM ... to count it). DONE runs
    first in a metric sort, then the others with the value, then the runs without it (newest
    first). `walk`: read the value index in order and probe each entry's run in a subquery of
    its own (the planner cannot turn it into a hash join and a sort of every match, which its
    estimates of JSONB ranges per key would often choose); else join and sort (few matches)."""
    in_order = f"textual {direction}, val {direction}, run {direction}"
    by_value = f"ORDER BY v.textual {direction}, v.val {direction}, v.run {direction}"
    states = ([" AND r.state IS NOT DISTINCT FROM 'DONE'", " AND r.state IS DISTINCT FROM 'DONE'"]
              if kind in ("metric", "best") else [""])
    parts = []
    for state in states:
        joined = ('FROM "runValues" v JOIN "runIndex" r ON r.id = v.run WHERE v.kind = %s'
                  f" AND v.key = %s AND v.val IS NOT NULL AND {clause}{state}")
        source = joined
        if walk:
            source = ('FROM (SELECT run, textual, val FROM "runValues" WHERE kind = %s AND key = %s'
                      f" AND val IS NOT NULL ORDER BY {in_order}) v CROSS JOIN LATERAL"
                      f' (SELECT * FROM "runIndex" r WHERE r.id = v.run AND {clause}{state} OFFSET 0) r')
        parts.append((source, by_value, (kind, key, *args), joined))
    missing = (f'FROM "runIndex" r WHERE {clause} AND NOT EXISTS (SELECT 1 FROM "runValues" v '
               "WHERE v.run = r.id AND v.kind = %s AND v.key = %s AND v.val IS NOT NULL)")
    parts.append((missing, "ORDER BY r.created DESC, r.seq DESC", (*args, kind, key), missing))
    return parts


def _page_of_parts(conn: Any, parts: list[tuple[str, str, tuple[Any, ...], str]], start: int,
                   limit: int) -> list[tuple[Any, ...]]:
    """Rows `start` to `start + limit` of the parts' rows one after the other (as
    sqlite_runs._page_of_parts); a part is counted only when the page starts past it."""
    rows: list[tuple[Any, ...]] = []
    skip = start
    for source, order, part_args, counted in parts:
        if len(rows) >= limit:
            break
        got = conn.execute(f"SELECT {_ROW} {source} {order} LIMIT %s OFFSET %s",
                           (*part_args, limit - len(rows), skip)).fetchall()
        if rows or got:
            skip = 0
        else:   # the page starts past this part
            skip = max(0, skip - conn.execute(f"SELECT count(*) {counted}", part_args).fetchone()[0])
        rows += got
    return rows
