"""Recipe environments: one isolated virtual environment per recipe, built once with uv.

`ensure_env(...)` returns the interpreter a recipe's worker runs with; `plan_env(...)` says what it
would do without building; `list_envs`, `remove_env` and `prune_envs` manage HOME/envs. Profiles
(the pinned sets standing for the platform's runtime images) are in `profiles.py`; the folders and
files of HOME/envs in `layout.py`; the Pythons an environment is made from in `interpreters.py`.
"""
from __future__ import annotations

from .build import EnvInfo, EnvPlan, ensure_env, find_uv, plan_env
from .cache import EnvRecord, cache_size, list_envs, parse_size, prune_envs, remove_env
from .layout import compat_dir, envs_dir, uv_cache_dir
from .profiles import DEFAULT_PROFILE, PLATFORM_LIBRARIES, PROFILES, Profile, get_profile
from .recipe import read_requirements, recipe_digest

__all__ = ["DEFAULT_PROFILE", "EnvInfo", "EnvPlan", "EnvRecord", "PLATFORM_LIBRARIES", "PROFILES", "Profile",
           "cache_size", "compat_dir", "ensure_env", "envs_dir", "find_uv",
           "get_profile", "list_envs", "parse_size", "plan_env", "prune_envs", "read_requirements",
           "recipe_digest", "remove_env", "uv_cache_dir"]
