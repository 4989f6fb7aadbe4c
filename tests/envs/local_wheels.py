"""Tiny wheels written by the tests, served from a local `--find-links` folder (UV_FIND_LINKS /
PIP_FIND_LINKS): stand-ins for packages whose behaviour matters (a platform library installing a
top-level `sdk`, a package with wheels for one Python only) without their real downloads.
Imported by name (`from local_wheels import ...`), as tests/recipes' recipe_helpers is."""
from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str], *,
               tag: str = "py3-none-any", requires: tuple[str, ...] = ()) -> Path:
    """A wheel of `files` (path inside site-packages -> text) named `name` `version`, for the
    wheel tag `tag` (`cp310-none-any`: installable on CPython 3.10 only)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "_", name)
    info = f"{stem}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    wheel = f"Wheel-Version: 1.0\nGenerator: mlruntime-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    entries = {**files, f"{info}/METADATA": metadata, f"{info}/WHEEL": wheel}
    record = []
    path = folder / f"{stem}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, text in entries.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arcname},sha256={digest},{len(data)}")
            archive.writestr(arcname, data)
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def platform_sdk_stand_in(folder: Path) -> Path:
    """What PyPI's model-authoring-sdk-pyspark does to an environment: a top-level `sdk` package
    without the modules recipes import from ours (sdk.evaluation.evaluator)."""
    return make_wheel(folder, "model-authoring-sdk-pyspark", "0.9.0", {
        "sdk/__init__.py": "STAND_IN = True\n",
        "sdk/evaluation/__init__.py": "",
        "sdk/data_loader.py": "class DataLoader:\n    pass\n",
    })


def helper_wheel(folder: Path) -> Path:
    """An ordinary package that exists only in the local folder: its presence in an environment
    proves that the folder was used as an index."""
    return make_wheel(folder, "envtest-localhelper", "1.0",
                      {"envtest_localhelper/__init__.py": "VALUE = 42\n"})


def py310_only_wheel(folder: Path) -> Path:
    """A package with a wheel for CPython 3.10 alone (as TensorFlow 2.8 has wheels up to cp310
    only): a resolution for any other Python finds no wheel for it."""
    return make_wheel(folder, "envtest-py310only", "1.0",
                      {"envtest_py310only/__init__.py":
                       "import sys\nBUILT_FOR = (3, 10)\nRUNNING_ON = sys.version_info[:2]\n"},
                      tag="cp310-none-any")
