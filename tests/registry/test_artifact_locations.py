"""Artifacts where every server of one registry can read them (MLRUNTIME_ARTIFACTS): a recipe
registered and a Model trained in one home are run and scored from a second home sharing the
registry, through a folder both use in place and through an S3-compatible bucket (moto's server on
loopback), whose objects are checked against their sha256 when fetched.

The runs are real `run ...` processes of a small class recipe (pandas only, this interpreter:
`--env-manager local`), trained once per location for the module."""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_process import run_cli, summary

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "tests" / "recipes" / "fixtures" / "old_classes"
BUCKET, PREFIX = "team-artifacts", "lab/one"
RUN_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, one bucket in it, and the environment a `run`
    process needs to reach it (credentials as boto reads them; no ~/.aws of the machine)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    empty = tmp_path_factory.mktemp("aws") / "none"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_SHARED_CREDENTIALS_FILE": str(empty), "AWS_CONFIG_FILE": str(empty),
           "MLRUNTIME_S3_ENDPOINT": endpoint}
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    yield {"env": env, "client": client, "endpoint": endpoint}
    server.stop()


def cli(home: Path, *args: str, env: dict[str, str], check: bool = True):
    return run_cli(home, *args, cwd=REPO, timeout_s=RUN_TIMEOUT_S, check=check, env=env)


def _sales(folder: Path) -> Path:
    data = folder / "sales.csv"
    data.write_text("store,weeklySales\n1,10\n2,20\n1,30\n")
    return data


def _train(root: Path, env: dict[str, str]) -> dict:
    """The recipe registered and trained in home one (its registry shared by name)."""
    data = _sales(root)
    trained = summary(cli(root / "one", "train", str(RECIPE / "old.config.json"), "--engine",
                          str(RECIPE), "--env-manager", "local", "--json",
                          "-p", f"trainingDataSetId={data}", env=env))
    assert trained["state"] == "DONE", trained
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT, MODEL

    registry = Registry.open(resolve_home(root / "one"))
    try:
        model = registry.get(MODEL, Caller.local(), trained["modelId"])
        experiment = registry.get(EXPERIMENT, Caller.local(), trained["experimentId"])
    finally:
        registry.close()
    return {"root": root, "env": env, "data": data, "model": model,
            "instance": experiment["mlInstanceId"], "trained": trained}


def _score(setup: dict, home_name: str, *extra: str, check: bool = True,
           env: dict[str, str] | None = None):
    """A score run of the trained MLInstance from another home of the same registry."""
    root = setup["root"]
    out = root / f"{home_name}-scored.json"
    proc = cli(root / home_name, "score", setup["instance"], "--env-manager", "local", "--json",
               "-p", f"scoringDataSetId={setup['data']}", "-p", f"scoringResultsDataSetId={out}",
               *extra, env=setup["env"] if env is None else env, check=check)
    return proc, out


