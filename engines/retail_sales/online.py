"""retail-sales online (runtime.serving): the model's history indexed by store once, at load, so
a request's features are built from its own stores' weeks only; several requests are predicted in
one pass with each request's stores relabelled apart (a row's lags never reach another request's
rows), and each request gets its rows back as `run score` orders them (store, then date)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.engine import OnlinePredictor, TaskContext

from .schema import SCHEMA

if TYPE_CHECKING:
    import pandas as pd

# A request's stores are moved to their own range in a batch: store + (request + 1) * STRIDE.
STRIDE = 1_000_000
_KINDS = {"date": "datetime", "store": "integer", "storeType": "string", "isHoliday": "boolean"}


def predictor(engine: Any, ctx: TaskContext, model: Any) -> OnlinePredictor:
    import pandas as pd

    target = model.meta["target"]
    history = model.history
    by_store = {int(store): rows.reset_index(drop=True)
                for store, rows in history.groupby("store", sort=False)}
    empty = history.iloc[0:0]

    def history_for(parts: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(parts, ignore_index=True) if parts else empty

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        stores = {int(s) for s in pd.to_numeric(frame["store"]).dropna()}
        past = history_for([by_store[s] for s in sorted(stores) if s in by_store])
        scored = engine._predict(ctx, model, frame, past)
        return scored[["date", "store", "prediction"]].reset_index(drop=True)

    def predict_many(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
        if len(frames) == 1:
            return [predict(frames[0])]
        moved, past = [], []
        for i, frame in enumerate(frames):
            offset = (i + 1) * STRIDE
            stores = pd.to_numeric(frame["store"]).astype("int64")
            moved.append(frame.assign(store=stores + offset))
            for store in sorted(set(stores.tolist())):
                if store in by_store:
                    past.append(by_store[store].assign(store=store + offset))
        scored = engine._predict(ctx, model, pd.concat(moved, ignore_index=True),
                                 history_for(past))[["date", "store", "prediction"]]
        request = (scored["store"].to_numpy() // STRIDE) - 1
        scored = scored.assign(store=scored["store"] % STRIDE)
        return [scored[request == i].reset_index(drop=True) for i in range(len(frames))]

    schema = {name: _KINDS.get(name, "number") for name in SCHEMA}
    schema.setdefault(target, "number")
    example = None
    if len(history):
        last = history.iloc[-1]
        example = {"date": (pd.Timestamp(last["date"]) + pd.Timedelta(weeks=1)).date().isoformat(),
                   "store": int(last["store"]), target: float(last[target])}
    return OnlinePredictor(predict=predict, input_schema=schema,
                           required=("date", "store", target), example=example,
                           predict_many=predict_many)
