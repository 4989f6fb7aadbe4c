"""The rows a retail-sales train run learns from, gathered on disk a range of stores at a time.

Each input column, the labels and the current values are appended to files of their own as the
feature frames of the ranges come (one range in memory at a time); the statistics are then read
back in fixed blocks of rows, and the standardised inputs written to one float32 matrix file that
the torch loop reads through a memory map. So the feature matrix is never held in anonymous
memory, and every number depends only on the concatenated rows, never on where the ranges were
cut: a whole frame (one range) and any chunking give the same model, bit for bit. The stores'
recent history goes to a Parquet file the model reads as it needs it.

A whole frame that is already in memory (the data set fitted the memory budget) is gathered in
memory instead (`in_memory=True`): the same columns as arrays, the matrix as an array, the history
as a frame; the same numbers by the same block-wise arithmetic, with no file written at all.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

from .model import HISTORY_ROW_GROUP

BLOCK_ROWS = 1 << 18   # rows read back at a time (2 MB a float64 column)


class _Columns:
    """float64 columns, each appended to a file of its own, read back a block of rows at a time."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{i:03d}.f64" for i in range(len(names))]
        self.files: list[Any] = [open(p, "wb") for p in self.paths]
        self.rows = 0

    def append(self, columns: list[np.ndarray]) -> None:
        for fh, values in zip(self.files, columns):
            np.ascontiguousarray(values, dtype="float64").tofile(fh)
        self.rows += len(columns[0]) if columns else 0

    def close(self) -> None:
        for fh in self.files:
            fh.close()

    def read(self, column: int, start: int, stop: int) -> np.ndarray:
        return np.fromfile(self.paths[column], dtype="float64", count=stop - start, offset=start * 8)

    def blocks(self, column: int) -> Iterable[np.ndarray]:
        for start in range(0, self.rows, BLOCK_ROWS):
            yield self.read(column, start, min(self.rows, start + BLOCK_ROWS))


class _MemoryColumns(_Columns):
    """_Columns held as arrays: appended pieces joined once, read back as views."""

    def __init__(self, names: list[str]) -> None:
        self.paths: list[Path] = []
        self.parts: list[list[np.ndarray]] = [[] for _ in names]
        self.joined: list[Optional[np.ndarray]] = [None] * len(names)
        self.rows = 0

    def append(self, columns: list[np.ndarray]) -> None:
        for parts, values in zip(self.parts, columns):
            parts.append(np.ascontiguousarray(values, dtype="float64"))
        self.rows += len(columns[0]) if columns else 0

    def close(self) -> None:
        pass

    def read(self, column: int, start: int, stop: int) -> np.ndarray:
        if self.joined[column] is None:
            parts = self.parts[column]
            self.joined[column] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self.parts[column] = []
        return self.joined[column][start:stop]

    def drop(self, column: int) -> None:
        self.parts[column], self.joined[column] = [], None


def _mean_std(columns: _Columns, column: int) -> tuple[float, float]:
    """A column's mean and (population) standard deviation, summed a block at a time: pairwise
    within a block, exactly (fsum) across blocks, so the result is that of the rows alone."""
    n = columns.rows
    mean = math.fsum(float(np.sum(block)) for block in columns.blocks(column)) / n
    square = math.fsum(float(np.sum(np.square(block - mean))) for block in columns.blocks(column))
    return mean, math.sqrt(square / n)


