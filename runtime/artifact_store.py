"""Where the shared artifacts live (recipes and Models), so that every server of a registry can use
them: the home's own folders (the default), a folder every host mounts (MLRUNTIME_ARTIFACTS=/mnt/x),
or an S3-compatible bucket (MLRUNTIME_ARTIFACTS=s3://bucket/prefix).

A folder is used in place: nothing is copied or cached, so one machine pays nothing for it. With a
bucket, runs keep writing to local folders; a Model or a recipe is put to the bucket under its
sha256 when it is registered, and a host that lacks it fetches it into a local cache and checks the
digest (kept in the registry: a recipe's on its Engine, a Model's in its modelArtifactUri) before
anything reads it. A run's log is put there when the run ends, so that any server shows it; the
rest is host-local scratch that stays in the home (environments, warm pools, run folders).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Optional
from urllib.parse import unquote, urlparse

from .digests import digest, walk
from .errors import ConfigError, MLRuntimeError, MissingDependency, NotFound

__all__ = ["ENV_ARTIFACTS", "ENV_S3_ENDPOINT", "ArtifactChecksumMismatch", "ArtifactStoreError",
           "BucketLocation", "FolderLocation", "location_for", "location_for_home_only"]

ENV_ARTIFACTS = "MLRUNTIME_ARTIFACTS"        # a folder path or s3://bucket/prefix
ENV_S3_ENDPOINT = "MLRUNTIME_S3_ENDPOINT"    # else AWS_ENDPOINT_URL, else AWS itself
ENV_AWS_ENDPOINT = "AWS_ENDPOINT_URL"
MODELS, RECIPES, RUNS = "models", "recipes", "runs"
MANIFEST_SUFFIX = ".manifest.json"           # written last: an artifact without one is incomplete
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_PROFILE")
_FILESYSTEMS: dict[tuple, Any] = {}          # made on first use, one per endpoint and credentials
_BUCKETS_SEEN: set[tuple] = set()            # (endpoint, bucket) that answered once


class ArtifactStoreError(MLRuntimeError):
    """The artifact location cannot be reached or read (a missing bucket, an unreachable
    endpoint, missing credentials), or an artifact is not in it."""

    status, title, slug = 502, "Artifact Store Error", "artifact-store-error"


class ArtifactChecksumMismatch(ArtifactStoreError):
    """An artifact fetched from the location is not what was registered: it is never used."""

    title, slug = "Artifact Checksum Mismatch", "artifact-checksum-mismatch"


def _home_root(home: Any) -> Path:
    return Path(home) if isinstance(home, (str, os.PathLike)) else Path(home.root)


def location_for(home: Any) -> "FolderLocation | BucketLocation":
    """The artifact location of a home (a path or a `runtime.home.Home`), as MLRUNTIME_ARTIFACTS
    names it now: unset, the home's own folders as always."""
    root = _home_root(home)
    named = (os.environ.get(ENV_ARTIFACTS) or "").strip()
    if not named:
        return location_for_home_only(root)
    if named.startswith("s3://"):
        return BucketLocation(named, home_root=root)
    if "://" in named and not named.startswith("file://"):
        raise ConfigError(f"{ENV_ARTIFACTS}={named!r}: expected a folder path (a shared mount such "
                          "as /mnt/artifacts) or an S3-compatible bucket as s3://bucket/prefix")
    folder = Path(unquote(urlparse(named).path) if named.startswith("file://") else named)
    folder = folder.expanduser().resolve()
    return FolderLocation(folder, recipes_root=folder / RECIPES, shared=True)


def _plain(name: str) -> str:
    """A run id or a log's name as one path part, never a way out of the folder."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise NotFound(f"No run log {name!r}")
    return name


def location_for_home_only(home: Any) -> "FolderLocation":
    """The home's own folders (HOME/artifacts, HOME/recipes), whatever MLRUNTIME_ARTIFACTS says."""
    root = _home_root(home)
    return FolderLocation(root / "artifacts", recipes_root=root / RECIPES)


