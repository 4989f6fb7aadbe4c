"""A model's history (the last HISTORY_WEEKS weeks of each store, saved with it) and the feature
frame of rows whose past is looked up in that history: what train saves, and what score,
evaluate and chunked scoring build features with.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .schema import SCHEMA

if TYPE_CHECKING:
    import pandas as pd

# Year-ago features reach back 59 weeks; two years of history also covers scoring files that
# start up to 45 weeks before the training data ends (the sample split overlaps by 2).
HISTORY_WEEKS = 104


def recent_history(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """The last HISTORY_WEEKS weeks of each store's target (and holiday flag), saved with the model."""
    import pandas as pd

    latest = frame.groupby("store")["date"].transform("max")
    rows = (frame["date"] > latest - pd.Timedelta(weeks=HISTORY_WEEKS)) & frame[target].notna()
    columns = ["store", "date", target] + (["isHoliday"] if "isHoliday" in frame.columns else [])
    # The columns picked with the rows: a mask alone would copy every column of a feature frame
    return frame.loc[rows, columns].reset_index(drop=True)


def features_with_history(data: pd.DataFrame, history: pd.DataFrame, target: str, *,
                          context: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feature frame of `data`'s rows (prepared and sorted), each row's past looked up in
    `data` itself, in `context` (prepared rows of the same data set that came before `data`, as
    chunked scoring carries them) and, for the weeks the data lacks, in the model's `history`."""
    import numpy as np
    import pandas as pd

    from .features import build_features, parse_dates, parse_flags, prepare, sort_by_store_date, store_day_keys

    raw = prepare(data)
    # The columns the features use, without copying them (a selection by list copies each one).
    raw = pd.DataFrame({c: raw[c] for c in raw.columns if c in SCHEMA or c == target}, copy=False)
    carried = context is not None and len(context) > 0
    if carried:   # the data's own earlier rows, in front: looked up, not scored
        raw = pd.concat([context.assign(_scored=False), raw.assign(_scored=True)], ignore_index=True)
    if not len(history):
        frame = build_features(raw, target, prepared=True)
        return scored_rows(frame) if carried else frame
    history = history.assign(date=parse_dates(history["date"]))
    history_keys, raw_keys = store_day_keys(history, raw)
    known = np.zeros(len(history_keys), dtype=bool)
    if len(raw_keys):  # raw is sorted by its keys: a binary search tells which weeks it has itself
        at = np.minimum(np.searchsorted(raw_keys, history_keys), len(raw_keys) - 1)
        known = raw_keys[at] == history_keys
    past = history[~known]
    if past.empty and set(history.columns) <= set(raw.columns):
        frame = build_features(raw, target, prepared=True)  # the history adds neither rows nor columns
        return scored_rows(frame) if carried else frame
    if past.empty and carried:   # no rows to add (an empty frame in concat would change dtypes)
        return scored_rows(build_features(raw, target, prepared=True))
    combined = pd.concat([past.assign(_scored=False), raw if carried else raw.assign(_scored=True)],
                         ignore_index=True)
    if "isHoliday" in combined.columns and not pd.api.types.is_bool_dtype(combined["isHoliday"]):
        combined["isHoliday"] = parse_flags(combined["isHoliday"])  # a side without the column
    frame = build_features(sort_by_store_date(combined), target, prepared=True)
    return scored_rows(frame)


def scored_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["_scored"].to_numpy(dtype=bool)].drop(columns="_scored").reset_index(drop=True)
