"""`run envs list|build|rm|prune`: the recipe environments under the runtime home."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..home import resolve_home


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0.0, time.time() - ts)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= span:
            return f"{s / span:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def list_main(args: argparse.Namespace) -> int:
    from ..envs import cache_size, envs_dir, list_envs

    home = resolve_home(args.home)
    records = list_envs(home.root)
    if args.json:
        print(json.dumps({"envs": [r.to_dict() for r in records],
                          "total_bytes": sum(r.size_bytes for r in records),
                          "uv_cache_bytes": cache_size(home.root)}, indent=2))
        return 0
    if not records:
        print(f"no environments under {envs_dir(home.root)}")
        return 0
    rows = [["KEY", "PROFILE", "PYTHON", "RECIPE", "SIZE", "LAST USED", "TOOL"]]
    rows += [[r.key, r.profile or "-", r.python_version or "-", r.recipe or "-", _size(r.size_bytes),
              _ago(r.last_used), r.tool or "-"] for r in records]
    print(_table(rows))
    print(f"{len(records)} environment{'s' if len(records) != 1 else ''}, "
          f"{_size(sum(r.size_bytes for r in records))}; uv cache {_size(cache_size(home.root))}")
    return 0


def build_main(args: argparse.Namespace) -> int:
    from ..envs import ensure_env

    home = resolve_home(args.home)
    recipe = Path(args.recipe).expanduser() if args.recipe else None
    info = ensure_env(recipe_dir=recipe, requirements=[], profile=args.profile,
                      extra_pip=args.pip or (), home=home.root,
                      log=None if args.json else sys.stderr, refresh=args.refresh)
    if args.json:
        print(json.dumps({"key": info.key, "python": str(info.python), "path": str(info.path),
                          "cached": info.cached, "tool": info.tool}, indent=2))
    else:
        print(f"{info.key}  {info.python}{'  (reused)' if info.cached else ''}")
    return 0


def rm_main(args: argparse.Namespace) -> int:
    from ..envs import remove_env

    home = resolve_home(args.home)
    removed = [remove_env(home.root, key) for key in args.keys]
    if args.json:
        print(json.dumps({"removed": [r.to_dict() for r in removed]}, indent=2))
    else:
        for record in removed:
            print(f"removed {record.key} ({_size(record.size_bytes)})")
    return 0


def prune_main(args: argparse.Namespace) -> int:
    from ..envs import list_envs, parse_size, prune_envs
    from ..envs.build import ENV_MAX_SIZE
    from ..envs.cache import DEFAULT_MAX_SIZE
    from ..envs.layout import ENV_UV_CACHE_DIR

    home = resolve_home(args.home)
    cap_text = args.max_size or os.environ.get(ENV_MAX_SIZE) or DEFAULT_MAX_SIZE
    cap = parse_size(cap_text)
    removed = prune_envs(home.root, max_size_bytes=cap, dry_run=args.dry_run)
    left = sum(r.size_bytes for r in list_envs(home.root)) - (
        sum(r.size_bytes for r in removed) if args.dry_run else 0)
    uv_cache, uv_pruned = (None, None)
    if not args.dry_run:
        from ..envs.build import prune_uv_cache

        uv_cache, uv_pruned = prune_uv_cache(home.root)
    if args.json:
        print(json.dumps({"removed": [r.to_dict() for r in removed], "dry_run": args.dry_run,
                          "max_size_bytes": cap, "remaining_bytes": left,
                          "uv_cache": None if uv_cache is None else {
                              "path": str(uv_cache), "pruned": uv_pruned is not None,
                              "summary": uv_pruned}}, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for record in removed:
        print(f"{verb} {record.key} ({_size(record.size_bytes)}, last used {_ago(record.last_used)})")
    print(f"{len(removed)} {verb}; {_size(left)} left under a cap of {cap_text}")
    if uv_pruned is not None:
        print(f"uv's cache {uv_cache}: {uv_pruned}")
    elif uv_cache is not None and os.environ.get(ENV_UV_CACHE_DIR):
        print(f"uv's cache {uv_cache} is shared ({ENV_UV_CACHE_DIR}): not pruned from one home")
    return 0
