"""The retail-sales engine's speed options on the CPU (the CUDA side runs in benchmarks/bench_gpu.py
on a GPU machine): bf16 autocast trains and lands near fp32; fp32 is deterministic; bad values
are refused."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.retail_sales.model import fit  # noqa: E402
from engines.retail_sales.params import TrainParams  # noqa: E402
from runtime.errors import ConfigError  # noqa: E402


def data(n=2000, k=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    y = 0.3 * x[:, 0] - 0.2 * x[:, 1] + 0.05 * rng.normal(size=n)
    return x, y


def loss_of(net, x, y):
    with torch.no_grad():
        pred = net(torch.as_tensor(x, dtype=torch.float32)).mean(0).numpy()
    return float(np.mean(np.abs(pred - y)))


KW = dict(hidden_size=16, depth=1, members=2, epochs=4, batch_size=256, learning_rate=0.01,
          weight_decay=0.0, seed=0, device=torch.device("cpu"))


def test_fp32_is_deterministic_and_bf16_lands_close():
    x, y = data()
    a, b = fit(x, y, **KW), fit(x, y, **KW)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    epochs = []
    half = fit(x, y, **KW, precision="bf16", on_epoch=lambda e, loss, net: epochs.append(loss))
    assert len(epochs) == 4 and all(np.isfinite(epochs))
    base = loss_of(a, x, y)
    assert base < 0.2
    assert abs(loss_of(half, x, y) - base) < 0.05


def test_bad_precision_is_refused_and_params_default_to_exact_fp32():
    x, y = data(200)
    with pytest.raises(ConfigError, match="fp32 or bf16"):
        fit(x, y, **KW, precision="fp16")
    params = TrainParams()
    assert (params.precision, params.compile, params.tf32) == ("fp32", False, True)
    with pytest.raises(ValueError):
        TrainParams(precision="int8")
