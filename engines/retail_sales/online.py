"""retail-sales online (runtime.serving): the model's history indexed once, at load, as sorted
numpy arrays keyed by (store, day); a request's features are looked up there and in the request's
own rows with numpy only (no pandas frame is built per request), then one forward pass of the
network prepared once. Several requests are predicted in one pass, each row's lags looked up only
in its own request and the history; each request gets its rows back as `run score` orders them
(store, then date), with the same predictions as `run score` of the same rows.

Rows the numpy path does not cover (an input feature it does not compute, days far outside the
key range) are scored by the engine's own pandas path, to the same answers.
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable, Optional

from runtime.engine import OnlinePredictor, TaskContext
from runtime.errors import BadRequest

from .schema import LABEL_SUFFIX, SCHEMA, STORE_TYPES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_KINDS = {"date": "datetime", "store": "integer", "storeType": "string", "isHoliday": "boolean"}
# A key is store * SPAN + day + DAY_OFFSET (days from 1970 within +-DAY_OFFSET, stores within
# +-MAX_STORE): ordered as (store, day), as `run score` orders its rows.
SPAN = 1 << 22
DAY_OFFSET = 1 << 21
MAX_STORE = 1 << 40
LAGS = (*range(1, 8), 51, *range(52, 60))
_NS_PER_DAY = 86_400 * 10 ** 9
# The features this module computes itself (features.build_features's, for scored rows).
_COMPUTED = {"lag1Ratio", "lag2Ratio", "lag3Ratio", "mean4Ratio", "mean8Ratio",
             "lastYearNextRatio", "lastYearStep", "yoyRatio", "yoy4Ratio", "yoy8Ratio",
             "lastYearNextHoliday", "hasHistory", "weekOfYear", "weekSin", "weekCos", "holiday",
             *(f"storeType_{t}" for t in STORE_TYPES), "logStoreSize"}


class _Fallback(Exception):
    """These rows need the engine's pandas path."""


class HistoryIndex:
    """The model's history as one sorted key array (store, day) with its target values and
    holiday flags."""

    def __init__(self, history: pd.DataFrame, target: str) -> None:
        import numpy as np

        from .features import parse_dates, parse_flags

        n = len(history)
        if n:
            stores = history["store"].to_numpy(dtype="int64")
            days = parse_dates(history["date"]).to_numpy(dtype="datetime64[D]").astype("int64")
            values = history[target].to_numpy(dtype="float64")
            holiday = (parse_flags(history["isHoliday"]).to_numpy(dtype="float64")
                       if "isHoliday" in history.columns else np.zeros(n))
        else:
            stores = days = np.zeros(0, dtype="int64")
            values = holiday = np.zeros(0)
        if n and (days.min() <= -DAY_OFFSET + 7 * 60 or days.max() >= DAY_OFFSET
                  or np.abs(stores).max() >= MAX_STORE):
            raise ValueError("history out of the key range")
        keys = stores * SPAN + days + DAY_OFFSET
        order = np.argsort(keys, kind="stable")
        self.keys, self.values, self.holiday = keys[order], values[order], holiday[order]


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(a / b), missing where not finite; callers ignore numpy's divide and invalid warnings
    (one np.errstate around many calls: entering one costs as much as a small ratio)."""
    import numpy as np

    out = np.log(a / b)
    out[~np.isfinite(out)] = np.nan
    return out


def _iso_weeks(days: np.ndarray) -> np.ndarray:
    """ISO 8601 week numbers of days since 1970-01-01 (a Thursday), as float64."""
    import numpy as np

    weekday = (days + 3) % 7                        # Monday 0
    thursday = days - weekday + 3                   # the week's Thursday names its year
    year_start = thursday.astype("datetime64[D]").astype("datetime64[Y]").astype(
        "datetime64[D]").astype("int64")
    return ((thursday - year_start) // 7 + 1).astype("float64")


def _column(cols: dict[str, np.ndarray], name: str) -> Optional[np.ndarray]:
    """A request's column by the schema's name, in any case (as features.normalise_columns)."""
    if name in cols:
        return cols[name]
    lower = name.lower()
    for column in cols:
        if str(column).lower() == lower:
            return cols[column]
    return None


def _numbers(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    if values.dtype.kind in "iufb":
        return values.astype("float64")
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")


_TRUE = frozenset(("true", "1", "1.0", "yes", "t", "y"))
_FALSE = frozenset(("false", "0", "0.0", "no", "f", "n", "nan", "none", "<na>", ""))


def _flags(values: np.ndarray) -> np.ndarray:
    """isHoliday as 0/1, read as features.parse_flags reads it (anything else: the pandas path,
    which refuses it)."""
    import numpy as np

    if values.dtype.kind == "b":
        return values.astype("float64")
    text = [str(v).strip().lower() for v in values.tolist()]
    if not all(t in _TRUE or t in _FALSE for t in text):
        raise _Fallback()
    return np.fromiter((t in _TRUE for t in text), dtype="float64", count=len(text))


def _missing(values: np.ndarray) -> Optional[np.ndarray]:
    """pd.isna of a column, by its kind (None: nothing can be missing); numpy's own test where
    it has one (pd.isna costs microseconds a call, which per request added up)."""
    import numpy as np

    kind = values.dtype.kind
    if kind in "iub":
        return None
    if kind == "M":
        return np.isnat(values)
    if kind == "f":
        return np.isnan(values)
    import pandas as pd

    return pd.isna(values)


def _required_rows(cols: dict[str, np.ndarray], columns: tuple[str, ...]) -> None:
    """A row without a date or store cannot be placed in its store's weeks: a 400 naming it."""
    for column in columns:
        values = _column(cols, column)
        if values is None:
            continue
        missing = _missing(values)
        if missing is not None and missing.any():
            raise BadRequest(f"Column {column!r}, row {int(missing.nonzero()[0][0])} (counting "
                             "from 0): a value is required")


