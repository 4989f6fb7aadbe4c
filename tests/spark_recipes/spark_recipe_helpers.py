"""Helpers of the PySpark-recipe tests (imported by name: `from spark_recipe_helpers import ...`, a
unique module name): the test recipes (fixtures/), zipped on demand; a subprocess's environment."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
REPO = HERE.parents[1]
RETAIL = REPO.parent / "shared" / "data" / "retail"


def zip_folder(folder: Path) -> bytes:
    """The recipe folder zipped as users zip one: with its own name as the top folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, str(Path(folder.name) / path.relative_to(folder)))
    return buffer.getvalue()


def run_env(jars: Path) -> dict[str, str]:
    """A subprocess's environment: none of the developer's MLRUNTIME_* settings, our jar cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env["MLRUNTIME_SPARK_JARS"] = str(jars)
    return env
