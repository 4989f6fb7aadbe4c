"""Scoring in bounded memory: a data set of any size scored a chunk of rows at a time.

The scores are those of the whole-file path, row for row and bit for bit: a row's forecast needs
only its own store's past 59 weeks (and the model's history for weeks the data lacks), so
  1. the `store` column is read once and the stores are cut into ranges of at most `chunk_rows`
     rows of the feature frame: the data's rows plus the model's history rows of those stores,
     which the features of a scoring file hold too (a store with more is a range of its own);
  2. the data set is streamed once and each range's rows are spilled to a file of its own, with
     the columns the features need, already typed (as `prepare` types them: cheap to redo);
  3. ranges are scored in store order, so the output comes out in the whole-file path's order
     (store, date). A range larger than `chunk_rows` (one store's long history) is fed in pieces
     of `chunk_rows` rows, each with the store's previous 59 weeks carried in front;
  4. standardised inputs wait in a buffer until a whole inference batch is there, so every batch
     holds exactly the rows the whole-file path's batch held (a matmul's rounding may depend on
     its shape), and predictions go to a Parquet file row group by row group.
Memory is a function of `chunk_rows` (sizing.SCORE_ROW_BYTES a feature-frame row at its peak,
measured), not of the data set; disk holds the spill (about 45 bytes a row) until the run ends.
Unset, `chunk_rows` is sized from the memory left to the process (sizing.py).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from runtime.errors import ConfigError

from .schema import SCHEMA

if TYPE_CHECKING:
    import pandas as pd

    from .model import RetailSalesModel

LOOKBACK_WEEKS = 59           # the furthest back a feature looks (features.build_features)
SPILL_FILES_MAX = 512         # ranges are widened rather than open more spill files than this

log = logging.getLogger("runtime.engine.retail-sales")


def default_chunk_rows(available_bytes: Optional[int] = None, *, row_bytes: Optional[int] = None) -> int:
    """Feature-frame rows per scoring chunk: the memory budget (sizing.MemoryRoom.budget: a share
    of the memory left to this process, cgroup limits included) over the bytes a row takes."""
    from .sizing import MIN_CHUNK_ROWS, SCORE_ROW_BYTES, MemoryRoom, memory_room

    room = memory_room() if available_bytes is None else MemoryRoom(available_bytes, "given")
    return int(max(MIN_CHUNK_ROWS, room.budget() // (row_bytes or SCORE_ROW_BYTES)))


def default_training_chunk_rows(available_bytes: Optional[int] = None) -> int:
    """Rows of a training range: the budget over what a training row takes while its range is
    built (sizing.TRAIN_ROW_BYTES)."""
    from .sizing import TRAIN_ROW_BYTES

    return default_chunk_rows(available_bytes, row_bytes=TRAIN_ROW_BYTES)


class ChunkedSource:
    """What `load_data` hands a chunked score or train run: the data set, not read yet. The
    worker describes it (rows, columns) without loading it."""

    def __init__(self, ref: Any, chunk_rows: int) -> None:
        self.ref, self.chunk_rows = ref, chunk_rows   # 0: not chosen yet (the score chooses)
        self._rows: Optional[int] = None
        self._columns: Optional[list[str]] = None

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            from runtime.datasets import dataset_columns

            self._columns = dataset_columns(self.ref)
        return self._columns

    def __len__(self) -> int:
        if self._rows is None:
            from runtime.datasets import count_rows

            self._rows = count_rows(self.ref)
        return self._rows

    def __repr__(self) -> str:
        return f"ChunkedSource({self.ref.id!r}, chunk_rows={self.chunk_rows})"


class StreamedScores:
    """What a chunked `score` returns when it wrote the scores itself: a finished Parquet file
    waiting to be moved onto its target (the engine's `save_output`)."""

    def __init__(self, written: Path, target: Path, rows: int) -> None:
        self.written, self.target, self.rows = written, target, rows

    def __len__(self) -> int:
        return self.rows


def score_chunks(source: ChunkedSource, model: RetailSalesModel, *, device: Any,
                 batch_size: int, work_dir: Path) -> Iterator[pd.DataFrame]:
    """`date, store, prediction` frames, in (store, date) order, equal when concatenated to
    the whole-file path's scores."""
    target = model.meta["target"]
    scorer = _ChunkScorer(model, target, device, batch_size)
    for piece in store_ranges(source, target, work_dir, split=True, history=model):
        yield from scorer.feed(piece)
    yield from scorer.finish()


def store_ranges(source: ChunkedSource, target: str, work_dir: Path, *, split: bool,
                 history: Optional[RetailSalesModel] = None) -> Iterator[pd.DataFrame]:
    """The data set's rows, typed, a range of whole stores at a time in store order (each
    range's rows in the file's order); with `split`, a range of one store with more than
    `chunk_rows` rows comes in pieces in date order (see _pieces). With a model, its history
    rows count towards a range's rows (the features hold them too)."""
    import sys

    from runtime.datasets import scan_dataset

    spill_root = Path(tempfile.mkdtemp(prefix=".retail-spill-", dir=work_dir))
    try:
        columns = _columns_needed(source.columns, target)
        store_column = next(c for c in columns if c.lower() == "store")
        bounds = _store_ranges(scan_dataset(source.ref, [store_column]), store_column,
                               source.chunk_rows,
                               history.history_store_counts() if history is not None else None)
        files = _spill(scan_dataset(source.ref, columns), bounds, target, spill_root)
        for path in files:
            yield from _pieces(path, source.chunk_rows if split else sys.maxsize)
            path.unlink()
    finally:
        shutil.rmtree(spill_root, ignore_errors=True)


def _columns_needed(columns: list[str], target: str) -> list[str]:
    """The data set's columns the features use: the schema's (matched case-insensitively, as
    normalise_columns does) and the target."""
    wanted = {name.lower() for name in SCHEMA if name not in ("temperature", "regionalFuelPrice",
                                                               "markdown", "cpi", "unemployment")}
    picked = [c for c in columns if str(c).lower() in wanted or c == target]
    for name in ("date", "store"):
        if not any(str(c).lower() == name for c in picked):
            raise ConfigError(f"Retail data lacks column(s) {name}; expected the schema "
                              f"{', '.join(SCHEMA)}")
    return picked


def _store_ids(values: Any) -> Any:
    import pandas as pd

    return pd.to_numeric(values, errors="raise").astype("int64").to_numpy()


def _store_ranges(batches: Iterator[pd.DataFrame], column: str, chunk_rows: int,
                  extra: Optional[pd.Series] = None) -> Any:
    """The last store of each range, ascending: consecutive stores whose rows (and `extra` rows
    per store: the model's history) add up to at most `chunk_rows` (a store with more is a range
    of its own)."""
    import numpy as np
    import pandas as pd

    counts: Optional[pd.Series] = None
    for batch in batches:
        if not len(batch):
            continue
        stores, n = np.unique(_store_ids(batch[column]), return_counts=True)
        part = pd.Series(n, index=stores)
        counts = part if counts is None else counts.add(part, fill_value=0)
    if counts is None:
        return np.zeros(0, dtype="int64")
    if extra is not None and len(extra):   # only the data's stores: a range is cut at them
        counts = counts.add(extra.reindex(counts.index, fill_value=0), fill_value=0)
    counts = counts.sort_index()
    limit = max(int(chunk_rows), -(-int(counts.sum()) // SPILL_FILES_MAX))
    ends: list[int] = []
    size = 0
    for store, n in zip(counts.index.to_numpy(), counts.to_numpy(dtype="int64")):
        if size and size + n > limit:
            ends.append(previous)
            size = 0
        size += int(n)
        previous = int(store)
    ends.append(previous)
    return np.asarray(ends, dtype="int64")


def _typed(batch: pd.DataFrame, target: str) -> pd.DataFrame:
    """A batch with the columns `prepare` and `build_features` read, typed as they type them
    (element by element, so doing it here first changes nothing they compute)."""
    import pandas as pd

    from .features import normalise_columns, parse_dates, parse_flags

    frame = normalise_columns(batch)
    out = {"date": parse_dates(frame["date"]), "store": _store_ids(frame["store"])}
    if target in frame.columns:
        out[target] = pd.to_numeric(frame[target], errors="coerce").astype("float64")
    if "isHoliday" in frame.columns:
        out["isHoliday"] = parse_flags(frame["isHoliday"])
    if "storeType" in frame.columns:
        kinds = frame["storeType"]
        out["storeType"] = kinds.where(kinds.isna(), kinds.astype(str)).astype(object)
    if "storeSize" in frame.columns:
        out["storeSize"] = pd.to_numeric(frame["storeSize"], errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def _spill(batches: Iterator[pd.DataFrame], ends: Any, target: str, root: Path) -> list[Path]:
    """Each store range's rows, in the data set's order, into an Arrow file of its own."""
    import numpy as np
    import pyarrow as pa

    writers: dict[int, Any] = {}
    schema = None
    try:
        for batch in batches:
            if not len(batch):
                continue
            table = pa.Table.from_pandas(_typed(batch, target), preserve_index=False)
            if schema is None:
                schema = table.schema
            table = table.cast(schema)
            which = np.searchsorted(ends, table.column("store").to_numpy())
            order = np.argsort(which, kind="stable")
            sorted_which = which[order]
            cuts = np.flatnonzero(np.r_[True, sorted_which[1:] != sorted_which[:-1]])
            taken = table.take(pa.array(order))
            for start, stop in zip(cuts, np.r_[cuts[1:], len(order)]):
                k = int(sorted_which[start])
                if k not in writers:
                    writers[k] = pa.ipc.new_file(str(root / f"{k:06d}.arrow"), schema)
                writers[k].write_table(taken.slice(start, stop - start))
    finally:
        for writer in writers.values():
            writer.close()
    if not writers:   # no rows: one empty piece, so the output still has its columns
        import pandas as pd

        empty = _typed(pd.DataFrame({"date": pd.Series([], dtype="datetime64[ns]"),
                                     "store": pd.Series([], dtype="int64")}), target)
        table = pa.Table.from_pandas(empty, preserve_index=False)
        with pa.ipc.new_file(str(root / "000000.arrow"), table.schema) as writer:
            writer.write_table(table)
        return [root / "000000.arrow"]
    return [root / f"{k:06d}.arrow" for k in sorted(writers)]


def _pieces(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A range's rows: whole when they fit in a chunk; else (one store with more rows than a
    chunk) in pieces of `chunk_rows` rows in date order, when its rows came in date order (as
    they do from a file sorted by date); else whole, as it must be sorted first."""
    import numpy as np
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        table = reader.read_all()
        if table.num_rows <= chunk_rows:
            yield table.to_pandas()
            return
        days = table.column("date").to_numpy().astype("datetime64[D]").astype("int64")
        if not (days[1:] > days[:-1]).all():
            yield table.to_pandas()   # out of date order: sorted whole (the store's size bounds it)
            return
        for start in range(0, table.num_rows, chunk_rows):
            yield table.slice(start, chunk_rows).to_pandas()


class _ChunkScorer:
    """Scores pieces given in (store, date) order: carries each store's recent rows from piece
    to piece, and keeps inference batches aligned with the whole-file path's."""

    def __init__(self, model: RetailSalesModel, target: str, device: Any, batch_size: int) -> None:
        self.model, self.target, self.device, self.batch_size = model, target, device, batch_size
        self.carry: Optional[pd.DataFrame] = None     # prepared rows of the last store fed
        self.pending: list[tuple[Any, pd.DataFrame]] = []   # (inputs, date/store/current) waiting
        self.pending_rows = 0
        self.net = None

    def feed(self, piece: pd.DataFrame) -> Iterator[pd.DataFrame]:
        from .history import features_with_history
        from .features import prepare

        raw = prepare(piece)
        raw = raw[[c for c in raw.columns if c in SCHEMA or c == self.target]]
        context = None
        if self.carry is not None and len(raw) and int(raw["store"].iat[0]) == int(self.carry["store"].iat[-1]):
            if raw["date"].iat[0] <= self.carry["date"].iat[-1]:
                raise ConfigError("Retail data has more than one row for the same store and date")
            context = self.carry
        if len(raw):
            stores = raw["store"].to_numpy()
            history = self.model.history_for(int(stores[0]), int(stores[-1]))
        else:
            history = self.model.history.iloc[0:0]
        frame = features_with_history(raw, history, self.target, context=context)
        self.carry = _recent_rows(raw if context is None else _joined(context, raw))
        if not len(frame) and self.pending_rows:
            return
        x = self.model.standardise(frame, self.device)
        meta = frame[["date", "store"]].assign(current=frame[self.target].to_numpy(dtype="float64"))
        self.pending.append((x, meta))
        self.pending_rows += len(frame)
        whole = self.pending_rows // self.batch_size * self.batch_size
        if whole:
            yield from self._predict(whole)

    def finish(self) -> Iterator[pd.DataFrame]:
        if self.pending:
            yield from self._predict(self.pending_rows)

    def _predict(self, rows: int) -> Iterator[pd.DataFrame]:
        import numpy as np
        import pandas as pd
        import torch

        from .model import MAX_LOG_RATIO

        x = _rows_joined([p[0] for p in self.pending])
        meta = pd.concat([p[1] for p in self.pending], ignore_index=True) \
            if len(self.pending) > 1 else self.pending[0][1].reset_index(drop=True)
        if self.net is None:
            self.model.net.to(self.device).eval()
            with torch.inference_mode():
                self.net = self.model.net.mean_predictor()
        out = torch.empty(rows, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            for start in range(0, rows, self.batch_size):
                out[start:start + self.batch_size] = self.net(
                    x[start:min(rows, start + self.batch_size)]).clamp_(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        log_ratio = out.cpu().numpy().astype("float64")
        current = meta["current"].to_numpy(dtype="float64")[:rows]
        with np.errstate(invalid="ignore"):
            prediction = np.where(current > 0, current * np.exp(log_ratio), np.nan)
        done = meta.iloc[:rows]
        yield pd.DataFrame({"date": done["date"].to_numpy(), "store": done["store"].to_numpy(),
                            "prediction": prediction})
        rest = self.pending_rows - rows
        self.pending = [(x[rows:], meta.iloc[rows:].reset_index(drop=True))] if rest else []
        self.pending_rows = rest


def _rows_joined(parts: list[Any]) -> Any:
    """Input rows of several pieces as one tensor in the pieces' memory layout: pandas hands the
    standardised inputs over column-major, and a matmul over a column-major batch rounds
    differently from one over a row-major copy of it (another kernel), so a plain cat would
    change the scores in the last bits."""
    import torch

    if len(parts) == 1:
        return parts[0]
    if all(p.dim() == 2 and p.stride(0) == 1 and p.size(1) > 1 for p in parts):
        return torch.cat([p.t() for p in parts], dim=1).t()
    return torch.cat(parts)


def _joined(context: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return pd.concat([context, raw], ignore_index=True)


def _recent_rows(raw: pd.DataFrame) -> Optional[pd.DataFrame]:
    """The rows of the last store in `raw` (prepared, sorted) that a later row of that store may
    look back to: those within LOOKBACK_WEEKS of its last date."""
    import pandas as pd

    if not len(raw):
        return None
    stores = raw["store"].to_numpy()
    dates = raw["date"]
    last = dates.iat[-1]
    keep = (stores == stores[-1]) & (dates >= last - pd.Timedelta(weeks=LOOKBACK_WEEKS)).to_numpy()
    return raw[keep].reset_index(drop=True)


class ParquetScoresWriter:
    """Scores appended to a Parquet file row group by row group, in the format write_dataset
    gives a whole frame (pandas metadata, snappy); the file appears at its target only when
    `commit` moves it there, so a failed run leaves the target as it was."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.writer: Any = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.tmp), table.schema, compression="snappy")
        self.writer.write_table(table.cast(self.writer.schema))
        self.rows += len(frame)

    def close(self) -> Path:
        if self.writer is not None:
            self.writer.close()
        return self.tmp

    def discard(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:   # already failing: the first error is the one to report
                pass
        self.tmp.unlink(missing_ok=True)


def commit(scores: StreamedScores) -> Path:
    os.replace(scores.written, scores.target)
    return scores.target
