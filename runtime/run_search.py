"""A search language over runs, MLflow's filter syntax, compiled to SQL over the runs index.

    metrics.MAPE < 0.05 and params.learning_rate = '0.1' and attributes.state = 'DONE'

Fields: `metrics.NAME` (the final value), `best.NAME` (the best step), `params.KEY`, `tags.KEY`,
`system.NAME` (the run's system metrics summary: peak_memory_mb, mean_cpu_percent, ...) and
`attributes.NAME` (state, mode, id, created, started, ended, duration, experimentId, mlInstanceId,
engineId). Operators: = != < <= > >=, LIKE (case-sensitive) and ILIKE, IN (...), NOT IN, NOT LIKE,
IS NULL, IS NOT NULL; `and`, `or` and parentheses. A key with other characters is quoted:
metrics."val loss" or metrics.`val loss`.

Parsed with lark (LALR); every value reaches the database as a parameter, never in the SQL text.
A malformed query raises SearchSyntaxError, a 400 whose body names the position, the token and what
was expected there. The SQL is SQLite's (store/sqlite_runs.py) or, with `dialect=POSTGRES`,
PostgreSQL's (store/postgres_runs.py: values as JSONB, `%s` placeholders for psycopg).
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from .errors import BadRequest

__all__ = ["CompiledSearch", "POSTGRES", "SQLITE", "SearchSyntaxError", "compile_filter",
           "compile_search", "parse_filter"]

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: atom (AND atom)*
?atom: comparison
     | LPAR or_expr RPAR -> group
comparison: FIELD OP value                              -> compare
          | FIELD NOT? LIKE STRING                      -> like
          | FIELD NOT? ILIKE STRING                     -> ilike
          | FIELD NOT? IN LPAR value (COMMA value)* RPAR -> in_list
          | FIELD IS NOT? NULL                          -> is_null
value: STRING | NUMBER

FIELD: /[A-Za-z_]+\.([A-Za-z0-9_][A-Za-z0-9_\-\/.:]*|`[^`]+`|"[^"]+")/
OP: "!=" | "<>" | "<=" | ">=" | "==" | "=" | "<" | ">"
STRING: /'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"/
NUMBER: /[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?/
AND.2: /and\b/i
OR.2: /or\b/i
NOT.2: /not\b/i
IN.2: /in\b/i
LIKE.2: /like\b/i
ILIKE.2: /ilike\b/i
IS.2: /is\b/i
NULL.2: /null\b/i
LPAR: "("
RPAR: ")"
COMMA: ","
%import common.WS
%ignore WS
"""

_READABLE = {
    "FIELD": "a field (metrics.NAME, params.KEY, tags.KEY, system.NAME or attributes.NAME)",
    "OP": "a comparison (=, !=, <, <=, >, >=)", "STRING": "a quoted string ('...')",
    "NUMBER": "a number", "AND": "AND", "OR": "OR", "NOT": "NOT", "IN": "IN", "LIKE": "LIKE",
    "ILIKE": "ILIKE", "IS": "IS", "NULL": "NULL", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "$END": "the end of the query"}

# prefix -> the runValues kind it reads (None: a column of runIndex)
_PREFIXES = {"metrics": "metric", "metric": "metric", "best": "best", "params": "param",
             "param": "param", "parameters": "param", "tags": "tag", "tag": "tag",
             "system": "system", "attributes": None, "attribute": None, "attr": None, "run": None}
_ATTRIBUTES = {"state": "state", "status": "state", "mode": "mode", "id": "id", "run_id": "id",
               "runid": "id", "created": "created", "start_time": "started", "started": "started",
               "ended": "ended", "end_time": "ended", "duration": "duration_s",
               "duration_s": "duration_s", "experimentid": "experimentId",
               "experiment_id": "experimentId", "mlinstanceid": "mlInstanceId",
               "mlinstance_id": "mlInstanceId", "engineid": "engineId", "engine_id": "engineId"}
