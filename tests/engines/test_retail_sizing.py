"""Memory sized to the machine: the room left under a cgroup limit (v1 and v2) or MemAvailable,
the automatic whole-file / chunked choice said in the run's log, and work files that never land
in the current directory."""
from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from engines.retail_sales import RetailSalesEngine, generate_retail, sizing
from engines.retail_sales.chunked import ChunkedSource, default_chunk_rows
from engines.retail_sales.sizing import MemoryRoom, memory_room, plan
from runtime.engine import default_context

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20
FAST = {"epochs": "2", "n_estimators": "2", "hidden_size": "8", "train_start": "2010-02-12",
        "train_end": "2011-07-01", "validation_start": "2011-07-08"}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def meminfo(tmp_path):
    path = tmp_path / "meminfo"
    _write(path, "MemTotal:       25000000 kB\nMemFree:         1000000 kB\n"
                 "MemAvailable:   20971520 kB\n")   # 20 GiB: the host's, as a container sees it
    return path


def test_cgroup_v2_limit_below_available_memory_bounds_the_room(tmp_path, meminfo):
    root = tmp_path / "cgroup"
    _write(tmp_path / "self-cgroup", "0::/user.slice/run-7.scope\n")
    scope = root / "user.slice" / "run-7.scope"
    _write(scope / "memory.max", f"{2048 * MB}\n")
    _write(scope / "memory.current", f"{600 * MB}\n")
    _write(scope / "memory.stat", f"anon {400 * MB}\nfile {200 * MB}\ninactive_file {100 * MB}\n")
    _write(root / "user.slice" / "memory.max", "max\n")
    _write(root / "user.slice" / "memory.current", f"{5000 * MB}\n")
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room.bytes == (2048 - 600 + 100) * MB    # droppable page cache counts as room
    assert "cgroup v2" in room.source and "run-7.scope" in room.source and "2048 MiB" in room.source
    # a tighter limit on an ancestor applies to every cgroup below it
    _write(root / "user.slice" / "memory.max", f"{5500 * MB}\n")
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room.bytes == 500 * MB and "user.slice/memory.max" in room.source


def test_cgroup_v2_inside_a_namespace_reads_the_mount_root(tmp_path, meminfo):
    root = tmp_path / "cgroup"
    _write(tmp_path / "self-cgroup", "0::/\n")
    _write(root / "memory.max", f"{1024 * MB}\n")
    _write(root / "memory.current", f"{256 * MB}\n")
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room.bytes == 768 * MB and room.source.startswith("cgroup v2")
    _write(root / "memory.max", "max\n")   # no limit: the machine's memory
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room == MemoryRoom(20 << 30, "MemAvailable")


