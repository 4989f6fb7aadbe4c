"""Engines whose artifact is a recipe: checked and stored when written (a 400 otherwise), the
digest, kind and version on the Engine (server-owned), a new version per new artifact."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recipe_helpers import FIXTURES, tar_folder, zip_folder
from runtime.artifacts import InvalidArtifact
from runtime.errors import NotFound
from runtime.schemas import ENGINE, MODEL


def _image(doc):
    return doc["artifacts"]["default"]["image"]


def test_an_uploaded_recipe_is_stored_and_described_on_the_engine(registry, caller) -> None:
    data = zip_folder(FIXTURES / "retail_functions")
    body = {"name": "Retail", "artifacts": {"default": {"image": {
        "sha256": "forged", "recipeKind": "pyspark", "artifactVersion": 99}}}}
    engine = registry.create_engine(caller, body, {"defaultArtifact": data})
    image = _image(engine)
    import hashlib
    assert image["sha256"] == hashlib.sha256(data).hexdigest()     # the client's value is ignored
    assert (image["recipeKind"], image["artifactVersion"]) == ("python-functions", 1)
    assert (image["packagingType"], engine["type"]) == ("zip", "Python")
    stored = Path(image["location"].removeprefix("file://"))
    assert stored.read_bytes() == data and stored.is_relative_to(registry.home.root / "recipes")
    assert _image(registry.get(ENGINE, caller, engine["id"]))["sha256"] == image["sha256"]


def test_json_locations_folder_uri_plugin_and_module(registry, caller, tmp_path) -> None:
    folder = registry.create_engine(caller, {"name": "f", "artifacts": {"default": {"image": {
        "location": str(FIXTURES / "class_recipe")}}}})
    assert _image(folder)["recipeKind"] == "python-classes"
    assert _image(folder)["location"] == str(FIXTURES / "class_recipe")   # as the user gave it
    archive = tmp_path / "classify.tar.gz"
    archive.write_bytes(tar_folder(FIXTURES / "classify_functions"))
    uri = registry.create_engine(caller, {"name": "u", "artifacts": {"default": {"image": {
        "location": archive.as_uri()}}}})
    assert (_image(uri)["recipeKind"], _image(uri)["packagingType"]) == ("python-functions", "tar.gz")
    plugin = registry.create_engine(caller, {"name": "p", "artifacts": {"default": {"image": {
        "location": "noop"}}}})
    assert "sha256" not in _image(plugin)
    module = registry.create_engine(caller, {"name": "m", "artifacts": {"default": {"image": {
        "location": "engines.noop:NoopEngine", "sha256": "forged"}}}})
    assert "sha256" not in _image(module)
    bare = registry.create_engine(caller, {"name": "no image"})
    assert "artifacts" not in bare


@pytest.mark.parametrize("location, expected", [
    ("no-such-plugin", "is neither a recipe"),
    ("file:///no/such/recipe.zip", "does not exist"),
    ("/no/such/folder", "does not exist"),
    ("no_such_module_xyz:Engine", "not importable"),
    ("https://example.com/recipe.egg", "is not a local path"),
])
def test_a_location_that_is_nothing_runnable_is_a_400(registry, caller, location, expected) -> None:
    with pytest.raises(InvalidArtifact) as caught:
        registry.create_engine(caller, {"name": "bad", "artifacts": {"default": {"image": {
            "location": location}}}})
    assert expected in caught.value.detail and caught.value.status == 400
    assert registry.store.list(ENGINE, caller.scope, __import__("runtime.listing", fromlist=[
        "ListQuery"]).ListQuery())[1] == 0


def test_an_upload_that_is_not_a_recipe_writes_nothing(registry, caller) -> None:
    with pytest.raises(InvalidArtifact, match="not an archive"):
        registry.create_engine(caller, {"name": "x"}, {"defaultArtifact": b"engine artifact"})
    assert not (registry.home.artifacts / "engines").exists() or \
        not any((registry.home.artifacts / "engines").iterdir())


def test_a_put_with_a_new_artifact_is_a_new_version(registry, caller, tmp_path) -> None:
    copy = tmp_path / "recipe"
    shutil.copytree(FIXTURES / "class_recipe", copy)
    engine = registry.create_engine(caller, {"name": "v", "artifacts": {"default": {"image": {
        "location": str(copy)}}}})
    first = _image(engine)["sha256"]
    same = registry.replace_engine(caller, engine["id"], {"name": "v2", "artifacts": {"default": {
        "image": {"location": str(copy)}}}})
    assert (_image(same)["sha256"], _image(same)["artifactVersion"]) == (first, 1)
    (copy / "classrecipe" / "scorer.py").write_text("# a new version\n", encoding="utf-8")
    # The generic replace (the JSON PUT) goes through the same check.
    from runtime.schemas import ENGINE as E
    newer = registry.replace(E, caller, engine["id"], {"name": "v3", "artifacts": {"default": {
        "image": {"location": str(copy)}}}})
    assert _image(newer)["artifactVersion"] == 2 and _image(newer)["sha256"] != first
    # the first version is still stored: runs that recorded it can be traced
    assert (registry.home.root / "recipes" / first / "recipe.json").is_file()
    upload = registry.replace_engine(caller, engine["id"], {"name": "v4"},
                                     {"defaultArtifact": zip_folder(FIXTURES / "class_recipe")})
    assert _image(upload)["artifactVersion"] == 3
    with pytest.raises(NotFound):
        registry.replace_engine(caller, "missing", {"name": "x"})


def test_a_client_cannot_set_a_model_digest(registry, caller, tmp_path) -> None:
    engine = registry.create_engine(caller, {"name": "e"})
    from runtime.schemas import EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE
    instance = registry.create(MLINSTANCE, caller, {"name": "i", "engineId": engine["id"]})
    experiment = registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": instance["id"]})
    run = registry.create_run(caller, experiment["id"], {"mode": "train"})
    model = registry.create_model(caller, {"name": "m", "experimentRunId": run["id"],
                                           "modelArtifactDigest": "sha256:forged"}, b"pickle")
    assert "modelArtifactDigest" not in model
    folder = tmp_path / "model"
    folder.mkdir()
    trained = registry.register_model(caller, {"name": "t", "experimentRunId": run["id"]}, folder,
                                      digest="sha256:abc")
    assert trained["modelArtifactDigest"] == "sha256:abc"
    kept = registry.replace(MODEL, caller, trained["id"], {"name": "t2", "experimentRunId": run["id"],
                                                           "modelArtifactDigest": "sha256:other"})
    assert kept["modelArtifactDigest"] == "sha256:abc"