class TrainingSet:
    """The training rows' standardised inputs (`x`, a read-only float32 memory map of rows x
    inputs), log-ratio targets `y` (float32), the inputs' `mean` and `std`, `naive_scale`, the
    validation rows (if asked for) and the history file. `close()` removes the matrix files; the
    history file's folder is handed to the model (`take_history`)."""

    def __init__(self, params: Any, work_dir: Path, *, validation: bool, in_memory: bool = False) -> None:
        from .schema import label_column

        self.params, self.target, self.label = params, params.target, label_column(params.target)
        self.checked = params.label_column or self.label
        self.in_memory = in_memory
        self.folder: Optional[Path] = None
        self.history_dir: Optional[Path] = None
        self.history_file: Optional[Path] = None
        self.history: Optional[pd.DataFrame] = None   # in memory: the history as a frame
        if not in_memory:
            self.folder = Path(tempfile.mkdtemp(prefix=".retail-train-", dir=work_dir))
            self.history_dir = Path(tempfile.mkdtemp(prefix=".retail-history-", dir=work_dir))
            self.history_file = self.history_dir / "history.parquet"
        self.want_validation = validation
        self.inputs: list[str] = []
        self.train: Optional[_Columns] = None        # inputs, then label, then current
        self.validation_columns: Optional[_Columns] = None   # inputs, then current, then actual
        self.has_validation = False
        self._history_writer: Any = None
        self._history_parts: list[Any] = []
        self._history_rows = 0
        self.rows = 0
        self.x: Any = None
        self.y: Any = None
        self.mean = self.std = np.zeros(0)
        self.naive_scale = float("nan")

    # --- gathering ------------------------------------------------------------------------

    @classmethod
    def gather(cls, frames: Iterable[pd.DataFrame], params: Any, work_dir: Path, *,
               validation: bool, in_memory: bool = False) -> "TrainingSet":
        """From feature frames of whole stores, in store order (one frame: the whole data)."""
        data = cls(params, work_dir, validation=validation, in_memory=in_memory)
        try:
            for frame in frames:
                data.add(frame)
                del frame
            data.finish()
        except BaseException:
            close = getattr(frames, "close", None)
            if close is not None:   # a generator of ranges: its spill files go now, not at GC
                close()
            data.close()
            data.discard_history()
            raise
        return data

    def add(self, frame: pd.DataFrame) -> None:
        """One feature frame's training rows, validation rows and history, onto disk."""
        from .features import expand_input_features

        params, target, label = self.params, self.target, self.label
        if self.train is None:
            self.inputs = expand_input_features(params.input_feature_names(), frame.columns)
            self.train = self._columns("train", self.inputs + ["label", "current"])
            self.has_validation = self.want_validation and self.checked in frame.columns
            if self.has_validation:
                self.validation_columns = self._columns("validation", self.inputs + ["current", "actual"])
        dates = frame["date"]
        positive = (frame[target] > 0).to_numpy(dtype=bool)
        rows = frame[label].notna().to_numpy(dtype=bool) & positive
        if params.train_start is not None:
            rows &= (dates >= pd.Timestamp(params.train_start)).to_numpy(dtype=bool)
        if params.train_end is not None:
            rows &= (dates <= pd.Timestamp(params.train_end)).to_numpy(dtype=bool)
        values = [_numeric(frame[c]) for c in self.inputs]
        complete = rows.copy()
        for column in values:
            complete &= ~np.isnan(column)
        self.train.append([v[complete] for v in values]
                          + [frame[label].to_numpy(dtype="float64")[complete],
                             frame[target].to_numpy(dtype="float64")[complete]])
        if self.validation_columns is not None:   # the rows EpochValidation judges
            picked = frame[self.checked].notna().to_numpy(dtype=bool) & positive
            if params.validation_start is not None:
                picked &= (dates >= pd.Timestamp(params.validation_start)).to_numpy(dtype=bool)
            self.validation_columns.append(
                [v[picked] for v in values] + [frame[target].to_numpy(dtype="float64")[picked],
                                               frame[self.checked].to_numpy(dtype="float64")[picked]])
        del values
        self._add_history(frame)

    def _columns(self, name: str, names: list[str]) -> _Columns:
        if self.in_memory:
            return _MemoryColumns(names)
        assert self.folder is not None
        return _Columns(self.folder / name, names)

    def _add_history(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .history import recent_history

        table = pa.Table.from_pandas(recent_history(frame, self.target), preserve_index=False)
        if self.in_memory:   # through Arrow as the file's rows are, so the frame is the file's
            self._history_parts.append(table if not self._history_parts
                                       else table.cast(self._history_parts[0].schema))
            return
        if self._history_writer is None:
            self._history_writer = pq.ParquetWriter(str(self.history_file), table.schema,
                                                    compression="snappy")
        self._history_parts.append(table.cast(self._history_writer.schema))
        self._history_rows += table.num_rows
        if self._history_rows >= HISTORY_ROW_GROUP:
            self._flush_history(final=False)

    def _flush_history(self, *, final: bool) -> None:
        """Row groups of HISTORY_ROW_GROUP rows (the rest at the end), as save writes them."""
        import pyarrow as pa

        if not self._history_parts:
            return
        table = pa.concat_tables(self._history_parts)
        whole = table.num_rows if final else table.num_rows // HISTORY_ROW_GROUP * HISTORY_ROW_GROUP
        if whole or (final and table.num_rows == 0):
            self._history_writer.write_table(table.slice(0, whole), row_group_size=HISTORY_ROW_GROUP)
        rest = table.slice(whole)
        self._history_parts = [rest] if rest.num_rows else []
        self._history_rows = rest.num_rows

    # --- finishing ------------------------------------------------------------------------

    def finish(self) -> None:
        """Statistics, the standardised float32 matrix and the targets, read back a block at a
        time; the float64 training columns are removed once the matrix is written."""
        if self._history_writer is not None:
            self._flush_history(final=True)
            self._history_writer.close()
            self._history_writer = None
        if self.in_memory and self._history_parts:
            import pyarrow as pa

            self.history = pa.concat_tables(self._history_parts).to_pandas()
            self._history_parts = []
        if self.train is None:
            _no_data()
        self.train.close()
        if self.validation_columns is not None:
            self.validation_columns.close()
        train, k = self.train, len(self.inputs)
        self.rows = n = train.rows
        if not n:
            return
        stats = [_mean_std(train, j) for j in range(k)]
        self.mean = np.array([m for m, _ in stats], dtype="float64")
        std = np.array([s for _, s in stats], dtype="float64")
        std[~(std > 1e-12)] = 1.0
        self.std = std
        self.x = self._matrix_in_memory(n, k) if self.in_memory else self._matrix_file(n, k)
        y = np.empty(n, dtype="float32")
        naive = []
        for start in range(0, n, BLOCK_ROWS):
            stop = min(n, start + BLOCK_ROWS)
            label, current = train.read(k, start, stop), train.read(k + 1, start, stop)
            y[start:stop] = np.log(label / current)
            naive.append(float(np.sum(np.abs(label - current))))
        self.naive_scale = math.fsum(naive) / n
        self.y = y
        for path in train.paths:
            path.unlink()

    def _matrix_in_memory(self, n: int, k: int) -> np.ndarray:
        """The standardised float32 matrix as an array, each float64 column freed once written."""
        train = self.train
        assert isinstance(train, _MemoryColumns)
        x = np.empty((n, k), dtype="float32")
        for j in range(k):
            x[:, j] = (train.read(j, 0, n) - self.mean[j]) / self.std[j]
            train.drop(j)
        return x

    def _matrix_file(self, n: int, k: int) -> np.ndarray:
        """The standardised float32 matrix written a block at a time, read back as a memory map."""
        assert self.folder is not None and self.train is not None
        matrix = self.folder / "x.f32"
        with open(matrix, "wb") as fh:
            for start in range(0, n, BLOCK_ROWS):
                stop = min(n, start + BLOCK_ROWS)
                block = np.empty((stop - start, k), dtype="float32")
                for j in range(k):
                    block[:, j] = (self.train.read(j, start, stop) - self.mean[j]) / self.std[j]
                block.tofile(fh)
        # Copy-on-write: torch wants a writable array; nothing writes, so the pages stay the file's.
        return np.memmap(matrix, dtype="float32", mode="c", shape=(n, k))

    def epoch_validation(self, names: list[str], device: torch.device, sample_rows: int = 0,
                         seed: int = 0) -> Any:
        """EpochValidation of the validation rows (None without rows, metrics or the ask); with
        `sample_rows` below their number, of that many of them drawn at random with `seed`
        (positions in the gathered order, so any chunking draws the same rows)."""
        from .validation import EpochValidation

        columns, k = self.validation_columns, len(self.inputs)
        if columns is None or not columns.rows or not names:
            return None
        total = columns.rows
        picked = sample_positions(total, sample_rows, seed)
        n = total if picked is None else len(picked)
        z = np.empty((n, k), dtype="float32")
        done = 0
        for start in range(0, total, BLOCK_ROWS):
            stop = min(total, start + BLOCK_ROWS)
            rows = None if picked is None else picked[(picked >= start) & (picked < stop)] - start
            size = stop - start if rows is None else len(rows)
            for j in range(k):
                values = columns.read(j, start, stop)
                z[done:done + size, j] = np.nan_to_num(
                    ((values if rows is None else values[rows]) - self.mean[j]) / self.std[j],
                    nan=0.0, posinf=0.0, neginf=0.0)
            done += size
        current, actual = columns.read(k, 0, total), columns.read(k + 1, 0, total)
        if picked is not None:
            current, actual = current[picked], actual[picked]
        return EpochValidation.of_standardised(
            z, current, actual, naive_scale=self.naive_scale, names=names, device=device,
            total_rows=total)

    def take_history(self) -> tuple[Optional[Path], Optional[Path]]:
        """(the history file, its folder): the caller now owns the folder (both None in memory:
        the history is `history`)."""
        folder, self.history_dir = self.history_dir, None
        return self.history_file, folder

    def close(self) -> None:
        """The matrix and column files removed (the history's folder is the model's)."""
        self.x = None
        for columns in (self.train, self.validation_columns):
            if columns is not None:
                columns.close()
        if self._history_writer is not None:
            self._history_writer.close()
            self._history_writer = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def discard_history(self) -> None:
        if self.history_dir is not None:
            shutil.rmtree(self.history_dir, ignore_errors=True)
            self.history_dir = None


def sample_positions(total: int, sample_rows: int, seed: int) -> Optional[np.ndarray]:
    """`sample_rows` of the positions 0..total-1 drawn without replacement, in increasing order;
    None when the sample would be all of them (`sample_rows` 0 or at least `total`)."""
    if not sample_rows or sample_rows >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=sample_rows, replace=False))


def _numeric(column: pd.Series) -> np.ndarray:
    if column.dtype.kind in "biuf":
        return column.to_numpy(dtype="float64")
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64")


def _no_data() -> None:
    from runtime.errors import ConfigError

    raise ConfigError("No training data: the data set has no rows")
