"""Engines: a recipe is checked and stored (content-addressed, immutable) before its Engine is
written; a new recipe makes a new artifactVersion; with data roots, a recipe named by a server
path must lie under them."""
from __future__ import annotations

import os
import shutil
import uuid
from typing import Any, Optional

from ..locations import ARCHIVE_SUFFIXES, local_path, names_a_path
from ..schemas import ENGINE, engine_image
from .callers import Caller
from .documents import Documents


class Engines:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self.home = documents.home

    def create_engine(self, caller: Caller, body: Any,
                      artifacts: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
        """An Engine, with binary artifacts from a multipart upload kept in the home."""
        data = self.documents.validate(ENGINE, body)
        engine_id = str(uuid.uuid4())
        stored = {n: b for n, b in (artifacts or {}).items() if b}
        from ..recipes.registration import apply_engine_artifact

        # A recipe is checked and stored (content-addressed, immutable) before anything is written.
        self.check_engine_location(data)
        apply_engine_artifact(data, stored.pop("defaultArtifact", None), self.home)
        self._keep_uploads(engine_id, stored)
        try:
            return self.documents.insert(ENGINE, caller, data, id=engine_id)
        except BaseException:
            shutil.rmtree(self.home.artifacts / "engines" / engine_id, ignore_errors=True)
            raise

    def replace_engine(self, caller: Caller, id: str, body: Any,
                       artifacts: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
        """PUT of an Engine; a new recipe artifact (uploaded, or another location's content) is
        stored beside the old one and makes a new artifactVersion."""
        from ..recipes.registration import apply_engine_artifact

        data = self.documents.validate(ENGINE, body)
        old = self.documents.live(ENGINE, caller.scope, id)
        stored = {n: b for n, b in (artifacts or {}).items() if b}
        self.check_engine_location(data)
        apply_engine_artifact(data, stored.pop("defaultArtifact", None), self.home, previous=old)
        self._keep_uploads(id, stored)
        return self.documents.replace(ENGINE, caller, id, data, validated=True)

    def _keep_uploads(self, engine_id: str, stored: dict[str, bytes]) -> None:
        """The other binary artifacts of a multipart upload, in the Engine's folder of the home."""
        if stored:
            folder = self.home.artifacts / "engines" / engine_id
            folder.mkdir(parents=True, exist_ok=True)
            for name, payload in stored.items():
                (folder / name).write_bytes(payload)

    def check_engine_location(self, data: dict[str, Any]) -> None:
        """With data roots, an Engine's recipe named by a server path (not uploaded) must lie under
        them, or in this home's recipe store: a token holder may not import any folder the server
        can read."""
        data_roots = self.documents.catalog.data_roots
        if data_roots is None:
            return
        location = engine_image(data).location
        if not isinstance(location, str) or not names_a_path(location, ARCHIVE_SUFFIXES):
            return   # an installed plugin or a module:Class
        local = local_path(location.strip())
        from ..artifacts import recipes_dir

        store = os.path.realpath(recipes_dir(self.home.root))
        if local is not None and os.path.realpath(local).startswith(store + os.sep):
            return
        data_roots.check("artifacts.default.image.location", location.strip())