class FolderLocation:
    """A folder: the home's own artifacts folder, or one every host mounts at the same path.
    Artifacts are written and read in place."""

    remote = False

    def __init__(self, root: Path, *, recipes_root: Path, shared: bool = False) -> None:
        self.root = Path(root)
        self.models_root = self.root / MODELS
        self.recipes_root = Path(recipes_root)
        self.url = str(self.root)
        self.shared = shared     # another folder than the home's own: finished runs' logs too

    def new_model_folder(self, model_id: str) -> Path:
        """Where a new Model's files are written (for a folder, their final place)."""
        return self.models_root / model_id

    def share_model(self, folder: Path) -> Optional[str]:
        """Nothing to put ahead: a folder holds the Model once it moves there."""
        return None

    def publish_model(self, folder: Path, file_name: Optional[str] = None, *,
                      shared: Optional[str] = None) -> str:
        """The Model's modelArtifactUri, once its files are in `folder` (new_model_folder)."""
        return (folder / file_name if file_name else folder).as_uri()

    def model_path(self, uri: str) -> Optional[Path]:
        """The local path of a Model artifact this location holds; None for another URI."""
        parsed = urlparse(uri)
        if parsed.scheme not in ("file", ""):
            return None
        path = Path(unquote(parsed.path)).resolve()
        return path if path.is_relative_to(self.models_root.resolve()) else None

    def put_recipe(self, sha: str, recipe_dir: Path, archive: Optional[Path]) -> None:
        """A stored recipe is already where every host reads it."""

    def fetch_recipe(self, sha: str, work: Path) -> Optional[Path]:
        """Nothing to fetch: a recipe missing from the folder is missing."""
        return None

    def put_run_log(self, run_id: str, path: Path) -> None:
        """A finished run's log, copied to a shared folder (the home's own serves it in place)."""
        if not self.shared or not path.is_file():
            return
        target = self.root / RUNS / _plain(run_id) / _plain(path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        shutil.copyfile(path, partial)
        os.replace(partial, target)

    def run_log(self, run_id: str, name: str) -> Optional[Path]:
        """The log of a run that ended on another host, if the shared folder has it."""
        path = self.root / RUNS / _plain(run_id) / _plain(name)
        return path if self.shared and path.is_file() else None


class BucketLocation:
    """An S3-compatible bucket (s3fs, imported on first use), with the local cache of what was
    fetched from it, or put to it from here, under HOME/artifacts/cache/s3/BUCKET/PREFIX."""

    remote = True

    def __init__(self, url: str, *, home_root: Path) -> None:
        parsed = urlparse(url)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        if not self.bucket:
            raise ConfigError(f"{ENV_ARTIFACTS}={url!r} names no bucket: expected "
                              "s3://bucket/prefix")
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint = (os.environ.get(ENV_S3_ENDPOINT) or os.environ.get(ENV_AWS_ENDPOINT)
                         or None)
        self.home_root = Path(home_root)
        self.cache = self.home_root / "artifacts" / "cache" / "s3" / self.bucket / \
            Path(*PurePosixPath(self.prefix or ".").parts)
        self.models_root = self.cache / MODELS
        self.recipes_root = self.home_root / RECIPES    # recipes unpack where they always did
        self._fs: Any = None

    # --- Models ------------------------------------------------------------------------------

    def new_model_folder(self, model_id: str) -> Path:
        return self.home_root / "artifacts" / MODELS / model_id

    def share_model(self, folder: Path) -> Optional[str]:
        """A trained Model's folder, put to the bucket under its sha256 before it is registered
        (a long upload must not hold the registry's write transaction); its URI there."""
        sha = digest(folder)
        self._put_tree(f"{MODELS}/{sha}", folder, {"sha256": sha})
        return f"{self.url}/{MODELS}/{sha}"

    def publish_model(self, folder: Path, file_name: Optional[str] = None, *,
                      shared: Optional[str] = None) -> str:
        """Moves a new Model's folder into the cache under its sha256, puts it to the bucket (once
        per content; already done when `shared`, share_model's URI, is given), and returns its
        URI there: the digest travels in the registry with it."""
        sha = shared.rsplit("/", 1)[1] if shared else digest(folder)
        cached = self.models_root / sha
        if cached.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(folder, cached)
            except OSError:
                if not cached.is_dir():    # not another process caching the same content
                    shutil.move(str(folder), cached)
                shutil.rmtree(folder, ignore_errors=True)
        if not shared:
            self._put_tree(f"{MODELS}/{sha}", cached, {"sha256": sha})
        uri = f"{self.url}/{MODELS}/{sha}"
        return f"{uri}/{file_name}" if file_name else uri

    def model_path(self, uri: str) -> Optional[Path]:
        """The cached copy of a Model artifact of this bucket, fetched and checked first if this
        host lacks it; None for a URI outside this location."""
        base = f"{self.url}/{MODELS}/"
        if not uri.startswith(base):
            return None
        parts = PurePosixPath(uri[len(base):]).parts
        if not parts or any(p in ("..", ".", "") for p in parts) or len(parts[0]) != 64:
            return None
        sha, inner = parts[0], parts[1:]
        cached = self.models_root / sha
        if not cached.is_dir():
            self._fetch_model(sha, cached)
        return cached.joinpath(*inner)

    def _fetch_model(self, sha: str, cached: Path) -> None:
        key = f"{MODELS}/{sha}"
        tmp = cached.parent / f".fetch-{sha[:12]}-{uuid.uuid4().hex[:8]}"
        try:
            self._get_tree(key, tmp, what=f"Model artifact {self.url}/{key}")
            found = digest(tmp)
            if found != sha:
                raise ArtifactChecksumMismatch(
                    f"Model artifact {self.url}/{key} does not match its sha256: the registry "
                    f"recorded {sha}, the bucket holds {found}; it was changed after this runtime "
                    "put it there and is not used")
            try:
                os.rename(tmp, cached)
            except OSError:
                if not cached.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- recipes -----------------------------------------------------------------------------

    def put_recipe(self, sha: str, recipe_dir: Path, archive: Optional[Path]) -> None:
        """A stored recipe, to the bucket once: its archive as uploaded, or a folder's files."""
        if archive is not None:
            staged = {archive.name: archive}
        else:
            source = recipe_dir / "src"
            staged = {f"src/{p.relative_to(source).as_posix()}": p
                      for p in walk(source, exclude=False)}
        self._put_files(f"{RECIPES}/{sha}", staged, {"sha256": sha})

    def fetch_recipe(self, sha: str, work: Path) -> Optional[Path]:
        """The recipe's archive file, or its folder, fetched from the bucket under `work`, its
        sha256 checked (the caller stores it as a newly registered recipe). None when the bucket
        has no such recipe."""
        key = f"{RECIPES}/{sha}"
        what = f"Recipe sha256:{sha} at {self.url}/{key}"
        if not self._exists(key + MANIFEST_SUFFIX, what):
            return None
        self._get_tree(key, work, what=what)
        archives = sorted(work.glob("artifact.*"))
        if archives:
            fetched, found = archives[0], digest(archives[0])
        else:
            folders = sorted((work / "src").iterdir()) if (work / "src").is_dir() else []
            if len(folders) != 1:
                raise ArtifactChecksumMismatch(f"{what} holds neither an archive nor one folder: "
                                               "it was changed after this runtime put it there")
            fetched, found = folders[0], digest(folders[0], exclude=True)
        if found != sha:
            raise ArtifactChecksumMismatch(
                f"{what} does not match its sha256 (the bucket holds {found}): it was changed "
                "after this runtime put it there and is not used")
        return fetched

    # --- finished runs' logs -----------------------------------------------------------------

    def put_run_log(self, run_id: str, path: Path) -> None:
        """A finished run's log, to the bucket (a log is not code: no digest is kept for it)."""
        if path.is_file():
            key = f"{RUNS}/{_plain(run_id)}/{_plain(path.name)}"
            with self._calling(f"Putting {self.url}/{key}") as fs:
                self._bucket(fs).put_file(str(path), self._key(key))

    def run_log(self, run_id: str, name: str) -> Optional[Path]:
        """The log of a run that ended on another host, fetched once into the cache; None when the
        bucket has none (a run still running there, or one from before the bucket)."""
        key = f"{RUNS}/{_plain(run_id)}/{_plain(name)}"
        cached = self.cache / key
        if cached.is_file():   # a finished run's log does not change
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{name}.{uuid.uuid4().hex[:8]}")
        try:
            with self._calling(f"Run log {self.url}/{key}") as fs:
                try:
                    self._bucket(fs).get_file(self._key(key), str(partial))
                except FileNotFoundError as exc:
                    if "bucket" in str(exc).lower():
                        raise
                    return None
            os.replace(partial, cached)
        finally:
            partial.unlink(missing_ok=True)
        return cached

    # --- the bucket --------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, key) if p)

    def _filesystem(self) -> Any:
        if self._fs is None:
            try:
                import s3fs
            except ImportError:
                raise MissingDependency("s3fs", "s3") from None
            # One client per endpoint and credentials for the process (a client costs about half
            # a second to make); credentials and region as boto finds them (environment, ~/.aws);
            # listings uncached, since other hosts write to the same bucket; one retry, so that a
            # wrong endpoint says so within seconds.
            key = (self.endpoint, *(os.environ.get(name) for name in _CREDENTIAL_VARIABLES))
            if key not in _FILESYSTEMS:
                _FILESYSTEMS[key] = s3fs.S3FileSystem(
                    endpoint_url=self.endpoint, use_listings_cache=False, skip_instance_cache=True,
                    config_kwargs={"retries": {"max_attempts": 2}, "connect_timeout": 10})
            self._fs = _FILESYSTEMS[key]
        return self._fs

    @contextmanager
    def _calling(self, what: str) -> Iterator[Any]:
        """The bucket's errors, in the runtime's words: which location, endpoint and bucket."""
        where = f"{self.url} (endpoint {self.endpoint or 'AWS'})"
        try:
            yield self._filesystem()
        except MLRuntimeError:
            raise
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise ArtifactStoreError(f"{what}: the bucket {self.bucket!r} does not exist at "
                                         f"{where}; create it, or set {ENV_ARTIFACTS} to an "
                                         "existing one") from exc
            raise ArtifactStoreError(f"{what} is not in {where}: {exc}") from exc
        except Exception as exc:   # botocore's and aiohttp's own errors: unreachable, no credentials
            name = type(exc).__name__
            hint = (f"; set {ENV_S3_ENDPOINT} (or {ENV_AWS_ENDPOINT}) to the S3 server's URL"
                    if "Connect" in name or "Endpoint" in name else
                    "; give credentials as boto reads them (AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or ~/.aws)" if "Credentials" in name else "")
            raise ArtifactStoreError(f"{what}: the artifact location {where} failed: "
                                     f"{name}: {exc}{hint}") from exc

    def _bucket(self, fs: Any) -> Any:
        """The filesystem, once the bucket answered (s3fs's own `exists` says False for an
        unreachable endpoint too)."""
        seen = (self.endpoint, self.bucket)
        if seen not in _BUCKETS_SEEN:
            try:
                fs.call_s3("head_bucket", Bucket=self.bucket)
            except FileNotFoundError:
                raise FileNotFoundError("The specified bucket does not exist") from None
            _BUCKETS_SEEN.add(seen)
        return fs

    def _exists(self, key: str, what: str) -> bool:
        with self._calling(what) as fs:
            try:   # one HEAD (s3fs's `info` lists the prefix too when the key is missing)
                self._bucket(fs).call_s3("head_object", Bucket=self.bucket,
                                         Key=self._key(key).split("/", 1)[1])
            except FileNotFoundError as exc:
                if "bucket" in str(exc).lower():
                    raise
                return False
            return True

    def _put_tree(self, key: str, folder: Path, manifest: dict[str, Any]) -> None:
        files = {p.relative_to(folder).as_posix(): p for p in walk(folder, exclude=False)}
        self._put_files(key, files, manifest)

    def _put_files(self, key: str, files: dict[str, Path], manifest: dict[str, Any]) -> None:
        """Each file, then the manifest naming them: content-addressed, so a key with a manifest
        is complete and never put again."""
        what = f"Putting {self.url}/{key}"
        if self._exists(key + MANIFEST_SUFFIX, what):
            return
        links = {rel: os.readlink(path) for rel, path in files.items() if path.is_symlink()}
        with self._calling(what) as fs:
            for rel, path in files.items():
                if rel not in links:
                    fs.put_file(str(path), self._key(f"{key}/{rel}"))
            body = {**manifest, "files": sorted(set(files) - set(links)), "links": links}
            fs.pipe_file(self._key(key + MANIFEST_SUFFIX), json.dumps(body).encode())

    def _get_tree(self, key: str, target: Path, *, what: str) -> None:
        """The files the manifest of `key` names, into `target` (links as links); the caller
        checks the digest, so a changed manifest gains nothing."""
        with self._calling(what) as fs:
            self._bucket(fs)
            try:
                manifest = json.loads(fs.cat_file(self._key(key + MANIFEST_SUFFIX)))
            except FileNotFoundError:
                raise NotFound(f"{what} is not in the bucket (never put there, or removed); "
                               "register it again") from None
            target.mkdir(parents=True, exist_ok=True)
            real = os.path.realpath(target)
            for rel in [*manifest.get("files", []), *manifest.get("links", {})]:
                local = os.path.realpath(target / rel)
                if not local.startswith(real + os.sep):
                    raise ArtifactChecksumMismatch(f"{what}: its manifest names {rel!r}, outside "
                                                   "the artifact; it is not used")
            for rel in manifest.get("files", []):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(self._key(f"{key}/{rel}"), str(target / rel))
            for rel, link in manifest.get("links", {}).items():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link, target / rel)
