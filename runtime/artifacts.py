"""Recipe artifacts: store an uploaded or local recipe once, content-addressed, with what it is.

`store_artifact` digests a zip / tar.gz of a source folder, an egg, a wheel or a folder, unpacks it
(with `safe_extract`: nothing may land outside the target) into `HOME/recipes/<sha256>/src/`, and
reads what it is with the recipe kinds' table (runtime.recipe_kinds; nothing is executed). Anything
that is not a recipe is an `InvalidArtifact` (HTTP 400) saying what was found and what is
expected, and leaves nothing.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from .artifact_store import location_for
from .digests import FOLDER_EXCLUDES, digest, excluded, walk
from .errors import BadRequest
from .locations import local_path
# What a recipe is (its kind, read from the unpacked tree) is the recipe kinds' table's to say.
from .recipe_kinds import EXPECTED, InvalidArtifact, RecipeInfo, inspect_recipe

__all__ = ["ArtifactInfo", "FOLDER_EXCLUDES", "InvalidArtifact", "RecipeInfo", "inspect_recipe",
           "load_recipe_info", "safe_extract", "store_artifact", "stored_artifact", "stored_source",
           "recipes_dir", "home_root",
           "MAX_TOTAL_BYTES", "MAX_ENTRIES"]

MAX_TOTAL_BYTES = 1 << 30          # unpacked size cap of one artifact
MAX_ENTRIES = 20_000
ENV_MAX_UNPACKED_MB = "MLRUNTIME_MAX_UNPACKED_MB"        # overrides MAX_TOTAL_BYTES (MiB)
ENV_MAX_ARCHIVE_ENTRIES = "MLRUNTIME_MAX_ARCHIVE_ENTRIES"   # overrides MAX_ENTRIES
RECIPE_FILE = "recipe.json"
SOURCE_DIR = "src"


@dataclass(frozen=True)
class ArtifactInfo:
    sha256: str
    kind: str                 # packaging: folder | zip | tar.gz | egg | wheel
    dir: Path                 # HOME/recipes/<sha256>
    recipe: RecipeInfo
    archive: Optional[Path]   # the stored upload, None for a folder

    @property
    def source_dir(self) -> Path:
        return self.dir / SOURCE_DIR


def recipes_dir(home_root: Path) -> Path:
    """Where the home's recipes are stored: HOME/recipes, or the recipes folder of the shared
    artifact folder MLRUNTIME_ARTIFACTS names (runtime.artifact_store)."""
    return location_for(home_root).recipes_root


def home_root(home: Any) -> Path:
    """A runtime home's root folder, from a path or a `runtime.home.Home`."""
    return Path(home) if isinstance(home, (str, os.PathLike)) else Path(home.root)


# --------------------------------------------------------------------------------------------
# Safe extraction


def _checked_name(name: str) -> PurePosixPath:
    raw = name.replace("\\", "/")
    if not raw or raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise InvalidArtifact(f"Refused archive entry {name!r}: an absolute path")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArtifact(f"Refused archive entry {name!r}: a path that climbs out with '..'")
    if not parts:
        raise InvalidArtifact(f"Refused archive entry {name!r}: an empty path")
    return PurePosixPath(*parts)


def _inside(dest: Path, rel: PurePosixPath, link_target: str, name: str, what: str) -> None:
    if link_target.startswith("/") or re.match(r"^[A-Za-z]:", link_target):
        raise InvalidArtifact(f"Refused archive entry {name!r}: a {what} to the absolute path "
                              f"{link_target!r}")
    resolved = os.path.normpath(os.path.join(str(rel.parent), link_target))
    if resolved == ".." or resolved.startswith("../") or os.path.isabs(resolved):
        raise InvalidArtifact(f"Refused archive entry {name!r}: a {what} pointing outside the "
                              f"archive ({link_target!r})")


def _lands_inside(dest: Path, path: Path, name: str) -> None:
    """Where `path` really is, links unpacked before followed: inside `dest` or refused. (A check of
    names alone misses chains such as `d/s -> ..`, then `d/s/t -> ..`, then `d/s/t/x`.)"""
    real_dest = os.path.realpath(dest)
    real = os.path.realpath(path)
    if real != real_dest and not real.startswith(real_dest + os.sep):
        raise InvalidArtifact(f"Refused archive entry {name!r}: it leads outside the archive's "
                              "folder through a link unpacked before it")


