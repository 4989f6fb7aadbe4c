"""Validation metrics during training: the rows `evaluate` judges (or a fixed sample of them),
scored after each epoch.

The rows and their standardised inputs are prepared once; an epoch's check is one forward pass of
the ensemble's mean predictor over them (no gradients). A validation set as large as the training
set would cost a third of an epoch each time, so the curve is drawn on a bounded sample
(`validation_sample_rows`), the same rows every epoch; the run's final metrics use every row.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import torch

from runtime.engine import Metric

from .metrics import forecast_metrics
from .model import MAX_LOG_RATIO, BaggedMLP, cpu_batch_rows

# Validation rows per forward pass: on a GPU, large; on the CPU, scoring's batch sized from the
# model's width and the cache (model.cpu_batch_rows; the same predictions as 16k-row batches, bit
# for bit, in less than half the CPU time, which matters as it runs after every epoch).
BATCH_ROWS = 1 << 14


class EpochValidation:
    def __init__(self, x: torch.Tensor, current: np.ndarray, actual: np.ndarray,
                 naive_scale: float, names: list[str], total_rows: Optional[int] = None) -> None:
        self.x, self.current, self.actual = x, current, actual
        self.naive_scale, self.names = naive_scale, names
        self.total_rows = len(x) if total_rows is None else total_rows   # before any sampling

    @property
    def rows(self) -> int:
        return len(self.x)

    @classmethod
    def build(cls, frame: pd.DataFrame, inputs: list[str], mean: np.ndarray, std: np.ndarray, *,
              target: str, label: str, start: Optional[object], naive_scale: float,
              names: list[str], device: torch.device) -> Optional["EpochValidation"]:
        """None when no row qualifies (evaluate then says why) or no metric is asked for."""
        if label not in frame.columns or not names:
            return None
        rows = frame[label].notna() & (frame[target] > 0)
        if start is not None:
            rows &= frame["date"] >= pd.Timestamp(start)
        if not rows.any():
            return None
        picked = frame.loc[rows]
        values = picked[inputs].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        return cls.from_arrays(values, picked[target].to_numpy(dtype="float64"),
                               picked[label].to_numpy(dtype="float64"), mean, std,
                               naive_scale=naive_scale, names=names, device=device)

    @classmethod
    def from_arrays(cls, values: np.ndarray, current: np.ndarray, actual: np.ndarray,
                    mean: np.ndarray, std: np.ndarray, *, naive_scale: float, names: list[str],
                    device: torch.device) -> Optional["EpochValidation"]:
        """From the validation rows' inputs, current and actual values (None without rows)."""
        if not len(values) or not names:
            return None
        z = np.nan_to_num((values - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)  # as scoring does
        return cls.of_standardised(z, current, actual, naive_scale=naive_scale, names=names,
                                   device=device)

    @classmethod
    def of_standardised(cls, z: np.ndarray, current: np.ndarray, actual: np.ndarray, *,
                        naive_scale: float, names: list[str], device: torch.device,
                        total_rows: Optional[int] = None) -> Optional["EpochValidation"]:
        """From inputs already standardised (missing values as 0); `total_rows`: how many
        validation rows these were sampled from."""
        if not len(z) or not names:
            return None
        x = torch.as_tensor(z, dtype=torch.float32, device=device)
        return cls(x, current, actual, naive_scale, names, total_rows)

    def metrics(self, net: BaggedMLP) -> list[Metric]:
        # In batches: the mean predictor's first layer is (rows, members x hidden) floats, 2 KB a
        # row with the defaults, so all validation rows at once would cost GBs at millions of rows.
        out = torch.empty(len(self.x), dtype=torch.float32, device=self.x.device)
        step = (cpu_batch_rows(net.members, net.hidden_size, torch.get_num_threads())
                if self.x.device.type == "cpu" else BATCH_ROWS)
        with torch.inference_mode():
            predict = net.mean_predictor()
            for start in range(0, len(self.x), step):
                out[start:start + step] = predict(self.x[start:start + step])
        log_ratio = out.clamp_(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        predicted = self.current * np.exp(log_ratio.cpu().numpy().astype("float64"))
        return forecast_metrics(self.actual, predicted, self.naive_scale, self.names)
