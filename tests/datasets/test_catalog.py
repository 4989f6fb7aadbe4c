"""The data set catalog: `run datasets add|list|rm` on a real registry.db, and resolving ids."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from runtime.cli.main import main as run_main
from runtime.datasets import DatasetEntry, entry_for, resolve_dataset
from runtime.errors import ConfigError, Conflict, NotFound

RETAIL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retail"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def home_args(tmp_path):
    return ["--home", str(tmp_path / "home"), "--org", "Org@AdobeOrg", "--sandbox", "dev"]


def test_add_list_rm_through_the_cli(capsys, tmp_path, home_args):
    training = RETAIL / "DSWRetailSales-Training.parquet"
    code, out, _ = run(capsys, "datasets", "add", "my-retail", str(training), *home_args)
    assert code == 0 and "my-retail" in out and "(parquet)" in out
    code, out, _ = run(capsys, "datasets", "add", "scores", str(tmp_path / "out" / "s.jsonl"),
                       *home_args)
    assert code == 0 and "does not exist yet" in out
    code, out, _ = run(capsys, "datasets", "list", "--json", *home_args)
    listed = {d["id"]: d for d in json.loads(out)["datasets"]}
    assert set(listed) == {"my-retail", "scores"}
    assert listed["my-retail"]["uri"] == training.as_uri()
    assert listed["my-retail"]["path"] == str(training)
    assert listed["my-retail"]["exists"] is True and listed["scores"]["exists"] is False
    assert listed["scores"]["format"] == "jsonl"

    code, out, _ = run(capsys, "datasets", "list", *home_args)
    assert "my-retail" in out and "2 data set(s) in sandbox dev" in out

    # another sandbox sees none of them
    code, out, _ = run(capsys, "datasets", "list", "--json", "--home", home_args[1],
                       "--sandbox", "prod")
    assert json.loads(out)["datasets"] == []

    code, out, err = run(capsys, "datasets", "add", "my-retail", str(training), *home_args)
    assert code == 1 and "already registered" in err
    code, out, err = run(capsys, "datasets", "add", "my-retail", str(RETAIL / "retail.csv"),
                         "--replace", *home_args)
    assert code == 0 and "(csv)" in out

    code, out, _ = run(capsys, "datasets", "rm", "scores", *home_args)
    assert code == 0 and "Removed data set scores" in out
    code, out, err = run(capsys, "datasets", "rm", "scores", *home_args)
    assert code == 1 and "'scores' is not registered" in err and "my-retail" in err
    assert training.exists()   # removing an id never touches files


def test_add_refuses_bad_ids_and_unknown_formats(capsys, tmp_path, home_args):
    code, _, err = run(capsys, "datasets", "add", "bad id", str(tmp_path / "x.csv"), *home_args)
    assert code == 1 and "Invalid data set id 'bad id'" in err
    code, _, err = run(capsys, "datasets", "add", "x.csv", str(tmp_path / "x.csv"), *home_args)
    assert code == 1 and "ends like a file name" in err
    code, _, err = run(capsys, "datasets", "add", "notes", str(tmp_path / "notes.txt"), *home_args)
    assert code == 1 and "--format" in err
    code, out, _ = run(capsys, "datasets", "add", "notes", str(tmp_path / "notes.txt"),
                       "--format", "json", *home_args)
    assert code == 0 and "(jsonl)" in out
    code, _, err = run(capsys, "datasets", "add", "remote", "s3://bucket/x.parquet", *home_args)
    assert code == 1 and "only local paths" in err


def test_service_rules(registry, caller, tmp_path):
    entry = registry.add_dataset(caller, "a", str(tmp_path / "a.parquet"))
    assert entry["format"] == "parquet" and entry["uri"].startswith("file://")
    with pytest.raises(Conflict):
        registry.add_dataset(caller, "a", str(tmp_path / "b.parquet"))
    assert registry.dataset_catalog(caller.scope)["a"]["uri"] == (tmp_path / "a.parquet").as_uri()
    lookup = registry.dataset_lookup(caller)
    assert lookup("a") == (tmp_path / "a.parquet").as_uri() and lookup("zzz") is None
    with pytest.raises(NotFound):
        registry.remove_dataset(caller, "zzz")
    registry.remove_dataset(caller, "a")
    assert registry.list_datasets(caller) == []


def test_resolve_ids_paths_and_uris(tmp_path):
    catalog = {"retail": entry_for("retail", str(RETAIL / "retail.csv")),
               "lines": entry_for("lines", str(tmp_path / "data.txt"), "jsonl")}
    ref = resolve_dataset("retail", catalog)
    assert (ref.id, ref.format, ref.path) == ("retail", "csv", RETAIL / "retail.csv")
    by_path = resolve_dataset(str(tmp_path / "data.txt"), catalog)
    assert by_path.format == "jsonl"   # a path registered with a format keeps it
    uri = resolve_dataset((tmp_path / "x.parquet").as_uri(), catalog)
    assert uri.path == tmp_path / "x.parquet" and uri.format == "parquet"
    assert resolve_dataset("rel/x.csv", {}).format == "csv"
    folder = resolve_dataset(str(tmp_path), {})
    assert folder.format is None and folder.path == tmp_path


def test_unknown_id_names_it_and_the_registered_ones():
    catalog = {"retail": DatasetEntry("retail", "file:///data/retail.csv", "csv")}
    with pytest.raises(ConfigError) as err:
        resolve_dataset("5c8a9b0e1d2f", catalog)
    assert "'5c8a9b0e1d2f'" in str(err.value) and "registered: retail" in str(err.value)
    assert "run datasets add 5c8a9b0e1d2f PATH" in str(err.value)
    with pytest.raises(ConfigError, match="registered: none"):
        resolve_dataset("nope", {})
    with pytest.raises(ConfigError, match="Unsupported data set URI"):
        resolve_dataset("s3://bucket/key.parquet", {})
    with pytest.raises(ConfigError, match="No data set given"):
        resolve_dataset("", {})


def test_catalog_from_the_environment_file(tmp_path, monkeypatch):
    from runtime import datasets

    frame = pd.DataFrame({"a": [1, 2, 3]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    path = datasets.write_catalog_file({"mine": entry_for("mine", str(tmp_path / "a.csv"))},
                                       tmp_path / "run" / "datasets.json")
    monkeypatch.setenv(datasets.ENV_DATASETS_FILE, str(path))
    datasets.use_catalog(None)
    pd.testing.assert_frame_equal(datasets.read_dataset(resolve_dataset("mine")), frame)
    monkeypatch.setenv(datasets.ENV_DATASETS_FILE, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="cannot be read"):
        resolve_dataset("mine")


def test_the_data_roots_confine_registered_locations_and_ids(registry, caller, tmp_path):
    from runtime.data_roots import DataRoots
    from runtime.errors import Forbidden

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    registry.add_dataset(caller, "early", str(tmp_path / "outside.csv"))   # before any roots
    registry.data_roots = DataRoots.of([allowed])
    registry.add_dataset(caller, "inside", str(allowed / "in.parquet"))
    with pytest.raises(Forbidden, match="outside this server's data roots"):
        registry.add_dataset(caller, "outside", str(tmp_path / "outside.csv"))
    registry.check_run_data_sets(caller, {"trainingDataSetId": "inside"})
    with pytest.raises(Forbidden, match="catalog entry"):   # an id is checked where it points
        registry.check_run_data_sets(caller, {"trainingDataSetId": "early"})
