"""The retail-sales forecaster: a bagged ensemble of small residual MLPs on scale-free features.

Each network predicts log(next week / this week) from log-ratio features (last year's same-week
move is the strongest); the forecast is this week's sales times exp(mean of the members). The
members are trained together as one batched model (weights stacked on a leading member axis), so
an ensemble of n costs far less than n trainings. This module imports torch: import it lazily.
"""
from __future__ import annotations

import json
import math
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import ConfigError

FORMAT_VERSION = 1
MAX_LOG_RATIO = 2.0  # a week-on-week factor beyond e^2 is not a forecast but a bug; clamp it
DEFAULT_BATCH_SIZE = 4096  # rows per inference batch where none is sized from the model and cache
HISTORY_ROW_GROUP = 1 << 16


def torch_device(device: str, threads: int | None) -> torch.device:
    """The torch device a run asked for (its threads set first); a ConfigError when torch does not
    know it or CUDA is asked for and not available."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
    try:
        found = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device {device!r}: {exc}") from exc
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {device!r} requested but CUDA is not available to torch")
    return found


def cpu_batch_rows(members: int, hidden_size: int, threads: int | None) -> int:
    """Rows per CPU inference batch: those whose hidden activations (members x hidden float32 a
    row) take about twice a core's L2 cache per torch thread, a power of two in 256..16384. Past
    that each layer's output spills to the shared L3 and memory: measured on 1 MiB L2 cores with
    8 x 64 activations (2 KiB a row), 1024-row batches take 0.87 s of CPU for 429,000 rows and
    one thread, 8192-row ones 1.2-1.3 s."""
    row_bytes = max(1, members * hidden_size) * 4
    rows = 2 * _l2_cache_bytes() * max(1, threads or 1) // row_bytes
    return 1 << min(14, max(8, rows.bit_length() - 1 if rows else 8))


_L2_BYTES: list[int] = []


def _l2_cache_bytes() -> int:
    """A core's L2 cache (Linux sysfs; 1 MiB where it is not said)."""
    if not _L2_BYTES:
        found = 1 << 20
        try:
            for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
                if (index / "level").read_text().strip() == "2":
                    text = (index / "size").read_text().strip().upper()
                    unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
                    found = int(text.rstrip("KM")) * unit
                    break
        except (OSError, ValueError):
            pass
        _L2_BYTES.append(found)
    return _L2_BYTES[0]