@pytest.fixture(scope="module")
def in_bucket(s3, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bucket")
    env = {**s3["env"], "MLRUNTIME_ARTIFACTS": f"s3://{BUCKET}/{PREFIX}",
           "MLRUNTIME_STORE": f"sqlite:///{root / 'one' / 'registry.db'}"}
    return {**_train(root, env), "s3": s3}


@pytest.fixture(scope="module")
def in_folder(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("folder")
    env = {"MLRUNTIME_ARTIFACTS": str(root / "mnt" / "artifacts"),
           "MLRUNTIME_STORE": f"sqlite:///{root / 'one' / 'registry.db'}"}
    return _train(root, env)


def _log_seen_from(setup: dict, home_name: str) -> str:
    """The training run's log as home `home_name` serves it (GET .../runs/ID/logs/worker.log)."""
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry

    trained = setup["trained"]
    with _environment(setup["env"]):
        registry = Registry.open(resolve_home(setup["root"] / home_name))
        try:
            path = registry.run_log(Caller.local(), trained["experimentId"], trained["runId"],
                                    "worker.log")
        finally:
            registry.close()
    assert not path.is_relative_to(setup["root"] / "one")
    return path.read_text()


def _scored_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _bucket_keys(s3: dict) -> list[str]:
    listed = s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_a_second_home_scores_with_a_model_and_recipe_from_the_bucket(in_bucket):
    model, sha = in_bucket["model"], in_bucket["model"]["modelArtifactUri"].rsplit("/", 1)[1]
    assert model["modelArtifactUri"] == f"s3://{BUCKET}/{PREFIX}/models/{sha}"
    keys = _bucket_keys(in_bucket["s3"])
    assert f"{PREFIX}/models/{sha}/model.json" in keys
    assert f"{PREFIX}/models/{sha}.manifest.json" in keys
    assert any(k.startswith(f"{PREFIX}/recipes/") and k.endswith("oldcls/jobs.py") for k in keys)

    proc, out = _score(in_bucket, "two")
    scored = summary(proc)
    assert scored["state"] == "DONE" and scored["modelId"] == model["id"], scored
    assert [row["prediction"] for row in _scored_rows(out)] == [40.0, 40.0, 40.0]
    two = in_bucket["root"] / "two"
    cached = two / "artifacts" / "cache" / "s3" / BUCKET / "lab" / "one" / "models" / sha
    assert json.loads((cached / "model.json").read_text())["mean"] == 40.0   # fetched, checked
    [manifest] = [k for k in _bucket_keys(in_bucket["s3"])
                  if k.startswith(f"{PREFIX}/recipes/") and k.endswith(".manifest.json")]
    recipe_sha = manifest.split("/")[-1].removesuffix(".manifest.json")
    assert [p.name for p in (two / "recipes").iterdir()] == [recipe_sha]   # fetched, stored
    own_log = Path(in_bucket["trained"]["log"]).read_text()
    assert "stage train done" in own_log and _log_seen_from(in_bucket, "two") == own_log


def test_a_changed_object_in_the_bucket_is_refused_by_its_checksum(in_bucket):
    client, sha = in_bucket["s3"]["client"], in_bucket["model"]["modelArtifactUri"][-64:]
    model_key = f"{PREFIX}/models/{sha}/model.json"
    recipe_key = next(k for k in _bucket_keys(in_bucket["s3"]) if k.endswith("oldcls/jobs.py"))
    originals = {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                 for key in (model_key, recipe_key)}
    try:
        client.put_object(Bucket=BUCKET, Key=model_key, Body=b'{"mean": 1e9, "config": {}}')
        proc, out = _score(in_bucket, "three", check=False)
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0 and not out.exists()
        assert f"Model artifact s3://{BUCKET}/{PREFIX}/models/{sha} does not match its sha256" \
            in said, said
        assert not (in_bucket["root"] / "three" / "artifacts" / "cache" / "s3" / BUCKET / "lab" /
                    "one" / "models" / sha).exists()   # nothing half-fetched is kept

        # A recipe changed in the bucket: refused where every run prepares its Engine.
        client.put_object(Bucket=BUCKET, Key=recipe_key,
                          Body=originals[recipe_key] + b"\nimport os; os.system('true')\n")
        from runtime.artifact_store import ArtifactChecksumMismatch
        from runtime.recipes.registration import recipe_reference_for

        four = in_bucket["root"] / "four"
        engine = {"id": "e1", "name": "old-classes", "artifacts": {"default": {"image": {
            "sha256": recipe_key.split("/")[3]}}}}
        with _environment(in_bucket["env"]):
            with pytest.raises(ArtifactChecksumMismatch) as refused:
                recipe_reference_for(engine, four)
        assert refused.value.detail.startswith(
            f"Recipe sha256:{recipe_key.split('/')[3]} at s3://{BUCKET}/{PREFIX}/recipes/")
        assert "does not match its sha256" in refused.value.detail
        assert not [p for p in (four / "recipes").iterdir()]   # nothing stored, nothing left
    finally:
        for key, body in originals.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)


@contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def test_a_missing_bucket_or_endpoint_is_said_plainly(s3, tmp_path):
    data = _sales(tmp_path)
    instance = tmp_path / "noop.json"
    instance.write_text(json.dumps({"name": "noop", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(data)}]}]}))
    env = {**s3["env"], "MLRUNTIME_ARTIFACTS": "s3://no-such-bucket/x"}
    proc = cli(tmp_path / "home", "train", str(instance), "--json", env=env, check=False)
    assert proc.returncode != 0
    reason = summary(proc)["reason"]
    assert f"the bucket 'no-such-bucket' does not exist at s3://no-such-bucket/x (endpoint " \
           f"{s3['endpoint']})" in reason, reason

    from runtime.artifact_store import ArtifactStoreError, BucketLocation

    with socket.socket() as probe:   # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with _environment({**s3["env"], "MLRUNTIME_S3_ENDPOINT": f"http://127.0.0.1:{closed}"}):
        location = BucketLocation(f"s3://{BUCKET}/{PREFIX}", home_root=tmp_path / "h")
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.json").write_text("{}")
        with pytest.raises(ArtifactStoreError) as refused:
            location.publish_model(tmp_path / "m")
    assert f"(endpoint http://127.0.0.1:{closed}) failed: EndpointConnectionError" in \
        refused.value.detail and "set MLRUNTIME_S3_ENDPOINT" in refused.value.detail