def _links_inside(dest: Path) -> None:
    """After unpacking: every symbolic link, followed as it now stands, stays inside `dest`."""
    for folder, dirs, files in os.walk(dest):
        for entry in (*dirs, *files):
            path = Path(folder) / entry
            if path.is_symlink():
                _lands_inside(dest, path, str(path.relative_to(dest)))


class _Budget:
    def __init__(self, max_total_bytes: int, max_entries: int) -> None:
        self.bytes_left, self.entries_left = max_total_bytes, max_entries
        self.max_total_bytes, self.max_entries = max_total_bytes, max_entries

    def entry(self, name: str) -> None:
        self.entries_left -= 1
        if self.entries_left < 0:
            raise InvalidArtifact(f"Refused archive entry {name!r}: the archive has more than "
                                  f"{self.max_entries} entries")

    def copy(self, src: Any, target: Path, name: str) -> None:
        with open(target, "wb") as out:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                self.bytes_left -= len(block)
                if self.bytes_left < 0:
                    raise InvalidArtifact(f"Refused archive entry {name!r}: the archive unpacks to "
                                          f"more than {self.max_total_bytes} bytes")
                out.write(block)


def archive_limits() -> tuple[int, int]:
    """(max_total_bytes, max_entries) of an unpacked archive: MLRUNTIME_MAX_UNPACKED_MB and
    MLRUNTIME_MAX_ARCHIVE_ENTRIES, else 1 GiB and 20,000 entries."""
    def number(name: str, default: int, scale: int = 1) -> int:
        text = os.environ.get(name, "").strip()
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = -1
        if value <= 0:
            raise BadRequest(f"{name}={text!r} is not a positive number")
        return int(value * scale)

    return (number(ENV_MAX_UNPACKED_MB, MAX_TOTAL_BYTES, 1 << 20),
            number(ENV_MAX_ARCHIVE_ENTRIES, MAX_ENTRIES))


def safe_extract(src: Path | bytes, dest: Path, *, max_total_bytes: Optional[int] = None,
                 max_entries: Optional[int] = None) -> Path:
    """Unpacks a zip (egg, wheel) or tar (.tar, .tar.gz, .tgz) archive into `dest` (created).

    Refused, with the entry named: absolute paths, `..`, symbolic or hard links pointing outside,
    device files and FIFOs, more than `max_entries` entries or `max_total_bytes` unpacked bytes
    (counted while unpacking, not trusted from headers; default: archive_limits()). On refusal
    `dest` is removed again."""
    if max_total_bytes is None or max_entries is None:
        default_bytes, default_entries = archive_limits()
        max_total_bytes = default_bytes if max_total_bytes is None else max_total_bytes
        max_entries = default_entries if max_entries is None else max_entries
    dest = Path(dest)
    data = src if isinstance(src, (bytes, bytearray)) else None
    opener = io.BytesIO(data) if data is not None else Path(src)
    dest.mkdir(parents=True, exist_ok=False)
    budget = _Budget(max_total_bytes, max_entries)
    try:
        if _is_zip(data, opener):
            _extract_zip(opener, dest, budget)
        else:
            _extract_tar(opener, dest, budget)
        _links_inside(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _is_zip(data: Optional[bytes], opener: Any) -> bool:
    if data is not None:
        return data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06"
    return zipfile.is_zipfile(opener)


def _extract_zip(opener: Any, dest: Path, budget: _Budget) -> None:
    try:
        archive = zipfile.ZipFile(opener)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidArtifact(f"Not a readable zip archive: {exc}") from None
    with archive:
        for member in archive.infolist():
            budget.entry(member.filename)
            rel = _checked_name(member.filename)
            target = dest / rel
            _lands_inside(dest, target, member.filename)
            mode = member.external_attr >> 16
            if stat.S_ISLNK(mode):
                link = archive.read(member).decode("utf-8", "replace")
                _inside(dest, rel, link, member.filename, "symbolic link")
                _lands_inside(dest, target.parent / link, member.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link, target)
            elif mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)
                           or stat.S_ISSOCK(mode)):
                raise InvalidArtifact(f"Refused archive entry {member.filename!r}: a device file "
                                      "or FIFO")
            elif member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as fh:
                        budget.copy(fh, target, member.filename)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise InvalidArtifact(f"Cannot read archive entry {member.filename!r}: "
                                          f"{exc}") from None


