"""runtime.artifacts: storing recipes by content, reading what they are, refusing what is not one,
and unpacking archives without letting anything land outside the target."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from recipe_helpers import FIXTURES, tar_folder, zip_folder
from runtime.artifacts import (InvalidArtifact, inspect_recipe, load_recipe_info, safe_extract,
                               store_artifact)
from runtime.digests import digest
from runtime.recipes import detect, load_recipe_engine, parse_reference, reference


# --- storing ------------------------------------------------------------------------------------

def test_a_zipped_recipe_is_stored_once_by_its_digest(tmp_path: Path) -> None:
    data = zip_folder(FIXTURES / "retail_functions")
    info = store_artifact(data, "retail.zip", tmp_path)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.dir == tmp_path / "recipes" / info.sha256
    assert info.archive.read_bytes() == data and info.kind == "zip"
    recipe = info.recipe
    assert (recipe.kind, recipe.name, recipe.version) == ("python-functions", "retail-functions", "0.3.0")
    assert recipe.entry_points["Training"]["training_pipeline"] == "retailfn.pipeline"
    assert recipe.entry_points["Evaluation"]["evaluator"] == "retailfn.evaluator:Evaluator"
    root = recipe.root_dir(info.dir)
    assert (root / "retailfn" / "pipeline.py").is_file()
    # Immutable: files are read-only, and storing the same bytes again unpacks nothing.
    assert not os.access(root / "retailfn" / "pipeline.py", os.W_OK) or os.geteuid() == 0
    assert not (root / "retailfn" / "pipeline.py").stat().st_mode & stat.S_IWUSR
    marker = info.dir / "src" / "retail_functions" / "retailfn"
    again = store_artifact(data, None, tmp_path)
    assert again.dir == info.dir and marker.is_dir()
    assert load_recipe_info(info.dir) == again.recipe


def test_tar_gz_egg_wheel_and_folder_all_store(tmp_path: Path) -> None:
    tar = store_artifact(tar_folder(FIXTURES / "classify_functions"), None, tmp_path)
    assert (tar.kind, tar.recipe.kind, tar.recipe.name) == ("tar.gz", "python-functions",
                                                            "classify-functions")
    assert tar.recipe.entry_points["Scoring"]["scoring_datasaver"] == "classifyfn.writer"

    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("classrecipe/__init__.py", "")
        archive.writestr("classrecipe/trainer.py", "class Trainer: pass\n")
        archive.writestr("classrecipe/scorer.py", "class Scorer: pass\n")
        archive.writestr("class_recipe-2.1.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        archive.writestr("class_recipe-2.1.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: class-recipe\nVersion: 2.1\n"
                         "Requires-Dist: tabulate==0.9.0\nRequires-Dist: pytest ; extra == 'dev'\n")
        archive.writestr("class_recipe-2.1.dist-info/entry_points.txt",
                         "[Trainer.train]\ntrainer = classrecipe.trainer:Trainer\n\n"
                         "[Scorer.score]\nscorer = classrecipe.scorer:Scorer\n")
    whl = store_artifact(wheel.getvalue(), None, tmp_path)
    assert (whl.kind, whl.recipe.kind, whl.recipe.requirements) == (
        "wheel", "python-classes", ["tabulate==0.9.0"])

    egg = io.BytesIO()
    with zipfile.ZipFile(egg, "w") as archive:
        archive.writestr("oldfn/__init__.py", "")
        archive.writestr("oldfn/train.py", "def train(c, d): return 1\n")
        archive.writestr("oldfn/load.py", "def load(c): return None\n")
        archive.writestr("EGG-INFO/PKG-INFO", "Metadata-Version: 1.0\nName: oldfn\nVersion: 0.1\n")
        archive.writestr("EGG-INFO/requires.txt", "six\n\n[dev]\npytest\n")
        archive.writestr("EGG-INFO/entry_points.txt",
                         "[Training]\ntraining_dataloader = oldfn.load\n"
                         "training_pipeline = oldfn.train\n")
    stored = store_artifact(egg.getvalue(), None, tmp_path)
    assert (stored.kind, stored.recipe.name, stored.recipe.requirements) == ("egg", "oldfn", ["six"])

    folder = store_artifact(FIXTURES / "class_recipe", None, tmp_path)
    assert (folder.kind, folder.recipe.kind, folder.archive) == ("folder", "python-classes", None)
    assert folder.recipe.requirements == ["tabulate==0.9.0"]
    assert folder.sha256 == digest(FIXTURES / "class_recipe", exclude=True)
    assert store_artifact((FIXTURES / "class_recipe").as_uri(), None, tmp_path).dir == folder.dir


def test_a_changed_folder_is_new_content(tmp_path: Path) -> None:
    copy = tmp_path / "recipe"
    shutil.copytree(FIXTURES / "class_recipe", copy)
    first = store_artifact(copy, None, tmp_path / "home")
    (copy / "classrecipe" / "__pycache__").mkdir()
    (copy / "classrecipe" / "__pycache__" / "x.pyc").write_bytes(b"build leftovers")
    assert store_artifact(copy, None, tmp_path / "home").sha256 == first.sha256
    (copy / "classrecipe" / "trainer.py").write_text("# edited\n", encoding="utf-8")
    assert store_artifact(copy, None, tmp_path / "home").sha256 != first.sha256


def test_detect_and_the_engine_reference(tmp_path: Path) -> None:
    # a PySpark package (H-spark's test recipe): resources/application.yaml makes it 'pyspark'
    spark_recipe = FIXTURES.parents[1] / "spark_recipes" / "fixtures" / "retail_regression"
    if spark_recipe.is_dir():
        assert detect(spark_recipe) == "pyspark"
        assert inspect_recipe(spark_recipe).application.endswith("application.yaml")
    assert detect(FIXTURES / "class_recipe") == "python-classes"
    assert detect(FIXTURES / "old_classes") == "python-classes"   # Training/Scoring naming classes

    info = store_artifact(FIXTURES / "retail_functions", None, tmp_path)
    ref = reference(info.recipe.kind, info.dir)
    assert parse_reference(ref) == ("python-functions", info.dir.resolve())
    engine = load_recipe_engine(ref)
    assert (engine.name, engine.kind, engine.recipe.sha256) == ("retail-functions", "python",
                                                               info.sha256)
    assert "retailfn" not in __import__("sys").modules   # building the adapter imports no recipe


# --- what is not a recipe ----------------------------------------------------------------------

def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.mark.parametrize("data, expected", [
    (b"", "an empty file"),
    (b"just some text, not an archive", "text of 30 bytes, not an archive"),
    (bytes(range(256)) * 4, "binary data of 1024 bytes"),
    (_zip({"notes/readme.txt": "hello", "data.csv": "a,b"}),
     "no Python package metadata (found: data.csv, notes/)"),
    (_zip({"r/setup.py": "from setuptools import setup\nsetup(name='r', packages=['r'])\n",
           "r/r/__init__.py": ""}),
     "declares no recipe entry points (groups found: none)"),
    (_zip({"r/setup.py": "from setuptools import setup\nsetup(name='r', entry_points="
                         "{'Training': ['training_dataloader=r.load', 'training_pipeline=r.train']})\n",
           "r/r/__init__.py": "", "r/r/load.py": ""}),
     "names module 'r.train', which the artifact does not contain"),
    (_zip({"r/setup.py": "from setuptools import setup\nsetup(name='r', entry_points="
                         "{'Training': ['training_pipeline=r.train']})\n",
           "r/r/__init__.py": "", "r/r/train.py": ""}),
     "Training entry points lack training_dataloader"),
    (_zip({"r/setup.py": "from setuptools import setup\nEP = make()\nsetup(name='r', entry_points=EP)\n"}),
     "computes entry_points at run time"),
])
def test_what_is_not_a_recipe_is_refused_saying_what_was_found(tmp_path: Path, data: bytes,
                                                                expected: str) -> None:
    with pytest.raises(InvalidArtifact) as caught:
        store_artifact(data, None, tmp_path)
    assert expected in caught.value.detail
    assert caught.value.status == 400
    assert not [p for p in (tmp_path / "recipes").iterdir()]   # nothing left behind


def test_a_missing_location_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifact, match="does not exist"):
        store_artifact(tmp_path / "nowhere", None, tmp_path)


# --- safe_extract --------------------------------------------------------------------------------

def _tar(add) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        add(archive)
    return buffer.getvalue()


def _member(archive: tarfile.TarFile, name: str, data: bytes = b"x", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if info.size else None)


def _zip_symlink(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.txt", "fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


REFUSED = {
    "absolute": (_tar(lambda a: _member(a, "/etc/evil")), "'/etc/evil'", "absolute"),
    "dotdot": (_tar(lambda a: _member(a, "pkg/../../evil.py")), "'pkg/../../evil.py'", "'..'"),
    "zip dotdot": (_zip({"../evil.py": "x"}), "'../evil.py'", "'..'"),
    "symlink out": (_tar(lambda a: _member(a, "pkg/link", type=tarfile.SYMTYPE,
                                           linkname="../../etc/passwd")),
                    "'pkg/link'", "pointing outside"),
    "absolute symlink": (_tar(lambda a: _member(a, "link", type=tarfile.SYMTYPE,
                                                linkname="/etc/passwd")), "'link'", "absolute"),
    "zip symlink out": (_zip_symlink("pkg/link", "../../../etc/shadow"), "'pkg/link'",
                        "pointing outside"),
    "hardlink out": (_tar(lambda a: _member(a, "hard", type=tarfile.LNKTYPE,
                                            linkname="../outside")), "'hard'", "'..'"),
    "device": (_tar(lambda a: _member(a, "dev/sda", type=tarfile.BLKTYPE)), "'dev/sda'",
               "device file"),
    "fifo": (_tar(lambda a: _member(a, "pipe", type=tarfile.FIFOTYPE)), "'pipe'", "FIFO"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_safe_extract_refuses_naming_the_entry(tmp_path: Path, case: str) -> None:
    data, entry, why = REFUSED[case]
    dest = tmp_path / "out"
    with pytest.raises(InvalidArtifact) as caught:
        safe_extract(data, dest)
    assert entry in caught.value.detail and why in caught.value.detail
    assert not dest.exists()
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil.py").exists()


def test_safe_extract_caps_entries_and_unpacked_bytes(tmp_path: Path) -> None:
    many = _zip({f"f{i}.txt": "x" for i in range(12)})
    with pytest.raises(InvalidArtifact, match="'f10.txt'.*more than 10 entries"):
        safe_extract(many, tmp_path / "a", max_entries=10)
    # a highly compressible "bomb": the cap counts bytes as they are unpacked, not the header
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.bin", b"\0" * (3 << 20))
    assert len(bomb.getvalue()) < 20_000
    with pytest.raises(InvalidArtifact, match="'big.bin'.*more than 1048576 bytes"):
        safe_extract(bomb.getvalue(), tmp_path / "b", max_total_bytes=1 << 20)
    assert not (tmp_path / "b").exists()


def test_safe_extract_keeps_links_that_stay_inside(tmp_path: Path) -> None:
    def add(archive):
        _member(archive, "pkg/data.txt", b"payload")
        _member(archive, "pkg/alias.txt", type=tarfile.SYMTYPE, linkname="data.txt")
        _member(archive, "copy.txt", type=tarfile.LNKTYPE, linkname="pkg/data.txt")
    dest = safe_extract(_tar(add), tmp_path / "out")
    assert (dest / "pkg" / "alias.txt").read_text() == "payload"
    assert (dest / "copy.txt").read_bytes() == b"payload"
    archive_path = tmp_path / "a.tar.gz"
    archive_path.write_bytes(_tar(add))
    assert (safe_extract(archive_path, tmp_path / "again") / "copy.txt").is_file()