def test_cgroup_v1_limit_and_usage(tmp_path, meminfo):
    root = tmp_path / "cgroup"
    _write(tmp_path / "self-cgroup", "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/\n")
    group = root / "memory" / "docker" / "abc"
    _write(group / "memory.limit_in_bytes", f"{2048 * MB}\n")
    _write(group / "memory.usage_in_bytes", f"{700 * MB}\n")
    _write(group / "memory.stat", f"cache {300 * MB}\nrss {400 * MB}\n"
                                  f"hierarchical_memory_limit {2048 * MB}\n"
                                  f"total_inactive_file {50 * MB}\n")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")   # the root: none
    _write(root / "memory" / "memory.usage_in_bytes", f"{9000 * MB}\n")
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room.bytes == (2048 - 700 + 50) * MB
    assert room.source.startswith("cgroup v1") and "docker/abc" in room.source
    # a parent's limit shows in the child's hierarchical_memory_limit
    _write(group / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(group / "memory.stat", f"hierarchical_memory_limit {1024 * MB}\ntotal_inactive_file 0\n")
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room.bytes == (1024 - 700) * MB
    # unlimited all the way up: MemAvailable
    _write(group / "memory.stat", "hierarchical_memory_limit 9223372036854771712\n")
    room = memory_room(meminfo=meminfo, cgroup_root=root, proc_cgroup=tmp_path / "self-cgroup")
    assert room == MemoryRoom(20 << 30, "MemAvailable")


def test_available_memory_below_the_limit_wins(tmp_path):
    _write(tmp_path / "meminfo", "MemAvailable:     524288 kB\n")   # 512 MiB left on the machine
    root = tmp_path / "cgroup"
    _write(tmp_path / "self-cgroup", "0::/\n")
    _write(root / "memory.max", f"{8192 * MB}\n")
    _write(root / "memory.current", "0\n")
    room = memory_room(meminfo=tmp_path / "meminfo", cgroup_root=root,
                       proc_cgroup=tmp_path / "self-cgroup")
    assert room == MemoryRoom(512 * MB, "MemAvailable")


def test_chunk_rows_follow_the_budget_and_the_measured_row_bytes():
    small = default_chunk_rows(1200 * MB)   # 2 GB container with the libraries loaded
    assert small == int(1200 * MB * sizing.BUDGET_SHARE) // sizing.SCORE_ROW_BYTES
    capped = sizing.MAX_CHUNK_BYTES // sizing.SCORE_ROW_BYTES
    assert default_chunk_rows(64 << 30) == default_chunk_rows(16 << 30) == capped
    assert default_chunk_rows(1 * MB) == sizing.MIN_CHUNK_ROWS
    # a chunk's peak above the libraries stays within the cap, whatever the machine
    assert capped * sizing.SCORE_ROW_BYTES <= sizing.MAX_CHUNK_BYTES


def test_plan_reads_whole_when_the_rows_fit_and_says_why():
    room = MemoryRoom(1000 * MB, "cgroup v2 /sys/fs/cgroup/memory.max (2048 MiB, 1048 MiB used)")
    whole = plan(50_000, whole_row_bytes=5000, chunk_row_bytes=1000, room=room)
    assert whole.whole and whole.reason.startswith("whole file: 50,000 rows")
    assert "cgroup v2" in whole.reason
    chunked = plan(500_000, whole_row_bytes=5000, chunk_row_bytes=1000, room=room)
    assert not chunked.whole and chunked.chunk_rows == room.budget() // 1000
    assert chunked.reason.startswith(f"chunks of {chunked.chunk_rows:,} rows")


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sizing-data")
    generate_retail(seed=3, stores=6, weeks=120).to_parquet(folder / "train.parquet", index=False)
    return folder


def test_the_automatic_choice_is_said_in_the_log(data_files, tmp_path, caplog, monkeypatch):
    """Unset chunk_rows: a data set that fits is read whole (the faster path), one that does not
    is chunked, and the run's log says which and why; the scores are the same either way."""
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", FAST, artifact_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="runtime.engine"):
        data = engine.load_data(ctx, str(data_files / "train.parquet"))
    assert isinstance(data, pd.DataFrame)
    assert "whole file: 720 rows" in caplog.text
    model = engine.train(ctx, engine.feature_pipeline(ctx, data))

    scores = {}
    for name, budget in (("fits", sizing.MAX_CHUNK_BYTES), ("small", 200_000)):
        monkeypatch.setattr(sizing, "MAX_CHUNK_BYTES", budget)   # 200 kB: ~40 rows a chunk
        monkeypatch.setattr(sizing, "MIN_CHUNK_ROWS", 10)
        caplog.clear()
        out = tmp_path / f"scores-{name}.parquet"
        sctx = default_context(engine, "score", {"scoringResultsDataSetId": str(out)},
                               artifact_dir=tmp_path)
        with caplog.at_level(logging.INFO, logger="runtime.engine"):
            source = engine.load_data(sctx, str(data_files / "train.parquet"))
            assert isinstance(source, ChunkedSource) and source.chunk_rows == 0
            result = engine.score(sctx, model, source)
        if engine.saves_output:
            engine.save_output(sctx, result)
            result = pd.read_parquet(out)
            engine.saves_output = False
        scores[name] = (result, caplog.text)
    whole, chunked = scores["fits"], scores["small"]
    assert "whole file: 1,344 rows" in whole[1] and "up to 624 rows of the model's history" in whole[1]
    rows = 200_000 // sizing.SCORE_ROW_BYTES   # the budget is the cap: the machine has more
    assert f"chunks of {rows:,} rows: 1,344 rows read whole would need" in chunked[1]
    pd.testing.assert_frame_equal(whole[0].reset_index(drop=True), chunked[0], check_exact=True)


@pytest.mark.parametrize("chunk_rows", ["0", "100"])
def test_a_train_from_python_leaves_no_files_in_the_current_directory(data_files, tmp_path,
                                                                       monkeypatch, chunk_rows):
    """A context without a run folder (artifact_dir: the current directory) puts its work files
    in the temporary folder; a model never saved leaves nothing behind once it is gone."""
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", {**FAST, "chunk_rows": chunk_rows})
    model = engine.train(ctx, engine.feature_pipeline(ctx, engine.load_data(
        ctx, str(data_files / "train.parquet"))))
    assert model.meta["training_rows"] > 0
    assert not list(here.iterdir())
    folder = model.history_file.parent if model.history_file is not None else None
    del model
    gc.collect()
    assert folder is None or not folder.exists()
    assert not list(here.iterdir())


# --- a real cgroup -------------------------------------------------------------------------

def _make_cgroup(limit: int) -> tuple[Path, str] | None:
    """A memory cgroup of our own with `limit` bytes (v2, else v1), or None where we may not."""
    name = f"mlrt-test-{uuid.uuid4().hex[:8]}"
    for folder, limit_file in ((Path("/sys/fs/cgroup") / name, "memory.max"),
                               (Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes")):
        if not (folder.parent / limit_file).exists() and folder.parent != Path("/sys/fs/cgroup/memory"):
            continue
        try:
            folder.mkdir()
        except OSError:
            continue
        try:
            (folder / limit_file).write_text(str(limit))
            return folder, limit_file
        except OSError:
            folder.rmdir()
    return None


_IN_CGROUP = """
import json, os, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as fh:
    fh.write(str(os.getpid()))
from engines.retail_sales.sizing import memory_room
room = memory_room()
print(json.dumps({"bytes": room.bytes, "source": room.source}))
"""


def test_the_room_of_a_process_in_a_real_cgroup():
    """A process moved into a memory cgroup of 2 GiB sees that limit, not the machine's memory."""
    made = _make_cgroup(2 << 30)
    if made is None:
        pytest.skip("cannot create a memory cgroup here (needs root and a writable cgroup mount)")
    folder, _ = made
    try:
        done = subprocess.run([sys.executable, "-c", _IN_CGROUP, str(folder)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        room = json.loads(done.stdout.strip().splitlines()[-1])
        assert room["bytes"] <= 2 << 30 and folder.name in room["source"], room
    finally:
        folder.rmdir()