_NUMERIC_KINDS = ("metric", "best", "system")
_SQL_OPS = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class SearchSyntaxError(BadRequest):
    """A malformed search: the problem body adds where (`position`, 1-based), the `token` found
    there and what was `expected`."""

    title = "Bad Request"
    slug = "malformed-filter"

    def __init__(self, query: str, position: int, token: str, expected: list[str], why: str) -> None:
        caret = f"\n  {query}\n  {' ' * (position - 1)}^"
        super().__init__(f"Malformed filter at position {position} ({token!r}): {why}{caret}",
                         position=position, token=token, expected=expected)

    def to_body(self) -> dict[str, Any]:
        return {**super().to_body(), **self.extra}


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    from lark import Lark

    return Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def parse_filter(query: str) -> Any:
    """The lark tree of `query`; SearchSyntaxError pointing at the first token that does not fit."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    try:
        return _parser().parse(query)
    except UnexpectedToken as exc:
        expected = sorted(_READABLE.get(t, t) for t in (exc.accepts or exc.expected))
        token = exc.token
        end = token.type == "$END"
        position = len(query) + 1 if end else (token.start_pos or 0) + 1
        shown = "the end of the query" if end else str(token)
        raise SearchSyntaxError(query, position, "" if end else str(token), expected,
                                f"found {shown}, expected {' or '.join(expected)}") from None
    except UnexpectedCharacters as exc:
        expected = sorted(_READABLE.get(t, t) for t in exc.allowed)
        char = query[exc.pos_in_stream] if exc.pos_in_stream < len(query) else ""
        raise SearchSyntaxError(query, exc.pos_in_stream + 1, char, expected,
                                f"unexpected {char!r}, expected {' or '.join(expected)}") from None
    except UnexpectedEOF as exc:
        expected = sorted(_READABLE.get(t, t) for t in exc.expected)
        raise SearchSyntaxError(query, len(query) + 1, "", expected,
                                f"the query ends early, expected {' or '.join(expected)}") from None


@dataclass(frozen=True)
class _Field:
    kind: Optional[str]   # runValues kind, or None for a runIndex column
    key: str              # the value's key, or the column
    position: int
    name: str             # as the query wrote it


class _SQLite:
    """What the compiler writes for SQLite's runIndex/runValues (values of any type in `val`)."""

    name = "sqlite"
    mark = "?"
    true = "1"
    values = "runValues"
    typed = " AND typeof(v.val) IN ('integer', 'real')"

    def column(self, key: str) -> str:
        return f"r.{key}"

    def value(self, as_text: bool, in_cast: bool) -> str:
        return "CAST(v.val AS TEXT)" if as_text and not in_cast else "v.val"

    def like(self, case_sensitive: bool, pattern: str) -> tuple[str, str]:
        if case_sensitive:   # LIKE's wildcards as GLOB's
            return "CAST({x} AS TEXT) GLOB ?", _like_to_glob(pattern)
        return "CAST({x} AS TEXT) LIKE ? ESCAPE '\\'", pattern

    def marks(self, cond: str, values: list[Any], as_json: bool,
              column: Optional[str]) -> tuple[str, list[Any]]:
        return cond, values


class _Postgres(_SQLite):
    """PostgreSQL's "runValues".val is JSONB: a number compares as a JSON number (typed by the
    generated column `textual`), anything else as its text; LIKE is case-sensitive there already."""

    name = "postgres"
    mark = "%s"
    true = "TRUE"
    values = '"runValues"'
    # a value is a number, text or NULL there (store/postgres_runs.py): not text is a number,
    # and the planner knows the column's statistics (jsonb_typeof(...) it guesses 3x worse)
    typed = " AND NOT v.textual"

    def column(self, key: str) -> str:
        return f'r."{key}"'

    def value(self, as_text: bool, in_cast: bool) -> str:
        return "(v.val #>> '{}')" if as_text or in_cast else "v.val"

    def like(self, case_sensitive: bool, pattern: str) -> tuple[str, str]:
        return f"CAST({{x}} AS TEXT) {'LIKE' if case_sensitive else 'ILIKE'} ? ESCAPE '\\'", pattern

    def marks(self, cond: str, values: list[Any], as_json: bool,
              column: Optional[str]) -> tuple[str, list[Any]]:
        if as_json:   # compared with the JSONB value: numbers as numbers, text as text
            return cond.replace("?", "%s::jsonb"), [_json_scalar(v) for v in values]
        if column is not None and column != "duration_s":   # runIndex's text columns
            values = [str(v) if isinstance(v, (int, float)) else v for v in values]
        return cond.replace("?", "%s"), values