class Rows:
    """Rows as arrays, in the order sent: store, day, current sales, holiday flag, and the inputs
    that depend on the row alone (store type, size, columns as sent). Every field is computed
    row by row, so one Rows of several requests' columns put end to end equals their own Rows
    put end to end (`concat`), and a part of it their own (`part`)."""

    def __init__(self, frame: dict[str, np.ndarray], inputs: list[str], target: str) -> None:
        import numpy as np

        date, stores = frame["date"], frame["store"]
        n = len(date)
        if date.dtype.kind != "M" or stores.dtype.kind not in "iuf":
            raise _Fallback()
        if stores.dtype.kind == "f" and not np.array_equal(stores, np.round(stores)):
            raise _Fallback()
        self.stores = stores.astype("int64")
        self.days = date.astype("datetime64[D]").astype("int64")
        if n and (self.days.min() <= -DAY_OFFSET + 7 * 60 or self.days.max() >= DAY_OFFSET
                  or np.abs(self.stores).max() >= MAX_STORE):
            raise _Fallback()
        self.y = _numbers(frame[target])
        flags = _column(frame, "isHoliday")
        self.holiday = np.zeros(n) if flags is None else _flags(flags)
        self.local: dict[str, np.ndarray] = {}
        for name in inputs:
            if name.startswith("storeType_") and name in _COMPUTED:
                self.local[name] = _store_type(frame, name[len("storeType_"):])
            elif name == "logStoreSize":
                self.local[name] = _store_size(frame)
            elif name not in _COMPUTED:   # a column of the request used as it is (cpi, ...)
                raw = _column(frame, name)
                if raw is None:
                    raise _Fallback()
                self.local[name] = _numbers(raw)

    def __len__(self) -> int:
        return len(self.stores)

    @classmethod
    def _of(cls, stores: np.ndarray, days: np.ndarray, y: np.ndarray, holiday: np.ndarray,
            local: dict[str, np.ndarray]) -> "Rows":
        rows = cls.__new__(cls)
        rows.stores, rows.days, rows.y, rows.holiday, rows.local = stores, days, y, holiday, local
        return rows

    @classmethod
    def concat(cls, parts: list["Rows"]) -> "Rows":
        import numpy as np

        if len(parts) == 1:
            return parts[0]
        return cls._of(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("stores", "days", "y", "holiday")),
                       {name: np.concatenate([p.local[name] for p in parts])
                        for name in parts[0].local})

    def part(self, start: int, end: int) -> "Rows":
        return Rows._of(self.stores[start:end], self.days[start:end], self.y[start:end],
                        self.holiday[start:end],
                        {name: v[start:end] for name, v in self.local.items()})


