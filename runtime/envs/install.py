"""What goes into an environment besides what uv or pip installs: the runtime's package and
runtime/compat on its path, an egg or unpacked wheel copied into site-packages, bin/ scripts
pointed at the final folder; and what an environment holds, read as pins.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..recipe_metadata import read_recipe_metadata
from .interpreters import version_tuple
from .layout import PTH_FILE, RUNTIME_LINK_DIR, compat_dir, runtime_package
from .pins import canonical
from .recipe import RecipeSource

_INSTALLED_SCRIPT = r"""
import json, sys, importlib.metadata as md
out = []
for dist in md.distributions():
    name = dist.metadata["Name"]
    url = None
    direct = dist.read_text("direct_url.json")
    if direct:
        url = json.loads(direct).get("url")
    out.append([name, dist.version, url])
print(json.dumps(out))
"""
_VENV_SEEDS = {"pip", "setuptools", "wheel"}


def installed(python: Path, *, seeds: bool = False) -> list[str]:
    """What is installed in an environment, as sorted pins (`name==version`, `name @ url` for
    direct references): pip freeze's format, read with importlib.metadata in one start."""
    out = subprocess.run([str(python), "-I", "-c", _INSTALLED_SCRIPT], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    lines = set()
    for name, version, url in json.loads(out):
        if not seeds and canonical(name) in _VENV_SEEDS:
            continue
        lines.add(f"{canonical(name)} @ {url}" if url else f"{canonical(name)}=={version}")
    return sorted(lines)


def host_pip() -> bool:
    """Whether this interpreter has a pip that can install into another one (pip >= 22.3)."""
    try:
        from importlib.metadata import version
        return version_tuple(version("pip")) >= (22, 3)
    except Exception:   # no pip, or unreadable metadata
        return False


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    return Path(out)


def write_pth(env: Path, site: Path) -> None:
    """The runtime's package (through a link folder holding only `runtime`, so nothing else of
    the runtime's own installation leaks in) and runtime/compat, on the environment's path. The
    link folder is named relative to site-packages, so the environment survives its rename.

    compat/ goes right before site-packages (after the standard library): a package installed
    there under the name of one of ours (PyPI's model-authoring-sdk-pyspark installs a top-level
    `sdk`) never shadows it. A plain .pth line would append it after site-packages."""
    links = env / RUNTIME_LINK_DIR
    links.mkdir(exist_ok=True)
    (links / "runtime").symlink_to(runtime_package(), target_is_directory=True)
    rel = os.path.relpath(links, site)
    compat = str(compat_dir())
    first = ("import sys; _c = " + repr(compat) + "; _s = [i for i, p in enumerate(sys.path) "
             "if p.rstrip('/').endswith('site-packages')]; _c in sys.path or "
             "sys.path.insert(_s[0] if _s else len(sys.path), _c)")
    (site / PTH_FILE).write_text(f"{rel}\n{first}\n")


def copy_unpacked(recipe: RecipeSource, site: Path, say) -> None:
    """An egg or an unpacked wheel is not something uv or pip installs: copy it into
    site-packages, its EGG-INFO as <name>.egg-info so importlib.metadata sees its entry points."""
    say(f"installing the recipe ({recipe.kind}) from {recipe.path}")
    with tempfile.TemporaryDirectory() as tmp:
        source = recipe.path
        if source.is_file():
            from ..artifacts import safe_extract  # H-recipes' checked extraction
            safe_extract(source, Path(tmp), max_total_bytes=1 << 30, max_entries=100_000)
            source = Path(tmp)
        for entry in source.iterdir():
            if entry.name in ("__pycache__",) or entry.name == "EGG-INFO":
                continue
            target = site / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target)
        if (source / "EGG-INFO").is_dir():
            name, version = egg_identity(source)
            # <name>-<version>.egg-info: the form importlib.metadata, pip and uv all read
            shutil.copytree(source / "EGG-INFO",
                            site / f"{name.replace('-', '_')}-{version}.egg-info")


def egg_identity(path: Path) -> tuple[str, str]:
    """(name, version) of an egg (folder or .egg file), from its PKG-INFO, else its file name
    (`name-version-pyX.Y.egg`)."""
    metadata = read_recipe_metadata(Path(path))
    parts = Path(path).name.removesuffix(".egg").split("-")
    name = metadata.name or parts[0] or "recipe"
    version = metadata.version or (parts[1] if len(parts) > 1 else "0")
    return canonical(name), version


def egg_name(path: Path) -> str | None:
    """The distribution name of an egg (folder or .egg file)."""
    return egg_identity(path)[0]


def relink_scripts(final: Path, origins: list[Path]) -> None:
    """venv + pip write absolute paths into bin/ scripts: point them at the final folder (uv's
    relocatable environments have none)."""
    new = str(final).encode()
    files = [p for p in (final / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    files.append(final / "pyvenv.cfg")
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:1024]:
            continue
        changed = data
        for origin in origins:
            changed = changed.replace(str(origin).encode(), new)
        if changed != data:
            path.write_bytes(changed)