def test_two_homes_use_one_shared_folder_in_place(in_folder):
    shared = in_folder["root"] / "mnt" / "artifacts"
    model = in_folder["model"]
    assert model["modelArtifactUri"] == (shared / "models" / model["id"]).as_uri()
    env = {k: v for k, v in in_folder["env"].items() if k != "MLRUNTIME_ARTIFACTS"}
    proc, out = _score(in_folder, "two", "--artifacts", str(shared), env=env)   # the flag's way
    scored = summary(proc)
    assert scored["state"] == "DONE" and scored["modelId"] == model["id"], scored
    assert [row["prediction"] for row in _scored_rows(out)] == [40.0, 40.0, 40.0]
    two = in_folder["root"] / "two"
    assert not (two / "recipes").exists() and not (two / "artifacts").exists()   # nothing copied
    assert _log_seen_from(in_folder, "two") == Path(in_folder["trained"]["log"]).read_text()
    assert not (in_folder["root"] / "one" / "recipes").exists()
    [recipe] = [p for p in (shared / "recipes").iterdir() if not p.name.startswith(".")]
    assert scored["log"] and recipe.name in Path(scored["log"]).read_text()


def test_the_default_is_the_homes_own_folders(tmp_path, monkeypatch):
    from runtime.artifact_store import FolderLocation, location_for

    monkeypatch.delenv("MLRUNTIME_ARTIFACTS", raising=False)
    location = location_for(tmp_path)
    assert isinstance(location, FolderLocation) and not location.remote
    assert (location.models_root, location.recipes_root) == (tmp_path / "artifacts" / "models",
                                                             tmp_path / "recipes")
    folder = location.new_model_folder("m1")
    folder.mkdir(parents=True)
    assert location.publish_model(folder) == folder.as_uri()   # in place: nothing copied


def test_a_location_of_another_kind_or_without_s3fs_says_what_to_do(tmp_path, monkeypatch):
    from runtime.artifact_store import BucketLocation, location_for
    from runtime.errors import ConfigError, MissingDependency

    monkeypatch.setenv("MLRUNTIME_ARTIFACTS", "gs://bucket/x")
    with pytest.raises(ConfigError, match="expected a folder path .* or an S3-compatible bucket"):
        location_for(tmp_path)
    monkeypatch.setitem(sys.modules, "s3fs", None)   # as if not installed
    location = BucketLocation("s3://bucket/x", home_root=tmp_path)
    with pytest.raises(MissingDependency) as missing:
        location.fetch_recipe("0" * 64, tmp_path / "work")
    assert missing.value.detail == ("s3fs is not installed; install it with: "
                                    "pip install 'mlinstance-runtime[s3]'")
    assert not (tmp_path / "work").exists()
    shutil.rmtree(tmp_path / "artifacts", ignore_errors=True)


def _registries(root: Path):
    """Two homes' registries on one store (home one's SQLite file), opened in this process."""
    from runtime.home import resolve_home
    from runtime.registry import Registry

    url = f"sqlite:///{root / 'one' / 'registry.db'}"
    return (Registry.open(resolve_home(root / "one", db=url)),
            Registry.open(resolve_home(root / "two", db=url)))


def _zipped(folder: Path) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, str(Path(folder.name) / path.relative_to(folder)))
    return buffer.getvalue()