def _combined(frames: list[dict[str, np.ndarray]]) -> Optional[dict[str, np.ndarray]]:
    """Several requests' columns put end to end, when they have the same columns, in the same
    order, of the same types (None otherwise: each request is read on its own, as it would be
    alone)."""
    import numpy as np

    first = frames[0]
    if len(frames) == 1:
        return first
    names = tuple(first)
    types = list(map(_DTYPE, first.values()))
    by_frame = []
    for frame in frames:
        values = list(frame.values())
        if tuple(frame) != names or list(map(_DTYPE, values)) != types:
            return None
        by_frame.append(values)
    return {name: np.concatenate(parts) for name, parts in zip(names, zip(*by_frame))}


_DTYPE = operator.attrgetter("dtype")


def _store_type(frame: dict[str, np.ndarray], kind: str) -> np.ndarray:
    import numpy as np

    raw = _column(frame, "storeType")
    if raw is None:
        raise BadRequest("Missing required column 'storeType': this model's inputs use it")
    return np.fromiter((isinstance(v, str) and v.strip().upper() == kind for v in raw),
                       dtype="float64", count=len(raw))


def _store_size(frame: dict[str, np.ndarray]) -> np.ndarray:
    import numpy as np

    raw = _column(frame, "storeSize")
    if raw is None:
        raise BadRequest("Missing required column 'storeSize': this model's inputs use it")
    size = _numbers(raw)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _log_ratio(size, np.ones_like(size))


