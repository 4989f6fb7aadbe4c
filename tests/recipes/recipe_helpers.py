"""Helpers of the recipe tests (imported by name: `from recipe_helpers import ...`; a unique module
name, unlike `conftest`, which every test folder has): the test recipes (fixtures/), zipped or
tarred on demand."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
REPO = HERE.parents[1]
RETAIL = REPO.parent / "shared" / "data" / "retail"


def zip_folder(folder: Path, *, top: str | None = None) -> bytes:
    """The folder zipped as users zip a recipe: with its own name as the top folder."""
    buffer = io.BytesIO()
    top = folder.name if top is None else top
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, str(Path(top) / path.relative_to(folder)) if top else
                              str(path.relative_to(folder)))
    return buffer.getvalue()


def tar_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name,
                    filter=lambda info: None if "__pycache__" in info.name else info)
    return buffer.getvalue()
