"""Hand-written baselines for bench_engines.py: the retail-sales features with groupby/shift, a bare
torch training loop, and batched forward passes (torch and numpy) of the engine's trained weights.

They compute what the engine computes, with nothing else: no validation, no parameter parsing, no
progress, no model object. They import nothing from the engine except where a value must be the
engine's own (the trained weights); the benchmark checks that both sides produce the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# Features: one groupby over stores, shifted k rows. On data without missing weeks (the synthetic
# data has none) "k rows before in the same store" is "k weeks before", which is what the engine
# looks up by (store, date - 7k days); the benchmark asserts both give the same values.

_LAGS = (*range(0, 8), 50, 51, *range(52, 60))
_STORE_TYPES = ("A", "B", "C")


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(a / b)
    out[~np.isfinite(out)] = np.nan
    return out


def hand_features(raw: pd.DataFrame, target: str = "weeklySales") -> pd.DataFrame:
    """The engine's feature frame from typed rows (datetime `date`, bool `isHoliday`)."""
    frame = raw.sort_values(["store", "date"], kind="stable").reset_index(drop=True)
    y = frame[target].to_numpy(dtype="float64")
    stores = frame["store"].to_numpy()
    grouped = pd.Series(y).groupby(stores, sort=False)
    lag = {k: grouped.shift(k).to_numpy() for k in _LAGS}
    yt = lag[0]
    frame[target] = y
    out: dict[str, np.ndarray] = {target + "Ahead": grouped.shift(-1).to_numpy()}
    for k in (1, 2, 3):
        out[f"lag{k}Ratio"] = _log_ratio(lag[k], yt)
    now = {w: (sum(lag[k] for k in range(w)) / w) for w in (4, 8)}
    year_ago = {w: (sum(lag[52 + k] for k in range(w)) / w) for w in (4, 8)}
    for w in (4, 8):
        out[f"mean{w}Ratio"] = _log_ratio(now[w], yt)
    out["lastYearNextRatio"] = _log_ratio(lag[51], yt)
    out["lastYearStep"] = _log_ratio(lag[51], lag[52])
    out["yoyRatio"] = _log_ratio(yt, lag[52])
    for w in (4, 8):
        out[f"yoy{w}Ratio"] = _log_ratio(now[w], year_ago[w])
    holiday = frame["isHoliday"].to_numpy(dtype="float64")
    out["lastYearNextHoliday"] = np.nan_to_num(
        pd.Series(holiday).groupby(stores, sort=False).shift(51).to_numpy(), nan=0.0)
    out["hasHistory"] = np.isfinite(out["lastYearNextRatio"] + out["yoy8Ratio"]).astype("float64")
    week = frame["date"].dt.isocalendar().week.to_numpy(dtype="float64")
    out["weekOfYear"] = week
    out["weekSin"] = np.sin(2 * np.pi * week / 52.0)
    out["weekCos"] = np.cos(2 * np.pi * week / 52.0)
    out["holiday"] = holiday
    kinds = frame["storeType"].to_numpy()
    for t in _STORE_TYPES:
        out[f"storeType_{t}"] = (kinds == t).astype("float64")
    out["logStoreSize"] = _log_ratio(frame["storeSize"].to_numpy(dtype="float64"), 1.0)
    return pd.concat([frame, pd.DataFrame(out, index=frame.index)], axis=1)


# --------------------------------------------------------------------------------------------
# Training: the engine's model shape (members x [inputs -> hidden x depth -> 1] + linear skip,
# GELU), its weighted L1 loss with Poisson(1) bootstrap weights, AdamW, the same batch size and
# epochs; tensors made once and sliced per batch. No learning-rate schedule, no callbacks.


