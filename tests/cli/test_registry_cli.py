"""`run engines ...` and `run instances ...` on the local store, and `run --help` start-up cost."""
import json
import subprocess
import sys

import pytest

from runtime.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home_args(tmp_path):
    return ["--home", str(tmp_path / "home"), "--sandbox", "cli-test"]


def _engine_file(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text("name: Retail\ntype: python\ndescription: from yaml\n")
    return path


def test_engine_and_instance_lifecycle(tmp_path, capsys, home_args):
    code, out, _ = run(capsys, "engines", "create", str(_engine_file(tmp_path)), "--json",
                       *home_args)
    assert code == 0
    engine = json.loads(out)
    assert engine["type"] == "Python" and engine["description"] == "from yaml"

    inst_file = tmp_path / "inst.json"
    inst_file.write_text(json.dumps({"name": "Inst", "engineId": engine["id"], "tasks": [
        {"name": "fp", "parameters": [{"key": "k", "value": "v"}]}]}))
    code, out, _ = run(capsys, "instances", "create", str(inst_file), *home_args)
    assert code == 0 and out.startswith("Created MLInstance ")
    inst_id = out.split()[-1]

    code, out, _ = run(capsys, "instances", "list", *home_args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ENGINE", "CREATED"]
    assert lines[1].split()[:3] == [inst_id, "Inst", engine["id"]]
    assert "1 of 1 MLInstances" in lines[-1]

    code, out, _ = run(capsys, "instances", "get", inst_id, "--json", *home_args)
    assert json.loads(out)["tasks"][0]["name"] == "featurePipeline"

    inst_file.write_text(json.dumps({"name": "Renamed", "engineId": engine["id"]}))
    code, out, _ = run(capsys, "instances", "update", inst_id, str(inst_file), "--json",
                       *home_args)
    assert json.loads(out)["name"] == "Renamed" and "tasks" not in json.loads(out)

    code, out, _ = run(capsys, "instances", "list", "--property", "name==Renamed", "--json",
                       *home_args)
    assert [c["id"] for c in json.loads(out)["children"]] == [inst_id]

    code, out, _ = run(capsys, "engines", "delete", engine["id"], "--json", *home_args)
    assert json.loads(out)["deletedCount"] == 2      # the engine and its MLInstance
    code, out, err = run(capsys, "instances", "get", inst_id, *home_args)
    assert code == 1 and f"MLInstance '{inst_id}' not found" in err


def test_bulk_delete_by_engine(tmp_path, capsys, home_args):
    _, out, _ = run(capsys, "engines", "create", str(_engine_file(tmp_path)), "--json", *home_args)
    engine_id = json.loads(out)["id"]
    inst = tmp_path / "i.yaml"
    inst.write_text(f"name: a\nengineId: {engine_id}\n")
    for _ in range(3):
        run(capsys, "instances", "create", str(inst), *home_args)
    code, out, _ = run(capsys, "instances", "delete", "--engine", engine_id, *home_args)
    assert code == 0 and "MLInstances successfully deleted (3 object(s)" in out
    _, out, _ = run(capsys, "instances", "list", "--json", *home_args)
    assert json.loads(out)["_page"]["totalCount"] == 0


@pytest.mark.parametrize("content, needle", [
    ("name: [unclosed", "is not valid YAML"),
    ("description: no name\n", "name is required"),
])
def test_bad_files_are_clear_one_line_errors(tmp_path, capsys, home_args, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, out, err = run(capsys, "engines", "create", str(path), *home_args)
    assert code == 1 and needle in err and "Traceback" not in err
    assert err.count("\n") == 1
    _, out, _ = run(capsys, "engines", "list", "--json", *home_args)
    assert json.loads(out)["_page"]["totalCount"] == 0


def test_missing_file(tmp_path, capsys, home_args):
    code, _, err = run(capsys, "engines", "create", str(tmp_path / "nope.json"), *home_args)
    assert code == 1 and "does not exist" in err


def test_cli_and_api_share_the_default_sandbox(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from runtime.api.app import ServerSettings, create_app
    from runtime.home import resolve_home

    home = tmp_path / "home"
    run(capsys, "engines", "create", str(_engine_file(tmp_path)), "--home", str(home))
    app = create_app(ServerSettings(home=resolve_home(home)))
    with TestClient(app) as client:
        names = [c["name"] for c in client.get("/data/sensei/engines").json()["children"]]
    app.state.registry.close()
    assert names == ["Retail"]


def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom runtime.cli.main import build_parser\n"
            "build_parser().format_help()\n"
            "heavy = [m for m in ('torch', 'pyspark', 'ray', 'fastapi', 'pandas') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_orderby_descending_is_read_as_a_value(tmp_path, capsys, home_args):
    """`--orderby -created` (as the README writes it) sorts newest first instead of failing."""
    for name in ("first", "second"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\ntype: Python\n")
        assert run(capsys, "engines", "create", str(path), *home_args)[0] == 0
    code, out, err = run(capsys, "engines", "list", "--orderby", "-created", "--json", *home_args)
    assert code == 0, err
    assert [e["name"] for e in json.loads(out)["children"]] == ["second", "first"]
    code, out, _ = run(capsys, "engines", "list", "--orderby", "created", "--json", *home_args)
    assert [e["name"] for e in json.loads(out)["children"]] == ["first", "second"]
