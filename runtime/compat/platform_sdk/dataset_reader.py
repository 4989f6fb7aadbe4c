"""`DatasetReader(client_context, dataset_id)`: read a data set as a pandas DataFrame.

    reader = DatasetReader(ctx, config["trainingDataSetId"])
    frame = reader.where(reader["_tenant.date"].gt("2010-02-12")
                         .And(reader["_tenant.store"].le(10))).select(["_tenant.store"]).read()

`where`, `select`, `sort`, `limit` and `offset` each return a new reader (the original is left as
it was), so chains and reused readers both behave. The query runs in SQL's order: filter, sort,
offset and limit, then the selected columns; the result has a fresh 0..n-1 index. Values are
compared in the column's type: a string against a datetime column is parsed as a timestamp, a
numeric string against a number column as a number; rows with a missing value never match.
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from runtime.datasets import (ReadAgain, dataset_columns, parquet_fields, read_dataset,
                              resolve_dataset, scan_dataset, stored_formats)
from runtime.errors import ConfigError

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt, "lt": operator.lt, "ge": operator.ge, "le": operator.le,
    "eq": operator.eq, "ne": operator.ne,
}
_SYMBOLS = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}


class Condition:
    """A filter: one comparison, or `And`/`Or` of conditions."""

    def __init__(self, kind: str, column: Optional[str] = None, value: Any = None,
                 parts: Sequence["Condition"] = ()) -> None:
        self.kind, self.column, self.value, self.parts = kind, column, value, tuple(parts)

    def And(self, *others: "Condition") -> "Condition":
        return Condition("and", parts=(self, *_conditions(others, "And")))

    def Or(self, *others: "Condition") -> "Condition":
        return Condition("or", parts=(self, *_conditions(others, "Or")))

    __and__ = And
    __or__ = Or

    def columns(self) -> set[str]:
        if self.kind in ("and", "or"):
            return set().union(*(p.columns() for p in self.parts))
        return {self.column} if self.column is not None else set()

    def mask(self, frame: Any, hints: Optional[dict[str, Any]] = None) -> Any:
        """The rows of `frame` that match. `hints`: per text column, what the whole data set's
        column says about parsing as dates (see _date_hint), when `frame` is one batch of it."""
        if self.kind == "and":
            result = self.parts[0].mask(frame, hints)
            for part in self.parts[1:]:
                result = result & part.mask(frame, hints)
            return result
        if self.kind == "or":
            result = self.parts[0].mask(frame, hints)
            for part in self.parts[1:]:
                result = result | part.mask(frame, hints)
            return result
        return _compare(frame, str(self.column), self.kind, self.value, hints)

    def comparisons(self) -> Iterator["Condition"]:
        if self.kind in ("and", "or"):
            for part in self.parts:
                yield from part.comparisons()
        else:
            yield self

    def __repr__(self) -> str:
        if self.kind in ("and", "or"):
            return "(" + f" {self.kind.upper()} ".join(repr(p) for p in self.parts) + ")"
        return f"{self.column} {_SYMBOLS[self.kind]} {self.value!r}"

    def __bool__(self) -> bool:
        raise TypeError("Combine reader conditions with .And(...) / .Or(...), not and/or")


def _conditions(items: Iterable[Any], method: str) -> list[Condition]:
    out = list(items)
    for item in out:
        if not isinstance(item, Condition):
            raise TypeError(f"{method}() takes conditions such as reader['col'].gt(1), got "
                            f"{type(item).__name__}")
    if not out:
        raise TypeError(f"{method}() needs at least one condition")
    return out


class Column:
    """`reader["col"]`: compare it with a value to make a Condition."""

    def __init__(self, name: str) -> None:
        self.name = name

    def gt(self, value: Any) -> Condition:
        return Condition("gt", self.name, value)

    def lt(self, value: Any) -> Condition:
        return Condition("lt", self.name, value)

    def ge(self, value: Any) -> Condition:
        return Condition("ge", self.name, value)

    def le(self, value: Any) -> Condition:
        return Condition("le", self.name, value)

    def eq(self, value: Any) -> Condition:
        return Condition("eq", self.name, value)

    def ne(self, value: Any) -> Condition:
        return Condition("ne", self.name, value)

    def __repr__(self) -> str:
        return f"Column({self.name!r})"


def _compare(frame: Any, column: str, op: str, value: Any,
             hints: Optional[dict[str, Any]] = None) -> Any:
    import numpy as np
    import pandas as pd

    if column not in frame.columns:
        raise ConfigError(f"where: the data set has no column {column!r} (columns: "
                          f"{', '.join(map(str, frame.columns))})")
    series = frame[column]
    present = series.notna()
    kind = series.dtype.kind
    try:
        if kind == "M":
            stamp = pd.Timestamp(value)
            tz = getattr(series.dt, "tz", None)
            if tz is not None and stamp.tzinfo is None:
                stamp = stamp.tz_localize(tz)
            elif tz is None and stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            left, right = series, stamp
        elif kind == "b":
            right = value if isinstance(value, (bool, np.bool_)) else \
                str(value).strip().lower() in ("true", "1", "yes")
            left = series
        elif kind in "iuf":
            right = float(value) if isinstance(value, str) else value
            left = series
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            left, right = pd.to_numeric(series, errors="coerce"), value
            present = present & left.notna()
        elif hasattr(value, "year") and hasattr(value, "month"):   # a date or datetime
            left, right = pd.to_datetime(series, errors="coerce"), pd.Timestamp(value)
            present = present & left.notna()
        elif isinstance(value, str) and _ISO_DATE.match(value.strip()) and \
                (parsed := _as_dates(series, present, (hints or {}).get(column))) is not None:
            # a date column stored as text (e.g. "2/5/10"): compared as dates, as the platform's
            # typed columns were, not as strings
            left, right = parsed, pd.Timestamp(value.strip())
            if getattr(right, "tzinfo", None) is not None:
                right = right.tz_convert("UTC").tz_localize(None)
        else:
            left, right = series.astype(str), str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"where: cannot compare column {column!r} ({series.dtype}) with "
                          f"{value!r}: {exc}") from exc
    result = pd.Series(False, index=frame.index)
    if present.any():
        result[present] = _OPS[op](left[present], right).to_numpy(dtype=bool)
    return result


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _as_dates(series: Any, present: Any, hint: Any = None) -> Any:
    """`series` parsed as naive timestamps when every present value parses, else None. `hint`
    (a batch of a larger column): (whether the whole column parses, the format pandas guessed
    from the column's first value), so that every batch decides and parses as the whole did."""
    import warnings

    import pandas as pd

    if hint is not None and not hint[0]:
        return None
    options = {"format": hint[1]} if hint is not None and hint[1] else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pandas' "could not infer format" notes
        try:
            parsed = pd.to_datetime(series.where(present, None), errors="coerce", **options)
        except (TypeError, ValueError, OverflowError):
            return None
    if parsed.dtype.kind != "M" or (parsed.isna() & present).any():
        return None
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


class DatasetReader:
    def __init__(self, client_context: Any, dataset_id: Any, **options: Any) -> None:
        self.client_context = client_context
        ref = getattr(dataset_id, "ref", None)   # a platform_sdk.models.Dataset works too
        self.dataset_id = str(getattr(dataset_id, "id", None) or dataset_id)
        self.ref = ref if ref is not None else resolve_dataset(self.dataset_id)
        self.options = options
        self._where: Optional[Condition] = None
        self._select: Optional[list[str]] = None
        self._sort: Optional[list[tuple[str, bool]]] = None
        self._limit: Optional[int] = None
        self._offset = 0

    def __getitem__(self, column: str) -> Column:
        return Column(str(column))

    def _copy(self, **changes: Any) -> "DatasetReader":
        other = object.__new__(DatasetReader)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    def where(self, condition: Condition) -> "DatasetReader":
        """Rows matching `condition`; a second `where` narrows the first (AND)."""
        if not isinstance(condition, Condition):
            raise TypeError("where() takes a condition such as reader['col'].gt(1), got "
                            f"{type(condition).__name__}")
        combined = condition if self._where is None else self._where.And(condition)
        return self._copy(_where=combined)

    def select(self, columns: Union[str, Sequence[str]]) -> "DatasetReader":
        names = [columns] if isinstance(columns, str) else [str(c) for c in columns]
        if not names:
            raise ValueError("select() needs at least one column")
        return self._copy(_select=names)

    def sort(self, columns: Union[str, Sequence[Any]]) -> "DatasetReader":
        """`sort([("col", "asc"), ("other", "desc")])` or `sort(["col"])`."""
        items = [columns] if isinstance(columns, str) else list(columns)
        keys: list[tuple[str, bool]] = []
        for item in items:
            name, direction = (item, "asc") if isinstance(item, str) else (item[0], item[1])
            if str(direction).lower() not in ("asc", "desc"):
                raise ValueError(f"sort direction for {name!r} must be 'asc' or 'desc', got "
                                 f"{direction!r}")
            keys.append((str(name), str(direction).lower() == "asc"))
        return self._copy(_sort=keys)

    def limit(self, n: int) -> "DatasetReader":
        return self._copy(_limit=_count(n, "limit"))

    def offset(self, n: int) -> "DatasetReader":
        return self._copy(_offset=_count(n, "offset"))

    def read(self) -> Any:
        """The query's rows as one DataFrame. With a where, select, limit or offset the data set is
        streamed: only the columns the query names are read, a Parquet filter skips row groups
        whose statistics rule it out, and reading stops once offset + limit rows matched."""
        import pandas as pd

        if self._where is None and self._select is None and not self._sort and \
                not self._offset and self._limit is None:
            return read_dataset(self.ref).reset_index(drop=True)
        types = None
        while True:
            try:
                parts = list(self._query_batches(csv_types=types, exact_types=True))
                break
            except ReadAgain as again:   # a CSV column is text after all: as pandas types it
                types = again.column_types
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else \
            parts[0].reset_index(drop=True)

    def iter_batches(self, batch_size: int = 100_000) -> Iterator[Any]:
        """The query's rows as DataFrames of `batch_size` rows (the last one fewer; each with a
        0..n-1 index), read a batch at a time: memory holds a batch, not the data set. Concatenated
        they equal `read()`. With `sort`, the matching rows are sorted first (all held at once).
        A CSV column typed from the file's first block (as numbers, say) that turns out to hold
        text further on comes as text in the batches from there on (read() re-reads instead)."""
        import pandas as pd

        size = _count(batch_size, "iter_batches batch_size")
        if size == 0:
            raise ValueError("iter_batches() takes a batch_size >= 1")
        held: list[Any] = []
        rows = 0
        for frame in self._query_batches(batch_rows=size):
            if not len(frame):
                continue
            held.append(frame)
            rows += len(frame)
            while rows >= size:
                joined = pd.concat(held, ignore_index=True) if len(held) > 1 else \
                    held[0].reset_index(drop=True)
                yield joined.iloc[:size].reset_index(drop=True)
                rest = joined.iloc[size:]
                held, rows = ([rest] if len(rest) else []), len(rest)
        if held:
            yield pd.concat(held, ignore_index=True) if len(held) > 1 else held[0].reset_index(drop=True)

    def _query_batches(self, batch_rows: int = 65_536, csv_types: Optional[dict[str, Any]] = None,
                       exact_types: bool = False) -> Iterator[Any]:
        """The query run over the data set's batches: filter, then (sort over all of them,)
        offset and limit, then the selected columns. At least one frame, maybe empty."""
        import pandas as pd

        if "jsonl" in stored_formats(self.ref):
            # JSON lines say their columns' types only once every line is read: read whole, as
            # before (then handed out in batches)
            yield self._whole_frame()
            return
        columns, known = self._columns_read()
        typing = {"csv_types": csv_types, "exact_types": exact_types}
        hints = self._date_hints(known, typing)
        arrow_filter = self._arrow_filter()
        batches = scan_dataset(self.ref, columns, arrow_filter=arrow_filter, batch_rows=batch_rows,
                               **typing)
        if self._sort:
            matched = [self._filtered(b, hints) for b in batches]
            frame = pd.concat(matched, ignore_index=True) if len(matched) > 1 else matched[0]
            frame = frame.sort_values([c for c, _ in self._sort],
                                      ascending=[a for _, a in self._sort], kind="mergesort")
            batches, hints = iter([frame]), None
            filtered: Iterator[Any] = batches
        else:
            filtered = (self._filtered(b, hints) for b in batches)
        skip = self._offset
        left = self._limit
        first = None
        for frame in filtered:
            first = frame if first is None else first
            if skip:
                dropped = min(skip, len(frame))
                frame, skip = frame.iloc[dropped:], skip - dropped
            if left is not None:
                frame = frame.iloc[:left]
                left -= len(frame)
            if len(frame):
                yield self._selected(frame)
                first = False
            if left == 0:
                break
        if first is not False:   # nothing matched: an empty frame with the columns
            yield self._selected((first if first is not None else pd.DataFrame()).iloc[0:0])

    def _whole_frame(self) -> Any:
        frame = read_dataset(self.ref)
        if self._where is not None:
            frame = frame[self._where.mask(frame).to_numpy()]
        if self._sort:
            missing = [c for c, _ in self._sort if c not in frame.columns]
            if missing:
                raise ConfigError(f"sort: the data set has no column(s) {', '.join(missing)}")
            frame = frame.sort_values([c for c, _ in self._sort],
                                      ascending=[a for _, a in self._sort], kind="mergesort")
        if self._offset or self._limit is not None:
            end = None if self._limit is None else self._offset + self._limit
            frame = frame.iloc[self._offset:end]
        if self._select is not None:
            missing = [c for c in self._select if c not in frame.columns]
            if missing:
                raise ConfigError(f"select: the data set has no column(s) {', '.join(missing)} "
                                  f"(columns: {', '.join(map(str, frame.columns))})")
            frame = frame[self._select]
        return frame.reset_index(drop=True)

    def _filtered(self, frame: Any, hints: Optional[dict[str, Any]]) -> Any:
        if self._where is None:
            return frame
        return frame[self._where.mask(frame, hints).to_numpy()]

    def _selected(self, frame: Any) -> Any:
        if self._select is None:
            return frame.reset_index(drop=True)
        return frame[self._select].reset_index(drop=True)

    def _columns_read(self) -> tuple[Optional[list[str]], Optional[list[str]]]:
        """The columns to read (None: all) and the data set's columns when known without reading
        it (Parquet, CSV). A column the query names but the data set lacks is refused with the
        message the whole-frame path gives."""
        known = dataset_columns(self.ref)   # Parquet schema, CSV header: nothing read
        if known is not None:
            present = set(known)
            if self._where is not None:
                for column in sorted(self._where.columns()):
                    if column not in present:
                        raise ConfigError(f"where: the data set has no column {column!r} "
                                          f"(columns: {', '.join(map(str, known))})")
            missing = [c for c, _ in self._sort or () if c not in present]
            if missing:
                raise ConfigError(f"sort: the data set has no column(s) {', '.join(missing)}")
            if self._select is not None:
                missing = [c for c in self._select if c not in present]
                if missing:
                    raise ConfigError(f"select: the data set has no column(s) {', '.join(missing)} "
                                      f"(columns: {', '.join(map(str, known))})")
        if self._select is None or known is None:
            return None, known
        named = set(self._select) | (self._where.columns() if self._where is not None else set()) \
            | {c for c, _ in self._sort or ()}
        return [c for c in known if c in named], known

    def _date_hints(self, known: Optional[list[str]],
                    typing: dict[str, Any]) -> Optional[dict[str, Any]]:
        """For each text column compared with an ISO date: whether the whole column parses as
        dates, and the format pandas would guess from its first value (_as_dates decides on the
        whole column; a batch must decide the same way)."""
        if self._where is None:
            return None
        columns = sorted({str(c.column) for c in self._where.comparisons()
                          if isinstance(c.value, str) and _ISO_DATE.match(c.value.strip())
                          and (known is None or c.column in known)})
        hints: dict[str, Any] = {}
        for column in columns:
            fmt: Any = None
            parses, text, guessed = True, False, False
            try:
                batches = scan_dataset(self.ref, [column], **typing)
                for batch in batches:
                    series = batch[column]
                    if not _is_text(series):
                        break   # typed columns compare in their type, not as dates in text
                    text = True
                    present = series.notna()
                    if not guessed and present.any():
                        fmt, guessed = _guess_format(series[present].iloc[0]), True
                    if _as_dates(series, present, (True, fmt)) is None:
                        parses = False
                        break
            except ConfigError:
                continue   # JSON lines without that column: the comparison reports it
            if text:
                hints[column] = (parses, fmt)
        return hints

    def _arrow_filter(self) -> Any:
        """A pyarrow filter implied by the where condition, for a Parquet data set: comparisons
        whose pyarrow meaning is the pandas one (numbers with numbers, timestamps with exact
        instants, text with non-date text). It may keep rows the condition drops, never the
        reverse: each batch is still masked by the condition itself."""
        if self._where is None:
            return None
        fields = parquet_fields(self.ref)
        if fields is None:
            return None
        return _pushdown(self._where, fields)

    def __repr__(self) -> str:
        return (f"DatasetReader({self.dataset_id!r}, where={self._where!r}, select={self._select!r},"
                f" limit={self._limit!r}, offset={self._offset!r})")


def _count(n: Any, what: str) -> int:
    try:
        value = int(n) if isinstance(n, str) and n.strip().isdigit() else operator.index(n)
    except TypeError:
        raise ValueError(f"{what}() takes a whole number, got {n!r}") from None
    if isinstance(n, bool) or value < 0:
        raise ValueError(f"{what}() takes a whole number >= 0, got {n!r}")
    return value


def _is_text(series: Any) -> bool:
    import pandas as pd

    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)


