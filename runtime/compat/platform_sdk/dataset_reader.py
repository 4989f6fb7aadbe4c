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
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from runtime.datasets import read_dataset, resolve_dataset
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

    def mask(self, frame: Any) -> Any:
        if self.kind == "and":
            result = self.parts[0].mask(frame)
            for part in self.parts[1:]:
                result = result & part.mask(frame)
            return result
        if self.kind == "or":
            result = self.parts[0].mask(frame)
            for part in self.parts[1:]:
                result = result | part.mask(frame)
            return result
        return _compare(frame, str(self.column), self.kind, self.value)

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


def _compare(frame: Any, column: str, op: str, value: Any) -> Any:
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
                (parsed := _as_dates(series, present)) is not None:
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


def _as_dates(series: Any, present: Any) -> Any:
    """`series` parsed as naive timestamps when every present value parses, else None."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pandas' "could not infer format" notes
        try:
            parsed = pd.to_datetime(series.where(present, None), errors="coerce")
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