def _extract_tar(opener: Any, dest: Path, budget: _Budget) -> None:
    try:
        archive = tarfile.open(fileobj=opener, mode="r:*") if isinstance(opener, io.BytesIO) \
            else tarfile.open(opener, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidArtifact(f"Neither a zip nor a tar archive ({exc}); expected {EXPECTED}") \
            from None
    with archive:
        try:
            for member in archive:
                budget.entry(member.name)
                rel = _checked_name(member.name)
                target = dest / rel
                _lands_inside(dest, target, member.name)
                if member.issym():
                    _inside(dest, rel, member.linkname, member.name, "symbolic link")
                    _lands_inside(dest, target.parent / member.linkname, member.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    try:
                        linked = _checked_name(member.linkname)
                    except InvalidArtifact as exc:
                        raise InvalidArtifact(f"Refused archive entry {member.name!r}: a hard link "
                                              f"pointing outside the archive: {exc.detail}") from None
                    source = dest / linked
                    _lands_inside(dest, source, member.name)
                    if not source.is_file() or source.is_symlink():
                        raise InvalidArtifact(f"Refused archive entry {member.name!r}: a hard link "
                                              f"to {member.linkname!r}, which is not a file "
                                              "unpacked before it")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    budget.bytes_left -= source.stat().st_size
                    if budget.bytes_left < 0:
                        raise InvalidArtifact(f"Refused archive entry {member.name!r}: the archive "
                                              f"unpacks to more than {budget.max_total_bytes} bytes")
                    shutil.copyfile(source, target)
                elif member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fh = archive.extractfile(member)
                    assert fh is not None
                    budget.copy(fh, target, member.name)
                    if member.mode & 0o111:
                        target.chmod(0o755)
                else:
                    raise InvalidArtifact(f"Refused archive entry {member.name!r}: a device file, "
                                          "FIFO or other special file")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
            raise InvalidArtifact(f"Cannot read the tar archive: {exc}") from None


def zlib_error() -> type[BaseException]:
    import zlib

    return zlib.error


# --------------------------------------------------------------------------------------------
# Storing


def _packaging_of_zip(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    if any(n.startswith("EGG-INFO/") for n in names):
        return "egg"
    if any(re.match(r"^[^/]+\.dist-info/WHEEL$", n) for n in names):
        return "wheel"
    return "zip"


def _packaging(data: bytes) -> str:
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            return _packaging_of_zip(data)
        except zipfile.BadZipFile as exc:
            raise InvalidArtifact(f"The artifact looks like a zip archive but cannot be read "
                                  f"({exc}); expected {EXPECTED}") from None
    if data[:2] == b"\x1f\x8b":
        return "tar.gz"
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar"
    head = data[:16]
    found = "an empty file" if not data else (
        "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data")
    raise InvalidArtifact(f"The artifact is {found} of {len(data)} bytes, not an archive; "
                          f"expected {EXPECTED}")


_EXTENSIONS = {"zip": "zip", "tar.gz": "tar.gz", "tar": "tar", "egg": "egg", "wheel": "whl"}


def _publish(tmp: Path, final: Path) -> None:
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / RECIPE_FILE).is_file():   # not another process storing the same digest
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _cached(final: Path) -> Optional[ArtifactInfo]:
    if not (final / RECIPE_FILE).is_file():
        return None
    info = load_recipe_info(final)
    archive = next(iter(sorted(final.glob("artifact.*"))), None)
    return ArtifactInfo(sha256=info.sha256, kind=info.packaging, dir=final, recipe=info,
                        archive=archive)


def store_artifact(data_or_path: bytes | str | Path, filename: Optional[str], home: Path | Any,
                   ) -> ArtifactInfo:
    """Stores a recipe under HOME/recipes/<sha256>/ once (immutable) and returns what it is.

    `data_or_path` is the uploaded bytes, or a local archive file or folder (a `file://` URI too).
    `home` is the runtime home's root folder (or a `Home`). A second store of the same content
    returns the first one's record without unpacking again."""
    root = home_root(home)
    store = recipes_dir(root)
    store.mkdir(parents=True, exist_ok=True)
    if isinstance(data_or_path, (bytes, bytearray)):
        return _store_bytes(bytes(data_or_path), store)
    path = local_path(str(data_or_path))
    if path is not None:
        path = path.absolute()
    if path is None:
        raise InvalidArtifact(f"{data_or_path!r} is not a local path or file:// URI; expected "
                              f"{EXPECTED}")
    if not path.exists():
        raise InvalidArtifact(f"Recipe location {str(path)!r} does not exist; expected {EXPECTED}")
    if path.is_dir():
        return _store_folder(path, store)
    return _store_bytes(path.read_bytes(), store)


def _store_bytes(data: bytes, store: Path) -> ArtifactInfo:
    packaging = _packaging(data)

    def fill(tmp: Path) -> None:
        (tmp / f"artifact.{_EXTENSIONS[packaging]}").write_bytes(data)
        safe_extract(data, tmp / SOURCE_DIR)

    return _store(store, digest(data), packaging, fill)


def _store_folder(folder: Path, store: Path) -> ArtifactInfo:
    folder = folder.resolve()

    def fill(tmp: Path) -> None:
        shutil.copytree(folder, tmp / SOURCE_DIR / folder.name, symlinks=False,
                        ignore_dangling_symlinks=True,
                        ignore=lambda _d, names: [n for n in names if excluded(n)])

    return _store(store, digest(folder, exclude=True), "folder", fill)


def _store(store: Path, sha: str, packaging: str, fill: Any) -> ArtifactInfo:
    """HOME/recipes/<sha>: filled and inspected in a temporary folder, made read-only, then
    renamed into place, so a half-stored or refused recipe never appears there."""
    final = store / sha
    cached = _cached(final)
    if cached is not None:
        return cached
    tmp = store / f".tmp-{sha[:12]}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        info = inspect_recipe(tmp / SOURCE_DIR, packaging=packaging, base=tmp)
        info = info.model_copy(update={"sha256": sha})
        (tmp / RECIPE_FILE).write_text(info.model_dump_json(indent=2))
        _make_read_only(tmp / SOURCE_DIR)
        _publish(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    return _cached(final) or ArtifactInfo(sha, packaging, final, info,
                                          next(iter(sorted(final.glob("artifact.*"))), None))


def _make_read_only(folder: Path) -> None:
    for path in walk(folder, exclude=False):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)


def _remove(folder: Path) -> None:
    def writable(func: Any, path: str, _exc: Any) -> None:
        os.chmod(path, 0o700)
        func(path)
    shutil.rmtree(folder, onerror=writable) if folder.exists() else None


def stored_artifact(home: Path | Any, sha: str) -> Optional[ArtifactInfo]:
    """The recipe stored under sha256 `sha` in the home's recipe store, or None."""
    return _cached(recipes_dir(home_root(home)) / sha)


def stored_source(recipe_dir: Path) -> Optional[Path]:
    """What a stored recipe was stored from, as it was given: its archive, or its one folder."""
    archive = next(iter(sorted(Path(recipe_dir).glob("artifact.*"))), None)
    if archive is not None:
        return archive
    folders = sorted((Path(recipe_dir) / SOURCE_DIR).glob("*"))
    return folders[0] if len(folders) == 1 and folders[0].is_dir() else None


def load_recipe_info(recipe_dir: Path) -> RecipeInfo:
    """The RecipeInfo of a stored recipe folder (HOME/recipes/<sha256>)."""
    path = Path(recipe_dir) / RECIPE_FILE
    try:
        return RecipeInfo.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidArtifact(f"No readable recipe at {recipe_dir}: {exc}") from exc
