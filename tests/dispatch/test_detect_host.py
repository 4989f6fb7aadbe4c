"""detect_host on this machine, and with a fake nvidia-smi on PATH."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.dispatch import detect_host

REPO = Path(__file__).resolve().parents[2]

FAKE_SMI = """#!/bin/sh
echo "0, GPU-aaaa-0000, NVIDIA H100 80GB HBM3, 81559"
echo "1, GPU-bbbb-1111, NVIDIA H100 80GB HBM3, 81559"
echo "2, GPU-cccc-2222, NVIDIA A10, 23028"
"""


def test_cpu_count_matches_affinity():
    info = detect_host()
    assert info.cpu_count == len(os.sched_getaffinity(0))


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has nvidia-smi")
def test_no_nvidia_smi_means_no_cuda():
    assert detect_host().cuda_devices == ()


def test_does_not_import_torch():
    code = "import sys; from runtime.dispatch import detect_host; detect_host(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir()
    exe.write_text(FAKE_SMI)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def test_reads_nvidia_smi(fake_smi):
    devices = detect_host().cuda_devices
    assert [(d.index, d.name, d.memory_mb) for d in devices] == [
        (0, "NVIDIA H100 80GB HBM3", 81559), (1, "NVIDIA H100 80GB HBM3", 81559), (2, "NVIDIA A10", 23028)]


def test_honours_cuda_visible_devices(fake_smi):
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-aaaa")
    devices = detect_host().cuda_devices
    # renumbered as CUDA would: the worker's cuda:0 is physical GPU 2
    assert [(d.index, d.name, d.cuda_visible_id) for d in devices] == [
        (0, "NVIDIA A10", "2"), (1, "NVIDIA H100 80GB HBM3", "GPU-aaaa")]


@pytest.mark.parametrize("mask", ["", "-1"])
def test_an_empty_mask_hides_every_gpu(fake_smi, mask):
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", mask)
    assert detect_host().cuda_devices == ()


def test_a_failing_nvidia_smi_means_no_cuda(fake_smi, tmp_path):
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert detect_host().cuda_devices == ()