def _json_scalar(value: Any) -> Optional[str]:
    """A value as JSONB text; infinity as a number past any double (JSON has none), NaN as NULL."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "1e400" if value > 0 else "-1e400"
    return json.dumps(value)


SQLITE = _SQLite()
POSTGRES = _Postgres()


def compile_filter(query: str, dialect: _SQLite = SQLITE) -> tuple[str, list[Any]]:
    """SQL over the runs index row `r` (store/sqlite_runs.py's runIndex) and its arguments."""
    search = compile_search(query, dialect)
    return search.sql, search.args


@dataclass(frozen=True)
class CompiledSearch:
    """A search as SQL over `r` (`sql`, `args`), and the ways to drive it from the value index:
    for each top-level AND term on a value, the SELECT of the runs that term keeps and the
    other terms' SQL. Counting from the smallest such set probes a few hundred index rows
    instead of testing every run of the sandbox."""

    sql: str
    args: list[Any]
    drivers: tuple[tuple[str, tuple[Any, ...], str, tuple[Any, ...]], ...] = ()
    query: str = ""          # as the user wrote it
    dialect: str = "sqlite"  # whose SQL this is (SQLITE.name or POSTGRES.name)
    # The whole search with each value term as a probe of one run's values (EXISTS): for a walk
    # of a sort index that finds its page within a few hundred runs, instead of `sql`'s IN lists
    # (each a set of every run its term keeps, built before the first row).
    probe: tuple[str, tuple[Any, ...]] = ("", ())


def compile_search(query: str, dialect: _SQLite = SQLITE) -> CompiledSearch:
    if not query.strip():
        return CompiledSearch(dialect.true, [], query=query, dialect=dialect.name)
    tree = parse_filter(query)
    terms = ([c for c in tree.children if not _is_token(c, "AND")]
             if getattr(tree, "data", None) == "and_expr" else [tree])
    compiled, probes = [], []
    for term in terms:   # each term alone: its SQL, its arguments, its driving SELECT if any
        compiler = _Compiler(query, dialect=dialect)
        sql = compiler.node(term)
        single = getattr(term, "data", None) in ("compare", "like", "ilike", "in_list", "is_null")
        compiled.append((sql, tuple(compiler.args), compiler.driver if single else None))
        # the same term as a probe of one run's values (for the runs a driver hands over)
        prober = _Compiler(query, correlated=True, dialect=dialect)
        probes.append((prober.node(term), tuple(prober.args), None))
    sql = " AND ".join(f"({s})" for s, _, _ in compiled) if len(compiled) > 1 else compiled[0][0]
    args = [a for _, term_args, _ in compiled for a in term_args]
    drivers = []
    for i, (_, _, driver) in enumerate(compiled):
        if driver is None:
            continue
        rest = [c for j, c in enumerate(probes) if j != i]
        drivers.append((driver[0], tuple(driver[1]),
                        " AND ".join(f"({s})" for s, _, _ in rest) or dialect.true,
                        tuple(a for _, term_args, _ in rest for a in term_args)))
    probe = (" AND ".join(f"({s})" for s, _, _ in probes),
             tuple(a for _, term_args, _ in probes for a in term_args))
    return CompiledSearch(sql, args, tuple(drivers), query=query, dialect=dialect.name, probe=probe)


class _Compiler:
    def __init__(self, query: str, correlated: bool = False, dialect: _SQLite = SQLITE) -> None:
        self.query = query
        self.dialect = dialect
        self.correlated = correlated   # EXISTS per run instead of one IN list
        self.args: list[Any] = []
        # A lone term on a value: (SELECT of the runs it keeps, its arguments)
        self.driver: Optional[tuple[str, list[Any]]] = None

    def fail(self, position: int, token: str, expected: list[str], why: str) -> SearchSyntaxError:
        return SearchSyntaxError(self.query, position, token, expected, why)

    def node(self, tree: Any) -> str:
        kind = tree.data
        if kind in ("or_expr", "and_expr"):
            joiner = " OR " if kind == "or_expr" else " AND "
            return "(" + joiner.join(self.node(c) for c in tree.children
                                     if not _is_token(c, "AND", "OR")) + ")"
        if kind == "group":
            return self.node(tree.children[1])
        tokens = [c for c in tree.children if _is_token(c)]
        field = self.field(tokens[0])
        negate = any(_is_token(t, "NOT") for t in tokens)
        if kind == "compare":
            op = str(tokens[1])
            value = self.value(tree.children[2], field)
            numeric = isinstance(value, (int, float))
            if _SQL_OPS[op] == "=" and field.kind is not None and not numeric and _number(value) is not None:
                # '0.1' finds a parameter given as 0.1 or as the text '0.1', through the index
                return self.where(field, "{x} IN (?, ?)", [_number(value), value], numeric=True,
                                  typed=False)
            return self.where(field, f"{{x}} {_SQL_OPS[op]} ?", [value], numeric=numeric)
        if kind in ("like", "ilike"):
            pattern = _unquote(str(tokens[-1]))
            if field.kind in _NUMERIC_KINDS or field.key == "duration_s":
                raise self.fail(tokens[0].start_pos + 1, str(tokens[0]), ["=", "<", ">", "IN"],
                                f"{str(tokens[0])} is a number: LIKE and ILIKE compare text")
            cond, arg = self.dialect.like(kind == "like", pattern)
            return self.where(field, f"NOT ({cond})" if negate else cond, [arg])
        if kind == "in_list":
            values = [self.value(c, field) for c in tree.children if not _is_token(c)]
            if field.kind is not None and all(_number(v) is not None for v in values):
                values = list(dict.fromkeys([*(_number(v) for v in values), *map(str, values)]))
                numeric = True   # numbers and their text, matched through the index
            else:
                numeric = all(isinstance(v, (int, float)) for v in values)
            marks = ", ".join("?" for _ in values)
            cond = f"{{x}} {'NOT IN' if negate else 'IN'} ({marks})"
            return self.where(field, cond, values, numeric=numeric, typed=False)
        if kind == "is_null":
            if field.kind is None:
                return f"{self.dialect.column(field.key)} IS {'NOT ' if negate else ''}NULL"
            present = self.where(field, "{x} IS NOT NULL", [])
            if not negate:
                self.driver = None
            return present if negate else f"NOT {present}"
        raise AssertionError(kind)   # the grammar has no other comparison

    def where(self, field: _Field, cond: str, values: list[Any], numeric: bool = False,
              typed: bool = True) -> str:
        d = self.dialect
        if field.kind is None:
            cond, values = d.marks(cond, values, False, field.key)
            self.args.extend(values)
            return cond.format(x=d.column(field.key))
        # An uncorrelated subquery over the value index (kind, key, val): evaluated once.
        typed_sql = d.typed if typed and numeric and field.kind not in _NUMERIC_KINDS else ""
        # parameters and tags compare as the text they were given
        x = d.value(not numeric and field.kind not in _NUMERIC_KINDS, "CAST" in cond)
        cond, values = d.marks(cond, values, x == "v.val", None)
        mark = d.mark
        select = (f"SELECT v.run FROM {d.values} v WHERE v.kind = {mark} AND v.key = {mark} AND "
                  f"{cond.format(x=x)}{typed_sql}")
        self.args.extend([field.kind, field.key, *values])
        self.driver = (select, [field.kind, field.key, *values])
        if self.correlated:
            return (f"EXISTS (SELECT 1 FROM {d.values} v WHERE v.run = r.id AND v.kind = {mark} AND "
                    f"v.key = {mark} AND {cond.format(x=x)}{typed_sql})")
        return f"r.id IN ({select})"

    def field(self, token: Any) -> _Field:
        text = str(token)
        prefix, _, key = text.partition(".")
        key = _unquote(key)
        position = token.start_pos + 1
        lowered = prefix.lower()
        if lowered not in _PREFIXES:
            raise self.fail(position, text, ["metrics.", "params.", "tags.", "system.", "attributes."],
                            f"unknown field prefix {prefix!r}: use metrics., best., params., tags., "
                            "system. or attributes.")
        kind = _PREFIXES[lowered]
        if kind is not None:
            return _Field(kind, key, position, text)
        column = _ATTRIBUTES.get(key.lower())
        if column is None:
            names = ["state", "mode", "id", "created", "started", "ended", "duration",
                     "experimentId", "mlInstanceId", "engineId"]
            raise self.fail(position, text, [f"attributes.{n}" for n in names],
                            f"unknown attribute {key!r}: use one of {', '.join(names)}")
        return _Field(None, column, position, text)

    def value(self, tree: Any, field: _Field) -> Any:
        token = tree.children[0]
        if token.type == "NUMBER":
            number = float(str(token))
            return int(number) if number.is_integer() and "." not in str(token) else number
        text = _unquote(str(token))
        if field.kind in _NUMERIC_KINDS or field.key == "duration_s":
            try:
                return float(text)
            except ValueError:
                raise self.fail(token.start_pos + 1, str(token), ["a number"],
                                f"{field.name} is a number, got {str(token)}") from None
        if field.key == "state":
            return text.upper()
        return text


def _number(value: Any) -> Optional[float]:
    """The number a value (or its text) is, else None."""
    if isinstance(value, (int, float)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", value.strip()) else number


def _is_token(node: Any, *types: str) -> bool:
    from lark import Token

    return isinstance(node, Token) and (not types or node.type in types)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        quote = text[0]   # a quote inside is doubled ('it''s') or escaped ('it\'s')
        return re.sub(r"\\(.)", r"\1", text[1:-1].replace(quote * 2, quote))
    return text


def _like_to_glob(pattern: str) -> str:
    """LIKE's % and _ as GLOB's * and ?, GLOB's own specials taken literally; \\ escapes."""
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(f"[{ch}]" if ch in "*?[" else ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?[":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out)