def _remove(folder: Path) -> None:
    """A stored recipe's read-only tree, removed (as if its home were on another host)."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700)
    shutil.rmtree(folder)


def test_uploaded_models_and_an_engine_replaced_on_another_host_through_the_bucket(s3, tmp_path):
    """The API's paths, in process: a Model uploaded in home one is downloaded from home two; an
    Engine whose recipe was uploaded in home one is replaced from home two, its location (home
    one's path, absent there) kept, its recipe fetched by sha256 (the same artifactVersion)."""
    import zipfile

    from runtime.registry import Caller
    from runtime.schemas import ENGINE, EXPERIMENT, MLINSTANCE

    caller = Caller.local()
    with _environment({**s3["env"], "MLRUNTIME_ARTIFACTS": f"s3://{BUCKET}/uploads"}):
        one, two = _registries(tmp_path)
        try:
            packed = _zipped(RECIPE)
            engine = one.create_engine(caller, {"name": "old", "type": "Python"},
                                       artifacts={"defaultArtifact": packed})
            image = engine["artifacts"]["default"]["image"]
            _remove(tmp_path / "one" / "recipes")
            doc = two.get(ENGINE, caller, engine["id"])
            replaced = two.replace_engine(caller, engine["id"], {**doc, "description": "moved"})
            kept = replaced["artifacts"]["default"]["image"]
            assert (kept["location"], kept["sha256"], kept["artifactVersion"]) == \
                (image["location"], image["sha256"], 1)
            assert (tmp_path / "two" / "recipes" / image["sha256"] / "recipe.json").is_file()

            instance = one.create(MLINSTANCE, caller, {"name": "i", "engineId": engine["id"]})
            experiment = one.create(EXPERIMENT, caller, {"name": "e",
                                                         "mlInstanceId": instance["id"]})
            run = one.create_run(caller, experiment["id"], {"mode": "train"})
            archive = tmp_path / "model.zip"
            with zipfile.ZipFile(archive, "w") as packed_model:
                packed_model.writestr("model.json", '{"mean": 3}')
            folder_model = one.create_model(caller, {"name": "m", "experimentRunId": run["id"]},
                                            archive.read_bytes(), "model.zip")
            file_model = one.create_model(caller, {"name": "f", "experimentRunId": run["id"]},
                                          b"weights", "weights.bin")
            assert folder_model["modelArtifactUri"].startswith(f"s3://{BUCKET}/uploads/models/")
            assert file_model["modelArtifactUri"].endswith("/weights.bin")
            fetched = two.model_artifact(caller, folder_model["id"])
            with zipfile.ZipFile(fetched) as read:
                assert read.read("model.json") == b'{"mean": 3}'
            assert two.model_artifact(caller, file_model["id"]).read_bytes() == b"weights"
            assert str(fetched).startswith(str(tmp_path / "two" / "artifacts" / "cache"))
        finally:
            one.close()
            two.close()


def test_recipes_of_the_home_move_to_the_shared_folder_when_first_used(tmp_path, monkeypatch):
    """A recipe registered before MLRUNTIME_ARTIFACTS named a shared folder is stored there from
    the home's own store the first time a run needs it."""
    from runtime.recipes.registration import recipe_reference_for

    monkeypatch.delenv("MLRUNTIME_ARTIFACTS", raising=False)
    one, two = _registries(tmp_path)
    try:
        from runtime.registry import Caller

        engine = one.create_engine(Caller.local(), {"name": "old", "type": "Python", "artifacts": {
            "default": {"image": {"location": str(RECIPE)}}}})
    finally:
        one.close()
        two.close()
    sha = engine["artifacts"]["default"]["image"]["sha256"]
    assert (tmp_path / "one" / "recipes" / sha / "recipe.json").is_file()
    shared = tmp_path / "mnt"
    monkeypatch.setenv("MLRUNTIME_ARTIFACTS", str(shared))
    reference = recipe_reference_for(engine, tmp_path / "one")
    assert reference.endswith(str(shared / "recipes" / sha))
    assert (shared / "recipes" / sha / "src" / RECIPE.name / "oldcls" / "jobs.py").is_file()


def test_a_recipe_registered_before_the_bucket_is_put_there_when_registered_again(s3, tmp_path,
                                                                                  monkeypatch):
    """An Engine written while the artifacts were the home's own: another server cannot run it
    (it says where it looked); `run ... --engine PATH` once more puts the recipe in the bucket."""
    from runtime.errors import ConfigError
    from runtime.recipes.registration import recipe_reference_for
    from runtime.registry import Caller
    from runtime.run_targets import recipe_engine

    monkeypatch.delenv("MLRUNTIME_ARTIFACTS", raising=False)
    one, two = _registries(tmp_path)
    try:
        engine = recipe_engine(one, Caller.local(), RECIPE)
        location = f"s3://{BUCKET}/before"
        with _environment({**s3["env"], "MLRUNTIME_ARTIFACTS": location}):
            with pytest.raises(ConfigError, match=f"is neither stored at .* nor in {location}; "
                                                  "register the recipe again"):
                recipe_reference_for(engine, two.home)
            assert recipe_engine(one, Caller.local(), RECIPE)["id"] == engine["id"]   # the same
            reference = recipe_reference_for(engine, two.home)
        assert reference.endswith(str(tmp_path / "two" / "recipes" /
                                      engine["artifacts"]["default"]["image"]["sha256"]))
    finally:
        one.close()
        two.close()