def bare_train(x: np.ndarray, y: np.ndarray, *, hidden_size: int, depth: int, members: int,
               epochs: int, batch_size: int, learning_rate: float, weight_decay: float,
               seed: int) -> float:
    """Trains and returns the last epoch's mean loss (so the work cannot be skipped)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    sizes = [x.shape[1]] + [hidden_size] * depth + [1]
    params: list[torch.Tensor] = []
    weights, biases = [], []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(d_in)
        w = torch.empty(members, d_in, d_out).uniform_(-bound, bound).requires_grad_()
        b = torch.empty(members, 1, d_out).uniform_(-bound, bound).requires_grad_()
        weights.append(w)
        biases.append(b)
        params += [w, b]
    skip = torch.zeros(members, x.shape[1], 1, requires_grad=True)
    params.append(skip)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    n = len(xt)
    boot = torch.poisson(torch.ones(members, n), generator=generator)
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    last = len(weights) - 1
    loss_sum = 0.0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = torch.zeros(())
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            h = xt[idx].unsqueeze(0).expand(members, -1, -1)
            out = torch.bmm(h, skip)
            for i, (w, b) in enumerate(zip(weights, biases)):
                h = torch.baddbmm(b, h, w)
                if i < last:
                    h = F.gelu(h)
            bw = boot[:, idx]
            loss = (bw * (out + h).squeeze(-1).sub(yt[idx]).abs()).sum() / bw.sum().clamp(min=1.0)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach()
        loss_sum = float(total) / max(1, math.ceil(n / batch_size))
    return loss_sum


# --------------------------------------------------------------------------------------------
# Scoring: the trained weights, restacked for the fewest kernel calls (the first layer of every
# member in one matmul; the last layer and the skip folded into the mean over members).

MAX_LOG_RATIO = 2.0


class TorchForward:
    """mean over members of the engine's BaggedMLP, under inference_mode, in batches. With
    `reuse`, each call's hidden activations go to buffers made once per call and the activation
    is applied in place (no fresh megabytes a batch for the allocator to fault in)."""

    def __init__(self, state: dict, members: int, reuse: bool = False) -> None:
        import torch

        self.torch = torch
        self.reuse = reuse
        n_layers = sum(1 for k in state if k.startswith("weights."))
        ws = [state[f"weights.{i}"].float() for i in range(n_layers)]
        bs = [state[f"biases.{i}"].float() for i in range(n_layers)]
        self.members = members
        self.depth = n_layers - 1
        # layer 0 of all members side by side: (inputs, members*d_out)
        self.w0 = ws[0].permute(1, 0, 2).reshape(ws[0].shape[1], -1).contiguous()
        self.b0 = bs[0].reshape(-1).contiguous()
        self.hidden = ws[0].shape[2]
        self.mid = [(w.contiguous(), b.contiguous()) for w, b in zip(ws[1:-1], bs[1:-1])]
        # last layer and skip: mean over members is linear, fold it in
        self.w_last = (ws[-1] / members).contiguous()                   # (members, hidden, 1)
        self.b_last = float(bs[-1].mean())
        self.skip = (state["skip"].float().squeeze(-1).sum(0) / members).contiguous()  # (inputs,)

    def __call__(self, z: np.ndarray, batch_size: int) -> np.ndarray:
        torch = self.torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        out = torch.empty(len(x))
        m, hdim = self.members, self.hidden
        width = m * hdim
        reuse = self.reuse and self.depth > 0
        first = torch.empty(min(len(x), batch_size) * width) if reuse else None
        mid = [torch.empty(min(len(x), batch_size) * width) for _ in self.mid[:2]] if reuse else []
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = x[start:start + batch_size]
                nb = len(xb)
                if self.depth == 0:  # linear members: (x @ w0) is (nb, members)
                    h = torch.addmm(self.b0, xb, self.w0).mean(1)
                    out[start:start + nb] = (h + xb @ self.skip).clamp_(-MAX_LOG_RATIO, MAX_LOG_RATIO)
                    continue
                if reuse:
                    h = torch.ops.aten.gelu_(torch.addmm(self.b0, xb, self.w0,
                                                         out=first[:nb * width].view(nb, width)))
                    h = h.view(nb, m, hdim).transpose(0, 1)
                    for i, (w, b) in enumerate(self.mid):
                        h = torch.ops.aten.gelu_(torch.baddbmm(
                            b, h, w, out=mid[i % 2][:nb * width].view(m, nb, hdim)))
                else:
                    h = F.gelu(torch.addmm(self.b0, xb, self.w0))           # (nb, members*hidden)
                    h = h.view(nb, m, hdim).transpose(0, 1)                # (members, nb, hidden)
                    for w, b in self.mid:
                        h = F.gelu(torch.baddbmm(b, h, w))
                y = torch.bmm(h, self.w_last).sum(0).squeeze(-1)           # (nb,)
                y += xb @ self.skip
                y += self.b_last
                out[start:start + nb] = y.clamp_(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        return out.numpy().astype("float64")


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1.5e-7 (Abramowitz and Stegun 7.1.26): numpy has none and scipy is not installed."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


class NumpyForward:
    """The same fold in float32 numpy (exact-erf GELU through the approximation above)."""

    def __init__(self, state: dict, members: int) -> None:
        tf = TorchForward(state, members)
        self.members, self.hidden, self.depth = members, tf.hidden, tf.depth
        self.w0, self.b0 = tf.w0.numpy(), tf.b0.numpy()
        self.mid = [(w.numpy(), b.numpy()) for w, b in tf.mid]
        self.w_last, self.b_last, self.skip = tf.w_last.numpy(), np.float32(tf.b_last), tf.skip.numpy()

    @staticmethod
    def _gelu(h: np.ndarray) -> np.ndarray:
        return (0.5 * h) * (1.0 + _erf(h * np.float32(1 / math.sqrt(2)))).astype(np.float32)

    def __call__(self, z: np.ndarray, batch_size: int) -> np.ndarray:
        x = np.ascontiguousarray(z, dtype=np.float32)
        out = np.empty(len(x), dtype=np.float32)
        m, hdim = self.members, self.hidden
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            nb = len(xb)
            h = xb @ self.w0 + self.b0
            if self.depth == 0:
                y = h.mean(1)
            else:
                h = self._gelu(h).reshape(nb, m, hdim).transpose(1, 0, 2)
                for w, b in self.mid:
                    h = self._gelu(np.matmul(h, w) + b)
                y = np.matmul(h, self.w_last).sum(0)[:, 0]
            y = y + xb @ self.skip + self.b_last
            out[start:start + nb] = np.clip(y, -MAX_LOG_RATIO, MAX_LOG_RATIO)
        return out.astype("float64")


def standardise(features: pd.DataFrame, inputs: list[str], mean: np.ndarray,
                std: np.ndarray) -> np.ndarray:
    """The engine's input scaling (missing -> the training mean, i.e. 0), in float32."""
    values = features[inputs].to_numpy(dtype="float64")
    z = (values - mean) / std
    z[~np.isfinite(z)] = 0.0
    return z.astype(np.float32)

