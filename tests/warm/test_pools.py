"""The one pool protocol and policy of warm workers (runtime.pools), which warm python parents and
warm Spark workers share: one set of environment variables, one retire rule, one naming of
sockets per home and kind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime import pools
from runtime.errors import ConfigError
from runtime.procs import proc_start_ticks
from warm_helpers import wait_for


@pytest.fixture
def clean_env(monkeypatch):
    for name in (pools.ENV_WARM, pools.ENV_IDLE_S, pools.ENV_MAX_RUNS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pools, "_process_policy", pools._process_policy)   # restored after
    return monkeypatch


def test_one_policy_per_process_kind_and_flag(clean_env, tmp_path):
    server = pools.policy_for(tmp_path, kind="server")
    assert (server.start, server.owned, server.idle_s, server.max_runs) == (True, True, 600.0, 200)
    assert pools.process_policy() == (True, server)   # what the Spark pool of the process follows
    cli = pools.policy_for(tmp_path, kind="cli")
    assert (cli.start, cli.owned) == (False, False)       # uses what listens; starts none to keep
    assert pools.policy_for(tmp_path, kind="cli", flag="warm").start is True
    assert pools.policy_for(tmp_path, kind="server", flag="cold") is None
    assert pools.process_policy() == (True, None)
    clean_env.setenv(pools.ENV_WARM, "1")
    clean_env.setenv(pools.ENV_IDLE_S, "3")
    clean_env.setenv(pools.ENV_MAX_RUNS, "7")
    warm = pools.policy_for(tmp_path, kind="cli")
    assert (warm.start, warm.idle_s, warm.max_runs) == (True, 3.0, 7)
    clean_env.setenv(pools.ENV_WARM, "off")
    assert pools.policy_for(tmp_path, kind="sweep") is None


def test_bad_settings_are_clear_errors(clean_env, tmp_path):
    clean_env.setenv(pools.ENV_IDLE_S, "soon")
    with pytest.raises(ConfigError, match="MLRUNTIME_WARM_IDLE_S='soon' is not a number of seconds"):
        pools.policy_for(tmp_path, kind="server")
    clean_env.setenv(pools.ENV_IDLE_S, "-1")
    with pytest.raises(ConfigError, match="must not be negative"):
        pools.policy_for(tmp_path, kind="server")
    with pytest.raises(ValueError, match="unknown process kind 'daemon'"):
        pools.policy_for(tmp_path, kind="daemon")
    with pytest.raises(ValueError, match="unknown warm worker kind 'ray'"):
        pools.socket_name(tmp_path, "ray", "k")


def test_names_share_the_home_and_differ_by_kind_and_home(tmp_path):
    python = pools.socket_name(tmp_path / "a", "python", "k")
    spark = pools.socket_name(tmp_path / "a", "spark", "k", 0)
    assert python.startswith(pools.home_prefix(tmp_path / "a"))
    assert spark.startswith(pools.home_prefix(tmp_path / "a")) and spark.endswith("spark-k-0")
    assert pools.socket_name(tmp_path / "b", "python", "k") != python
    assert not pools.private_prefix().startswith(pools.home_prefix(tmp_path / "a"))
    assert pools.describe_home(tmp_path / "nobody-here") == []


def test_lifetime_retires_after_max_runs_when_idle_and_when_its_owner_is_gone():
    life = pools.Lifetime(max_runs=2)
    assert life.served() is None
    assert life.served() == "it served 2 runs (max runs)"

    idle = pools.Lifetime(idle_s=0.2)
    assert idle.why_retire(busy=False) is None
    assert wait_for(lambda: idle.why_retire(busy=False) is not None, 5)
    assert idle.why_retire(busy=False) == "idle for 0.2 s"
    assert idle.why_retire(busy=True) is None      # a worker with a run is never idle
    idle.touch()
    assert idle.why_retire(busy=False) is None

    me = pools.parse_owner(pools.owner_arg())
    assert pools.Lifetime(owner=me).why_retire(busy=True) is None
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = proc_start_ticks(ended.pid)
    ended.wait()
    assert pools.Lifetime(owner=(ended.pid, ticks)).why_retire(busy=True) == \
        "its owner process is gone"


def test_runtime_pools_stays_light():
    """The warm parent imports it: nothing that starts a thread or loads a heavy library."""
    probe = ("import sys, runtime.pools, runtime.forkserver; "
             "print(sorted(m for m in ('pyspark', 'torch', 'ray', 'pandas', 'numpy', 'pydantic')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