class BaggedMLP(nn.Module):
    """`members` independent MLPs with a linear skip, evaluated in one batched matmul per layer."""

    def __init__(self, n_inputs: int, hidden_size: int, depth: int, members: int) -> None:
        super().__init__()
        self.n_inputs, self.hidden_size, self.depth, self.members = n_inputs, hidden_size, depth, members
        sizes = [n_inputs] + [hidden_size] * depth + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound)))
        self.skip = nn.Parameter(torch.zeros(members, n_inputs, 1))
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, inputs) -> (members, batch) log-ratio predictions."""
        return members_forward(x, list(self.weights), list(self.biases), self.skip)

    @torch.no_grad()
    def mean_predictor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function (batch, inputs) -> (batch,): the mean over members of `forward`, for
        inference. The members' first layers run as one matmul ((inputs, members * hidden)), and
        the last layers and skips, being linear, are folded into the mean: a few wide kernel calls
        instead of one narrow batched one per layer. Equal to `forward(x).mean(0)` up to float
        rounding; weights are read now, so make a new one after training further.

        The hidden activations of a batch go to buffers made on the first call and reused by the
        later ones (the activation applied in place): fresh ones of megabytes per batch are
        handed back to the system and faulted in again by the allocator, which cost a CPU scoring
        run as much system time as its whole forward pass."""
        m = self.members
        w = [p.detach() for p in self.weights]
        b = [p.detach() for p in self.biases]
        w_first = w[0].permute(1, 0, 2).reshape(self.n_inputs, -1).contiguous()
        b_first = b[0].reshape(-1).contiguous()
        skip = self.skip.detach().squeeze(-1).mean(0)                   # (inputs,)
        if self.depth == 0:  # linear members: the first layer is the last
            def linear(x: torch.Tensor) -> torch.Tensor:
                return torch.addmm(b_first, x, w_first).mean(1) + x @ skip
            return linear
        middle = [(wi.contiguous(), bi.contiguous()) for wi, bi in zip(w[1:-1], b[1:-1])]
        w_last = (w[-1] / m).contiguous()                               # (members, hidden, 1)
        b_last = b[-1].mean()
        width = w_first.shape[1]                                        # members * hidden
        # (first layer, then two middle layers' outputs in turn): flat, cut to each batch's rows;
        # one set per thread, so that threads may share the predictor
        local = threading.local()

        def predict(x: torch.Tensor) -> torch.Tensor:
            n = len(x)
            buffers = local.__dict__.setdefault("buffers", [])
            if not buffers or buffers[0].numel() < n * width or buffers[0].dtype != x.dtype \
                    or buffers[0].device != x.device:
                with torch.inference_mode(False):   # normal tensors: writable in and out of it
                    buffers[:] = [torch.empty(n * width, dtype=x.dtype, device=x.device)
                                  for _ in range(1 + min(2, len(middle)))]
            h = torch.addmm(b_first, x, w_first, out=buffers[0][:n * width].view(n, width))
            torch.ops.aten.gelu_(h)                                     # (batch, members * hidden)
            h = h.view(n, m, -1).transpose(0, 1)                       # (members, batch, hidden)
            for i, (wi, bi) in enumerate(middle):
                out = buffers[1 + i % 2][:n * width].view(m, n, -1)
                h = torch.ops.aten.gelu_(torch.baddbmm(bi, h, wi, out=out))
            y = torch.bmm(h, w_last).sum(0).squeeze(-1)                # (batch,)
            return y.add_(x @ skip).add_(b_last)

        return predict


def members_forward(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                    skip: torch.Tensor) -> torch.Tensor:
    """BaggedMLP.forward over its parameter tensors: (batch, inputs) -> (members, batch)."""
    h = x.unsqueeze(0).expand(len(skip), -1, -1)
    out = torch.bmm(h, skip)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b, h, w)
        if i < last:
            h = F.gelu(h)   # nn.GELU()'s exact form, as BaggedMLP.activation
    return (h + out).squeeze(-1)