def _guess_format(value: Any) -> Optional[str]:
    """The format pandas >= 2 guesses from a column's first value and parses every value with
    (pandas 1.x parses each value on its own: no format)."""
    import pandas as pd

    if int(pd.__version__.split(".")[0]) < 2 or not isinstance(value, str):
        return None
    try:
        from pandas.tseries.api import guess_datetime_format
    except ImportError:
        return None
    try:
        return guess_datetime_format(value)
    except (TypeError, ValueError):
        return None


_ARROW_OPS = {"gt": "__gt__", "lt": "__lt__", "ge": "__ge__", "le": "__le__", "eq": "__eq__",
              "ne": "__ne__"}


def _pushdown(condition: Condition, fields: dict[str, Any]) -> Any:
    """The pyarrow expression for `condition`, or None where it has none (see _arrow_filter)."""
    if condition.kind in ("and", "or"):
        parts = [_pushdown(p, fields) for p in condition.parts]
        if condition.kind == "and":
            parts = [p for p in parts if p is not None]   # fewer conjuncts: a wider filter
        elif any(p is None for p in parts):
            return None
        if not parts:
            return None
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if condition.kind == "and" else (result | part)
        return result
    found = fields.get(str(condition.column))
    if found is None:
        return None
    path, arrow_type = found
    scalar = _arrow_value(arrow_type, condition.value)
    if scalar is None:
        return None
    import pyarrow.dataset as ds

    return getattr(ds.field(*path), _ARROW_OPS[condition.kind])(scalar)


def _arrow_value(arrow_type: Any, value: Any) -> Any:
    """`value` as the pandas comparison reads it for a column of `arrow_type`, as a pyarrow
    scalar; None when the two would not agree exactly."""
    import pyarrow as pa

    if isinstance(value, bool):
        return None
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, (int, float)) or value != value:   # NaN matches nothing
            return None
        return pa.scalar(value)
    if pa.types.is_timestamp(arrow_type):
        import pandas as pd

        try:
            stamp = pd.Timestamp(value)
            if arrow_type.tz is not None and stamp.tzinfo is None:
                stamp = stamp.tz_localize(arrow_type.tz)
            elif arrow_type.tz is None and stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            nanos = int(stamp.value)
        except (TypeError, ValueError, OverflowError):
            return None
        per = {"s": 10 ** 9, "ms": 10 ** 6, "us": 10 ** 3, "ns": 1}[arrow_type.unit]
        if nanos % per:
            return None   # not an instant of the column's unit: the scan would round it
        return pa.scalar(nanos // per, type=pa.int64()).cast(arrow_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if isinstance(value, str) and not _ISO_DATE.match(value.strip()):
            return pa.scalar(value, type=arrow_type)
    return None