class Features:
    """Several requests' rows in one pass: each request's rows in `run score`'s order (store,
    then day), their model inputs (`x`) and current sales; a row's past weeks are looked up in
    its own request's rows first, then in the history, never in another request's rows."""

    def __init__(self, index: HistoryIndex, rows: Rows, counts: list[int],
                 inputs: list[str]) -> None:
        import numpy as np

        group = np.repeat(np.arange(len(counts)), counts)
        stores, days = rows.stores, rows.days
        order = np.lexsort((days, stores, group))
        group, stores, days = group[order], stores[order], days[order]
        n = len(order)
        # (request, store) pairs numbered in order: keys within a batch, sorted
        new_pair = np.ones(n, dtype=bool)
        new_pair[1:] = (group[1:] != group[:-1]) | (stores[1:] != stores[:-1])
        keys = (np.cumsum(new_pair) - 1) * SPAN + days + DAY_OFFSET
        if n > 1 and (keys[1:] == keys[:-1]).any():
            raise _Fallback()   # a request with one week twice: the engine's own refusal names it
        y = rows.y[order]
        holiday = rows.holiday[order]
        self.bounds = np.searchsorted(group, np.arange(len(counts) + 1))
        self.stores, self.days, self.current = stores, days, y

        # k weeks before each row: its request's own rows first, then the history.
        steps = 7 * np.asarray(LAGS)[None, :]
        wanted = (keys[:, None] - steps).ravel()                          # (n * lags,)
        lag_values = np.full(wanted.shape, np.nan)
        lag_holiday = np.zeros(wanted.shape)
        own = np.minimum(np.searchsorted(keys, wanted), n - 1)
        in_request = keys[own] == wanted
        lag_values[in_request] = y[own[in_request]]
        lag_holiday[in_request] = holiday[own[in_request]]
        rest = np.flatnonzero(~in_request)
        if len(index.keys) and len(rest):
            history_keys = ((stores * SPAN + days + DAY_OFFSET)[:, None] - steps).ravel()[rest]
            at = np.minimum(np.searchsorted(index.keys, history_keys), len(index.keys) - 1)
            found = index.keys[at] == history_keys
            lag_values[rest[found]] = index.values[at[found]]
            lag_holiday[rest[found]] = index.holiday[at[found]]
        lag_values = lag_values.reshape(n, len(LAGS))
        column = {k: i for i, k in enumerate(LAGS)}
        lag = {k: lag_values[:, column[k]] for k in LAGS}
        lag[0] = y

        def mean_of(first: int, w: int) -> np.ndarray:
            total = lag[first] + lag[first + 1]   # summed in build_features's order
            for k in range(first + 2, first + w):
                total += lag[k]
            return total / w

        now = {w: mean_of(0, w) for w in (4, 8)}
        f: dict[str, Callable[[], np.ndarray]] = {
            "lag1Ratio": lambda: _log_ratio(lag[1], y), "lag2Ratio": lambda: _log_ratio(lag[2], y),
            "lag3Ratio": lambda: _log_ratio(lag[3], y),
            "mean4Ratio": lambda: _log_ratio(now[4], y),
            "mean8Ratio": lambda: _log_ratio(now[8], y),
            "lastYearNextRatio": lambda: _log_ratio(lag[51], y),
            "lastYearStep": lambda: _log_ratio(lag[51], lag[52]),
            "yoyRatio": lambda: _log_ratio(y, lag[52]),
            "yoy4Ratio": lambda: _log_ratio(now[4], mean_of(52, 4)),
            "yoy8Ratio": lambda: _log_ratio(now[8], mean_of(52, 8)),
            "lastYearNextHoliday": lambda: lag_holiday.reshape(n, len(LAGS))[:, column[51]].copy(),
            "hasHistory": lambda: np.isfinite(_log_ratio(lag[51], y) + _log_ratio(
                now[8], mean_of(52, 8))).astype("float64"),
            "weekOfYear": lambda: _iso_weeks(days),
            "weekSin": lambda: np.sin(2 * np.pi * _iso_weeks(days) / 52.0),
            "weekCos": lambda: np.cos(2 * np.pi * _iso_weeks(days) / 52.0),
            "holiday": lambda: holiday,
        }
        x = np.empty((n, len(inputs)))
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, name in enumerate(inputs):
                if name in f:
                    x[:, i] = f[name]()
                else:
                    x[:, i] = rows.local[name][order]
        self.x = x

    def answers(self, log_ratio: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Each request's answer: date, store, prediction, in `run score`'s order (computed
        for the whole batch at once, then cut per request)."""
        import numpy as np

        current = self.current
        with np.errstate(invalid="ignore", over="ignore"):
            prediction = np.where(current > 0, current * np.exp(log_ratio), np.nan)
        dates = (self.days * _NS_PER_DAY).view("datetime64[ns]")
        bounds = self.bounds.tolist()
        return [{"date": dates[a:b], "store": self.stores[a:b], "prediction": prediction[a:b]}
                for a, b in zip(bounds[:-1], bounds[1:])]


def predictor(engine: Any, ctx: TaskContext, model: Any) -> OnlinePredictor:
    import numpy as np
    import pandas as pd
    import torch

    from .model import MAX_LOG_RATIO, torch_device

    target = model.meta["target"]
    history = model.history
    device = torch_device(ctx.device, ctx.threads)
    model.net.to(device).eval()
    with torch.inference_mode():
        forward = model.net.mean_predictor()
    inputs = list(model.meta["inputs"])
    mean, std = np.asarray(model.meta["mean"]), np.asarray(model.meta["std"])
    unknown = [name for name in inputs if name not in _COMPUTED and name.lower() not in
               {s.lower() for s in SCHEMA}]
    try:
        index = HistoryIndex(history, target) if not unknown else None
    except ValueError:   # store ids or dates past the keys' range: the pandas path
        index = None
    by_store: Optional[dict[int, pd.DataFrame]] = None

    def slow_predict(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The engine's own pandas path, with the request's stores' history only."""
        nonlocal by_store
        if by_store is None:
            by_store = {int(s): rows.reset_index(drop=True)
                        for s, rows in history.groupby("store", sort=False)}
        frame = pd.DataFrame(cols)
        stores = {int(s) for s in pd.to_numeric(frame["store"]).dropna()}
        parts = [by_store[s] for s in sorted(stores) if s in by_store]
        past = pd.concat(parts, ignore_index=True) if parts else history.iloc[0:0]
        scored = engine._predict(ctx, model, frame, past)
        return {name: scored[name].to_numpy() for name in ("date", "store", "prediction")}

    def log_ratios(x: np.ndarray) -> np.ndarray:
        if device.type == "cuda":   # as RetailSalesModel.standardise does on a GPU
            z = torch.nan_to_num_((torch.from_numpy(x.astype("float32")).to(device)
                                   - torch.as_tensor(mean, dtype=torch.float32, device=device))
                                  / torch.as_tensor(std, dtype=torch.float32, device=device),
                                  nan=0.0, posinf=0.0, neginf=0.0)
        else:
            z = torch.as_tensor(np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0,
                                              neginf=0.0), dtype=torch.float32, device=device)
        with torch.inference_mode():
            out = forward(z).clamp_(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        return out.cpu().numpy().astype("float64")

    def fast(rows: Rows, counts: list[int]) -> list[Optional[dict[str, np.ndarray]]]:
        """The answers of requests whose rows (`counts` of them each) lie end to end in `rows`,
        from one Features and one forward pass; a batch refused as a whole (one request repeats
        a week) is built request by request, so that only that one falls back to the pandas
        path (None in its place)."""
        try:
            built = [(Features(index, rows, counts, inputs), list(range(len(counts))))]
        except _Fallback:
            built, start = [], 0
            for i, count in enumerate(counts):
                try:
                    built.append((Features(index, rows.part(start, start + count), [count],
                                           inputs), [i]))
                except _Fallback:
                    pass
                start += count
        answers: list[Optional[dict[str, np.ndarray]]] = [None] * len(counts)
        if not built:
            return answers
        ratios = log_ratios(np.concatenate([b.x for b, _ in built]) if len(built) > 1
                            else built[0][0].x)
        start = 0
        for features, which in built:
            mine = ratios[start:start + len(features.x)]
            start += len(features.x)
            for i, answer in zip(which, features.answers(mine)):
                answers[i] = answer
        return answers

    def combined(frames: list[dict[str, np.ndarray]]) -> Optional[list[Any]]:
        """A batch whose requests send the same columns: read as one (the columns put end to
        end, checked and cast once, not once per request); None where one request's rows need
        reading on their own (a missing date or store to name, rows for the pandas path)."""
        columns = _combined(frames)
        if columns is None:
            return None
        try:
            _required_rows(columns, ("date", "store"))
            rows = Rows(columns, inputs, target)
        except (BadRequest, _Fallback):
            return None
        answers = fast(rows, [len(frame["date"]) for frame in frames])
        return [answer if answer is not None else slow_predict(frame)
                for frame, answer in zip(frames, answers)]

    def predict_many(frames: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if index is not None and frames:
            out = combined(frames)
            if out is not None:
                return out
        for frame in frames:
            _required_rows(frame, ("date", "store"))
        if index is None:
            return [slow_predict(frame) for frame in frames]
        parts: list[Optional[Rows]] = []
        for frame in frames:
            try:
                parts.append(Rows(frame, inputs, target))
            except _Fallback:
                parts.append(None)
        ready = [p for p in parts if p is not None]
        answers = iter(fast(Rows.concat(ready), [len(p) for p in ready]) if ready else [])
        out = []
        for frame, part in zip(frames, parts):
            answer = next(answers) if part is not None else None
            out.append(answer if answer is not None else slow_predict(frame))
        return out

    schema = {name: _KINDS.get(name, "number") for name in SCHEMA}
    schema.setdefault(target, "number")
    schema.pop(target + LABEL_SUFFIX, None)
    example = None
    if len(history):
        last = history.iloc[-1]
        example = {"date": (pd.Timestamp(last["date"]) + pd.Timedelta(weeks=1)).date().isoformat(),
                   "store": int(last["store"]), target: float(last[target])}
    return OnlinePredictor(predict=lambda frame: predict_many([frame])[0], input_schema=schema,
                           required=("date", "store", target), example=example,
                           predict_many=predict_many, takes_columns=True)


__all__ = ["Features", "HistoryIndex", "Rows", "predictor"]
