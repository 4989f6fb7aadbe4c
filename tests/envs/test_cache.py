"""HOME/envs: list, rm, prune least recently used first under a size cap, and `run envs ...`."""
from __future__ import annotations

import fcntl
import json
import os
import time

import pytest

from runtime.cli.main import main as run_main
from runtime.envs import ensure_env, envs_dir, list_envs, parse_size, prune_envs, remove_env
from runtime.envs.layout import LAST_USED
from runtime.errors import Conflict, ConfigError, NotFound


@pytest.fixture(scope="module")
def prune_home(tmp_path_factory):
    """A home of its own: these tests remove environments."""
    return tmp_path_factory.mktemp("prune-home")


@pytest.fixture
def two_envs(prune_home):
    """Two real environments in that home: found again when present (a remembered resolution,
    no build), rebuilt from uv's warm cache when an earlier test removed one."""
    old = ensure_env(recipe_dir=None, requirements=[], profile="bare", home=prune_home)
    new = ensure_env(recipe_dir=None, requirements=["six==1.16.0"], profile="bare", home=prune_home)
    return prune_home, old, new


def _age(env, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(env.path / LAST_USED, (stamp, stamp))


def test_parse_size():
    assert parse_size("10G") == 10 << 30
    assert parse_size("500M") == 500 << 20
    assert parse_size("2.5GiB") == int(2.5 * (1 << 30))
    assert parse_size("1024") == 1024
    with pytest.raises(ConfigError, match="Invalid size 'ten'"):
        parse_size("ten")


def test_list_most_recently_used_first_with_sizes(two_envs):
    home, old, new = two_envs
    _age(old, 3600)
    _age(new, 60)
    records = list_envs(home)
    assert [r.key for r in records] == [new.key, old.key]
    assert all(r.size_bytes > 1 << 20 for r in records)      # pydantic-core alone is more
    assert records[0].profile == "bare" and records[0].tool == "uv"


def test_reuse_marks_the_env_used(two_envs):
    home, old, new = two_envs
    _age(old, 3600)
    _age(new, 60)   # the fixture just used both: within one tick of the file system's clock
    again = ensure_env(recipe_dir=None, requirements=[], profile="bare", home=home)
    assert again.cached and again.key == old.key
    assert list_envs(home)[0].key == old.key


def test_prune_dry_run_then_least_recently_used_first(two_envs):
    home, old, new = two_envs
    _age(old, 7200)
    _age(new, 60)
    sizes = {r.key: r.size_bytes for r in list_envs(home)}
    cap = sizes[new.key] + 1      # room for one of them
    planned = prune_envs(home, max_size_bytes=cap, dry_run=True)
    assert [r.key for r in planned] == [old.key]
    assert old.path.is_dir()                                   # a dry run removes nothing
    removed = prune_envs(home, max_size_bytes=cap)
    assert [r.key for r in removed] == [old.key]
    assert not old.path.exists() and new.path.is_dir()
    assert prune_envs(home, max_size_bytes=cap) == []          # already under the cap


def test_build_over_the_cap_prunes_others_but_never_the_new_one(two_envs, monkeypatch):
    home, old, new = two_envs
    remove_env(home, old.key)
    monkeypatch.setenv("MLRUNTIME_ENVS_MAX_SIZE", "1")
    rebuilt = ensure_env(recipe_dir=None, requirements=[], profile="bare", home=home)
    assert not rebuilt.cached and rebuilt.path.is_dir()
    assert [r.key for r in list_envs(home)] == [rebuilt.key]
    assert not new.path.exists()


def test_rm_by_prefix_refuses_unknown_and_locked(two_envs):
    home, _, _ = two_envs
    env = ensure_env(recipe_dir=None, requirements=[], profile="bare", home=home)
    with pytest.raises(NotFound, match="No environment 'ffffffff'"):
        remove_env(home, "ffffffff")
    with pytest.raises(ConfigError, match="Invalid environment key"):
        remove_env(home, "../x")
    lock = envs_dir(home) / ".locks" / f"{env.key}.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)          # what a build of this key holds
        with pytest.raises(Conflict, match="being built"):
            remove_env(home, env.key[:6])
        fcntl.flock(fh, fcntl.LOCK_UN)
    record = remove_env(home, env.key[:6])
    assert record.key == env.key and not env.path.exists()
    assert [p for p in (envs_dir(home) / ".tmp").iterdir()] == []


def test_prune_clears_dead_staging_folders(tmp_path):
    stale = envs_dir(tmp_path) / ".tmp" / "0123456789abcdef-999-dead"
    (stale / "bin").mkdir(parents=True)
    ages_ago = time.time() - 7 * 3600
    os.utime(stale, (ages_ago, ages_ago))
    fresh = envs_dir(tmp_path) / ".tmp" / "fedcba9876543210-998-live"
    fresh.mkdir()
    prune_envs(tmp_path, max_size_bytes=1 << 40)
    assert not stale.exists() and fresh.exists()


def test_cli_list_build_rm_prune(python_env, env_home, prune_home, tmp_path, capsys):
    assert run_main(["envs", "list", "--home", str(env_home), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert python_env.key in [e["key"] for e in listed["envs"]]
    assert listed["uv_cache_bytes"] > 0

    assert run_main(["envs", "list", "--home", str(env_home)]) == 0
    out = capsys.readouterr().out
    assert "KEY" in out and python_env.key in out and "envtest-pandas1" in out

    assert run_main(["envs", "list", "--home", str(tmp_path / "empty")]) == 0
    assert "no environments" in capsys.readouterr().out

    home = prune_home     # uv's cache there is warm; this environment is new
    assert run_main(["envs", "build", "--profile", "bare", "--pip", "six==1.17.0",
                     "--home", str(home), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["cached"] is False and built["python"].startswith(str(home))
    assert run_main(["envs", "prune", "--max-size", "1", "--dry-run", "--home", str(home)]) == 0
    assert f"would remove {built['key']}" in capsys.readouterr().out
    assert run_main(["envs", "rm", built["key"], "--home", str(home)]) == 0
    assert f"removed {built['key']}" in capsys.readouterr().out
    assert run_main(["envs", "rm", built["key"], "--home", str(home)]) == 1
    assert "Not Found" in capsys.readouterr().err
    assert run_main(["envs", "build", "--profile", "gpu", "--home", str(home)]) == 1
    assert "Unknown environment profile 'gpu'" in capsys.readouterr().err


def test_cli_prune_prunes_the_home_s_own_uv_cache_never_a_shared_one(tmp_path, monkeypatch, capsys):
    """`run envs prune` also runs `uv cache prune` on HOME/cache/uv (behind an index that makes uv
    download a file again, uv keeps every revision of it); a cache several homes share
    (MLRUNTIME_UV_CACHE_DIR) is left to its owner."""
    home = tmp_path / "home"
    cache = home / "cache" / "uv"
    dangling = cache / "archive-v0" / "nothing-refers-to-this"   # what uv prune removes
    dangling.mkdir(parents=True)
    (dangling / "file").write_text("x")

    monkeypatch.setenv("MLRUNTIME_UV_CACHE_DIR", str(cache))
    assert run_main(["envs", "prune", "--home", str(home)]) == 0
    assert f"uv's cache {cache} is shared (MLRUNTIME_UV_CACHE_DIR): not pruned" in \
        capsys.readouterr().out
    assert dangling.exists()

    monkeypatch.delenv("MLRUNTIME_UV_CACHE_DIR")
    assert run_main(["envs", "prune", "--dry-run", "--home", str(home)]) == 0
    capsys.readouterr()
    assert dangling.exists()                       # a dry run removes nothing
    assert run_main(["envs", "prune", "--home", str(home), "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)["uv_cache"]
    assert pruned["path"] == str(cache) and pruned["pruned"] is True
    assert "Removed" in pruned["summary"]
    assert not dangling.exists()
