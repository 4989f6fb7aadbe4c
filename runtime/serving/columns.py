"""Columns: a request's rows as typed numpy arrays by column name, for engines whose online hook
takes them (`OnlinePredictor.takes_columns`): a small MLflow body is cast value by value in
Python and never becomes a pandas frame (a frame and its per-column casts cost milliseconds; a
row's values cost microseconds). A value the small path does not read exactly as the pandas path
would (a number written as a string, a date that is not ISO 8601) sends the whole request to the
pandas path (payloads.conform), whose frame is then handed over as columns: the same casts, the
same refusals, the same answers either way.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Optional

from ..errors import BadRequest
from .wire import json_encoder

SMALL_ROWS = 64          # requests up to this many rows take the Python path
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?")
_FLAGS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
# Within pandas' nanosecond timestamps (1677-09-21 .. 2262-04-11), with room to spare.
_EARLIEST, _LATEST = datetime(1678, 1, 1), datetime(2261, 12, 31)


class Slow(Exception):
    """These values need the pandas path."""


def missing_columns(missing: list[str], schema: Optional[dict[str, str]]) -> BadRequest:
    listed = ", ".join(repr(c) for c in missing)
    takes = f"; the model takes {', '.join(schema)}" if schema else ""
    return BadRequest(f"Missing required column{'s' if len(missing) > 1 else ''} {listed}{takes}")


def rows_of(columns: dict[str, Any]) -> int:
    for values in columns.values():
        return len(values)
    return 0


def from_frame(frame: Any) -> dict[str, Any]:
    """A conformed frame's columns as numpy arrays (no copy where pandas has one)."""
    return {column: frame[column].to_numpy() for column in frame.columns}