class RetailSalesModel:
    """The network, its metadata, and `history`: the latest weeks of the target per store, for
    scoring new weeks. A loaded model reads its history file only when asked: whole through
    `history`, or a range of stores at a time through `history_for` (chunked scoring)."""

    def __init__(self, net: BaggedMLP, meta: dict[str, Any], history: pd.DataFrame | None = None,
                 *, history_file: Path | None = None, owned_folder: Path | None = None) -> None:
        self.net, self.meta = net, meta   # meta: inputs, normalisation, target, hyper-parameters
        self._history, self.history_file = history, history_file
        if owned_folder is not None:   # a freshly trained model's history: removed with the model
            weakref.finalize(self, shutil.rmtree, str(owned_folder), True)

    @property
    def history(self) -> pd.DataFrame:
        if self._history is None:
            self._history = (pd.read_parquet(self.history_file) if self.history_file is not None
                             else pd.DataFrame(columns=["store", "date"]))
        return self._history

    def history_for(self, first_store: int, last_store: int) -> pd.DataFrame:
        """The history rows of stores first_store..last_store, read from the file's row groups
        that hold them (the file is sorted by store) when the whole history is not in memory."""
        if self._history is not None or self.history_file is None:
            stores = self.history["store"]
            return self.history[(stores >= first_store) & (stores <= last_store)]
        import pyarrow.dataset as ds

        store = ds.field("store")
        table = ds.dataset(str(self.history_file), format="parquet").to_table(
            filter=(store >= first_store) & (store <= last_store))
        return table.to_pandas()

    def history_rows(self) -> int:
        """Rows of the history, from the file's metadata when it is not in memory."""
        if self._history is not None or self.history_file is None:
            return len(self.history)
        import pyarrow.parquet as pq

        return pq.ParquetFile(str(self.history_file)).metadata.num_rows

    def history_store_counts(self) -> pd.Series:
        """History rows per store (store id -> rows): what a store's features hold besides its
        own rows at most. Reads only the file's `store` column."""
        if self._history is not None or self.history_file is None:
            stores = self.history["store"]
        else:
            stores = pd.read_parquet(self.history_file, columns=["store"])["store"]
        return pd.to_numeric(stores).astype("int64").value_counts(sort=False)

    @property
    def inputs(self) -> list[str]:
        return list(self.meta["inputs"])

    def standardise(self, features: pd.DataFrame, device: torch.device) -> torch.Tensor:
        """Inputs scaled with the training statistics; a missing value becomes the training mean."""
        values = features[self.inputs]
        if not all(kind in "biuf" for kind in (dtype.kind for dtype in values.dtypes)):
            try:
                values = values.apply(pd.to_numeric, errors="raise")
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"Input features must be numeric: {exc}") from exc
        if device.type == "cuda":
            # On a GPU: copy float32 once and standardise there (float64 on 2 CPU cores is most
            # of a scoring run's time); the result differs from the CPU path by float rounding.
            x = torch.from_numpy(values.to_numpy(dtype="float32", copy=True)).to(device)
            mean = torch.as_tensor(self.meta["mean"], dtype=torch.float32, device=device)
            std = torch.as_tensor(self.meta["std"], dtype=torch.float32, device=device)
            return torch.nan_to_num_((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
        z = values.to_numpy(dtype="float64") - np.asarray(self.meta["mean"])   # a new array:
        z /= np.asarray(self.meta["std"])                                      # scaled in place
        np.nan_to_num(z, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.as_tensor(z, dtype=torch.float32, device=device)

    def predict_log_ratio(self, features: pd.DataFrame, device: torch.device,
                          batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """The mean over members of each row's predicted log(next week / this week), clamped."""
        self.net.to(device).eval()
        x = self.standardise(features, device)
        out = torch.empty(len(x), dtype=torch.float32, device=device)
        with torch.inference_mode():
            predict = self.net.mean_predictor()
            for start in range(0, len(x), batch_size):
                out[start:start + batch_size] = predict(x[start:start + batch_size]).clamp_(
                    -MAX_LOG_RATIO, MAX_LOG_RATIO)
        return out.cpu().numpy().astype("float64")

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, directory / "model.pt")
        (directory / "model.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        # Row groups of 64k rows (sorted by store): chunked scoring reads the stores it needs.
        if self._history is None and self.history_file is not None:   # written so already
            shutil.copyfile(self.history_file, directory / "history.parquet")
        else:
            self.history.to_parquet(directory / "history.parquet", index=False,
                                    row_group_size=HISTORY_ROW_GROUP)

    @classmethod
    def load(cls, directory: Path, device: torch.device) -> RetailSalesModel:
        meta_path = directory / "model.json"
        if not meta_path.exists():
            raise ConfigError(f"No retail-sales model in {directory}: model.json is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"Model in {directory} has format {meta.get('format_version')!r}; "
                              f"this engine reads format {FORMAT_VERSION}")
        hp = meta["hyperparameters"]
        net = BaggedMLP(len(meta["inputs"]), hp["hidden_size"], hp["max_depth"], hp["n_estimators"])
        state = torch.load(directory / "model.pt", map_location=device, weights_only=True)
        net.load_state_dict(state)
        history_file = directory / "history.parquet"
        if not history_file.is_file():
            raise ConfigError(f"No retail-sales model in {directory}: history.parquet is missing")
        return cls(net=net.to(device), meta=meta, history_file=history_file)


def fit(x: np.ndarray, y: np.ndarray, *, hidden_size: int, depth: int, members: int, epochs: int,
        batch_size: int, learning_rate: float, weight_decay: float, seed: int, device: torch.device,
        on_epoch: Callable[[int, float, BaggedMLP], None] | None = None,
        on_batch: Callable[[int], None] | None = None, precision: str = "fp32",
        compile: bool = False) -> BaggedMLP:
    """Train on standardised inputs `x` and log-ratio targets `y` with an L1 loss (which is close
    to the MAPE it is judged by). Tensors are made once on the device and sliced per batch; each
    member sees the rows with its own Poisson(1) bootstrap weights (bagging). `on_epoch(epoch,
    mean loss, net)` runs after each epoch, `on_batch(rows)` after each optimiser step.

    On CUDA nothing in the inner loop waits for the device: batches are index slices of device
    tensors, the epoch's loss is summed on the device and read once per epoch. `precision="bf16"`
    runs the forward pass under bfloat16 autocast; `compile=True` runs it through torch.compile."""
    torch.manual_seed(seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    net = BaggedMLP(x.shape[1], hidden_size, depth, members).to(device)
    # On the CPU a float32 `x` (a memory map of the matrix file too) is used where it lies.
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)
    n = len(xt)
    weights = _bootstrap_weights(members, n, generator).to(device)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate,
                                                   total_steps=epochs * steps_per_epoch)
    if compile:
        forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(net)
    else:   # the parameters gathered once: a Module call and its ParameterList lookups per step
        layers = (list(net.weights), list(net.biases), net.skip)   # cost 2% of a 256-row step
        def forward(x: torch.Tensor) -> torch.Tensor:
            return members_forward(x, *layers)
    autocast = _autocast(device, precision)
    net.train()
    # On CUDA each epoch's order is drawn on the device (no host work or copy between epochs);
    # one seed gives one order per device type, so CPU and CUDA runs see different batches.
    device_generator = (torch.Generator(device=device).manual_seed(seed)
                        if device.type == "cuda" else None)
    for epoch in range(epochs):
        if device_generator is not None:
            order = torch.randperm(n, generator=device_generator, device=device)
        else:
            order = torch.randperm(n, generator=generator)
        total = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            w = weights[:, idx].float()
            with autocast:
                predicted = forward(xt[idx])
            loss = (w * (predicted.float() - yt[idx]).abs()).sum() / w.sum().clamp(min=1.0)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.detach()
            if on_batch is not None:
                on_batch(len(idx))
        if on_epoch is not None:
            on_epoch(epoch, float(total) / steps_per_epoch, net)
    return net.eval()


def _bootstrap_weights(members: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(members, n) Poisson(1) draws as uint8 (a quarter of float32's bytes; a draw above 255
    has a probability below 1e-500), drawn a block at a time: torch draws them one by one in
    order, so the values are those of one (members, n) draw, without its two float32 tensors."""
    weights = torch.ones(members, n, dtype=torch.uint8)
    if members > 1:
        flat = weights.view(-1)
        block = 1 << 20
        for start in range(0, len(flat), block):
            stop = min(len(flat), start + block)
            flat[start:stop] = torch.poisson(torch.ones(stop - start), generator=generator)
    return weights


def _autocast(device: torch.device, precision: str) -> Any:
    """The autocast context of a precision: bf16 under torch.autocast, fp32 none."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ConfigError(f"precision must be fp32 or bf16, got {precision!r}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision=bf16 asked, but {torch.cuda.get_device_name(device)} has no "
                          "bfloat16 support; use precision=fp32")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def configure_matmul(device: torch.device, tf32: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (a process-wide torch setting)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.allow_tf32 = bool(tf32)
