"""Models: uploaded (an archive unpacked safely) or registered from a trained run, their artifact
kept in the home and served only from there; and the default metrics of Insights."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from ..artifact_store import ENV_ARTIFACTS, location_for, location_for_home_only
from ..errors import NotFound
from ..schemas import DEFAULT_METRICS, EXPERIMENT_RUN, MODEL
from .callers import Caller
from .documents import Documents


def _is_archive(data: bytes) -> bool:
    """A zip (egg, wheel) or a tar archive, compressed or not."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return True
    import io
    import tarfile

    try:
        return tarfile.is_tarfile(io.BytesIO(data))
    except Exception:   # a compressed stream that is no tar: a plain file
        return False


def default_metrics(algorithm: Optional[str]) -> dict[str, Any]:
    if algorithm:
        match = {k: v for k, v in DEFAULT_METRICS.items() if k.lower() == algorithm.lower()}
        if not match:
            raise NotFound(f"Unknown algorithm {algorithm!r}; known: " + ", ".join(DEFAULT_METRICS))
    else:
        match = DEFAULT_METRICS
    return {"children": [{"algorithm": k, "defaultMetrics": v} for k, v in match.items()]}


class Models:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self.home = documents.home

    def create_model(self, caller: Caller, body: Any, artifact: Optional[bytes] = None,
                     artifact_name: str = "artifact") -> dict[str, Any]:
        data = self.documents.validate(MODEL, body)
        model_id = str(uuid.uuid4())
        location = location_for(self.home)
        if artifact:
            folder = location.new_model_folder(model_id)
            if _is_archive(artifact):
                from ..artifacts import safe_extract

                # A model folder packed as zip/tar: unpacked only if every entry stays inside (400
                # naming the entry otherwise), so that it can be scored like a trained one.
                safe_extract(artifact, folder)
                data["modelArtifactUri"] = _published(location, folder)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                name = Path(artifact_name).name or "artifact"
                (folder / name).write_bytes(artifact)
                data["modelArtifactUri"] = _published(location, folder, name)
        store = self.documents.store
        with store.transaction():
            run = store.get(EXPERIMENT_RUN, caller.scope, data["experimentRunId"])
            if run is not None:
                data.setdefault("experimentId", run.get("experimentId"))
            try:
                return self.documents.insert(MODEL, caller, data, id=model_id)
            except BaseException:
                shutil.rmtree(location.new_model_folder(model_id), ignore_errors=True)
                raise

    def share_model(self, model_dir: Path) -> Optional[str]:
        """A trained Model's folder put to the artifact location ahead of register_model, outside
        the registry's write transaction (a bucket: its URI there; a folder: None, nothing to do)."""
        return location_for(self.home).share_model(model_dir)

    def register_model(self, caller: Caller, body: dict[str, Any], model_dir: Path,
                       digest: Optional[str] = None, shared: Optional[str] = None,
                       ) -> dict[str, Any]:
        """A Model for a trained run; its folder moves into the artifact location (a bucket: put
        there under its sha256). `digest` (recipes' pickled models) is server-owned: only a Model
        registered here carries one."""
        data = self.documents.validate(MODEL, body)
        if digest:
            data["modelArtifactDigest"] = digest
        model_id = str(uuid.uuid4())
        location = location_for(self.home)
        target = location.new_model_folder(model_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(model_dir), target)
        data["modelArtifactUri"] = _published(location, target, shared=shared)
        try:
            return self.documents.insert(MODEL, caller, data, id=model_id)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def model_artifact_dir(self, caller: Caller, model_id: str) -> Path:
        """The local file or folder a Model's artifact lives in (from a bucket: fetched into this
        host's cache and checked against its sha256 first)."""
        doc = self.documents.live(MODEL, caller.scope, model_id)
        uri = doc.get("modelArtifactUri")
        location = location_for(self.home)
        scheme = urlparse(uri).scheme if uri else None
        if scheme not in ("file", "", "s3") or (scheme == "s3" and not location.remote):
            if scheme == "s3":
                raise NotFound(f"Model {model_id!r} has its artifact in a bucket ({uri}), and this "
                               f"server's artifacts are in {location.url}: set {ENV_ARTIFACTS} to "
                               "the location that holds it")
            raise NotFound(f"Model {model_id!r} has no local artifact")
        # Only what this runtime stored is served: a client-set URI must not expose other files.
        # The home's own folder too: Models stored before the location moved to a shared one.
        path = location.model_path(uri) or location_for_home_only(self.home).model_path(uri)
        if path is None:
            raise NotFound(f"Model {model_id!r} has no artifact stored by this runtime "
                           f"(modelArtifactUri {uri!r})")
        if not path.exists():
            raise NotFound(f"The artifact of Model {model_id!r} is missing at {path}")
        return path

    def model_artifact(self, caller: Caller, model_id: str) -> Path:
        """The file of a Model's artifact (a folder artifact is zipped once, beside it)."""
        path = self.model_artifact_dir(caller, model_id)
        if path.is_dir():
            archive = path.with_suffix(".zip")
            if not archive.exists():
                shutil.make_archive(str(path), "zip", root_dir=path)
            path = archive
        if not path.is_file():
            raise NotFound(f"The artifact of Model {model_id!r} is missing at {path}")
        return path


def _published(location: Any, folder: Path, file_name: Optional[str] = None,
               shared: Optional[str] = None) -> str:
    """The new Model's URI in the artifact location; its folder is removed if the location
    refuses it (an unreachable bucket, say), so that nothing half-registered stays behind."""
    try:
        return location.publish_model(folder, file_name, shared=shared)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