def to_frame(columns: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(columns)


def small_table(key: str, value: Any) -> Optional[tuple[list[str], list[list[Any]]]]:
    """(column names, values by column) of an MLflow body's rows when they are records or
    dataframe_split; None for any other shape (the pandas path reads it)."""
    if key == "dataframe_split":
        columns, data = value.get("columns"), value["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) \
                or len(set(columns)) != len(columns):
            return None
        return columns, [[row[i] for row in data] for i in range(len(columns))]
    records = value
    if not isinstance(records, list) or not all(type(r) is dict for r in records):
        return None
    if len(records) == 1:   # the common request: one row
        names = list(records[0])
        if not all(type(n) is str for n in names):
            return None
        return names, [[v] for v in records[0].values()]
    names: dict[str, None] = {}
    for record in records:
        for name in record:
            names.setdefault(name, None)
    if not all(isinstance(n, str) for n in names):
        return None
    return list(names), [[r.get(n) for r in records] for n in names]


def cast_columns(names: list[str], values: list[list[Any]], schema: dict[str, str],
                 required: tuple[str, ...]) -> dict[str, Any]:
    """The columns cast to the model's declared kinds, with payloads.conform's refusals."""
    import numpy as np

    missing = [c for c in required if c not in names]
    if missing:
        raise missing_columns(missing, schema)
    out: dict[str, Any] = {}
    for name, column in zip(names, values):
        kind = schema.get(name)
        if kind in ("number", "integer"):
            out[name] = _numbers(column, name, kind)
        elif kind == "boolean":
            flags = [_flag(v, name, row) for row, v in enumerate(column)]
            out[name] = np.array(flags, dtype=bool if None not in flags else object)
        elif kind == "datetime":
            out[name] = _dates(column, name)
        elif kind == "string":
            out[name] = np.array([v if v is None or isinstance(v, str) else _text(v)
                                  for v in column], dtype=object)
        else:
            out[name] = _inferred(column)
    return out


_NUMBERS = frozenset((int, float, type(None)))
_INTS = frozenset((int,))


def _numbers(column: list[Any], name: str, kind: str) -> Any:
    import numpy as np

    if len(column) == 1:   # one row: its one value's type says it all
        t = type(column[0])
        if t is int:
            try:
                return np.array(column, dtype=np.int64)
            except OverflowError:
                raise Slow() from None
        if t is float and (kind != "integer" or not math.isfinite(column[0])
                           or column[0] == round(column[0])):
            return np.array(column, dtype=np.float64)
    types = set(map(type, column))
    if types <= _NUMBERS:   # the common column: no value to refuse but a fraction
        if types <= _INTS:
            try:
                return np.array(column, dtype=np.int64)
            except OverflowError:
                raise Slow() from None
        if kind == "integer" and float in types:
            for row, v in enumerate(column):
                if type(v) is float and math.isfinite(v) and v != round(v):
                    _refuse(name, row, "a whole number")
        if type(None) in types:
            column = [math.nan if v is None else v for v in column]
        return np.array(column, dtype=np.float64)
    whole = True
    for row, v in enumerate(column):
        t = type(v)
        if t is int:
            continue
        whole = False
        if t is float or v is None:
            if kind == "integer" and t is float and math.isfinite(v) and v != round(v):
                _refuse(name, row, "a whole number")
            continue
        if t is str:
            raise Slow()   # pandas reads numbers written as text
        _refuse(name, row, "a number")
    if whole:
        try:
            return np.array(column, dtype="int64")
        except OverflowError:
            raise Slow() from None
    return np.array([math.nan if v is None else v for v in column], dtype="float64")


def _flag(v: Any, name: str, row: int) -> Any:
    if v is None or type(v) is bool:
        return v
    if type(v) in (int, float) and v in (0, 1):
        return bool(v)
    if type(v) is float and math.isnan(v):
        return None
    if isinstance(v, str):
        flag = _FLAGS.get(v.strip().lower())
        if flag is not None:
            return flag
    _refuse(name, row, "true or false")


def _dates(column: list[Any], name: str) -> Any:
    """A column of ISO 8601 dates as datetime64[ns]: each value checked as `_date` does, then
    parsed by numpy in one call (a quarter of `_date`'s time a value), the same instants."""
    import numpy as np

    for row, v in enumerate(column):
        if v is None:
            continue
        if type(v) is not str or not _ISO.fullmatch(v):
            return np.array([_date(v, name, row) for row, v in enumerate(column)],
                            dtype="datetime64[ns]")
        try:
            when = datetime.fromisoformat(v)
        except ValueError:
            _refuse(name, row, "a date or timestamp (ISO 8601)")
        if not _EARLIEST <= when <= _LATEST:
            raise Slow()
    try:
        return np.array(column, dtype="datetime64[ns]")
    except ValueError:   # a spelling fromisoformat reads and numpy does not
        return np.array([_date(v, name, row) for row, v in enumerate(column)],
                        dtype="datetime64[ns]")


def _date(v: Any, name: str, row: int) -> Any:
    import numpy as np

    if v is None:
        return np.datetime64("NaT")
    if not isinstance(v, str):
        _refuse(name, row, "a date or timestamp (ISO 8601)")
    if not _ISO.fullmatch(v):
        raise Slow()   # pandas reads other spellings (4/6/12, "April 6, 2012")
    try:
        when = datetime.fromisoformat(v)
    except ValueError:
        _refuse(name, row, "a date or timestamp (ISO 8601)")
    if not _EARLIEST <= when <= _LATEST:
        raise Slow()   # near or past nanoseconds' range (numpy would wrap it): pandas decides
    return np.datetime64(when, "ns")


def _text(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)


def _inferred(column: list[Any]) -> Any:
    import numpy as np

    types = {type(v) for v in column}
    if types <= {int}:
        try:
            return np.array(column, dtype="int64")
        except OverflowError:
            pass
    if types <= {int, float}:
        return np.array(column, dtype="float64")
    if types <= {int, float, type(None)} and types & {int, float}:   # pandas: missing is NaN
        return np.array([math.nan if v is None else v for v in column], dtype="float64")
    if types <= {bool}:
        return np.array(column, dtype=bool)
    out = np.empty(len(column), dtype=object)
    out[:] = column
    return out


def _refuse(name: str, row: int, what: str) -> None:
    raise BadRequest(f"Column {name!r}, row {row} (counting from 0): the value is not {what}")


# --- answers -----------------------------------------------------------------------------------

def _default(value: Any) -> str:
    return str(value)


_encode = json_encoder((",", ":"), _default)
# Dates as text by their dtype and value: an answer's dates are mostly a few weeks, and numpy's
# datetime_as_string costs 2 us a call however short the array. Bounded: emptied when full.
_DATE_TEXT: dict[Any, dict[int, str]] = {}
_DATE_TEXT_MAX = 8192


def _date_texts(values: Any) -> list[Optional[str]]:
    """np.datetime_as_string(values, unit="ms") as a list, NaT as None."""
    import numpy as np

    values = np.asarray(values)
    known = _DATE_TEXT.setdefault(values.dtype, {})
    ints = values.view("int64").tolist()
    texts = [known.get(v) for v in ints]
    if None in texts:
        texts = np.datetime_as_string(values, unit="ms").tolist()
        if len(known) + len(texts) > _DATE_TEXT_MAX:
            known.clear()
        known.update(zip(ints, texts))
    return [None if t == "NaT" else t for t in texts]


def json_values(columns: dict[str, Any]) -> bytes:
    """Columns as MLflow's records (`[{column: value}, ...]`): dates as pandas writes them in
    ISO format (milliseconds), a missing number as null."""
    names = list(columns)
    lists = []
    for name in names:
        values = columns[name]
        kind = getattr(values, "dtype", None)
        kind = kind.kind if kind is not None else "O"
        if kind == "M":
            lists.append(_date_texts(values))
        elif kind == "f":
            lists.append([None if v != v or v in (math.inf, -math.inf) else v
                          for v in values.tolist()])
        else:
            lists.append(values.tolist() if hasattr(values, "tolist") else list(values))
    records = [dict(zip(names, row)) for row in zip(*lists)]
    return _encode(records).encode()


def split(columns: dict[str, Any], counts: list[int]) -> list[dict[str, Any]]:
    out, start = [], 0
    for n in counts:
        out.append({name: values[start:start + n] for name, values in columns.items()})
        start += n
    return out
