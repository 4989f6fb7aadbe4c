"""`--db URL` and MLRUNTIME_DB select the registry of any command (MLRUNTIME_STORE, the older name,
still works); without them the home's own SQLite file is used."""
import json

import pytest

from runtime.cli.main import main


@pytest.fixture(autouse=True)
def no_db_choice(monkeypatch):
    # Empty counts as unset; monkeypatch restores the environment that `--db` writes to.
    monkeypatch.setenv("MLRUNTIME_DB", "")
    monkeypatch.setenv("MLRUNTIME_STORE", "")


def _names(capsys, *argv) -> list[str]:
    assert main(["engines", "list", "--json", "--sandbox", "db-test", *argv]) == 0
    return [engine["name"] for engine in json.loads(capsys.readouterr().out)["children"]]


def test_db_option_and_variables_pick_the_registry_of_any_home(tmp_path, capsys, monkeypatch):
    shared = tmp_path / "shared" / "registry.db"
    shared.parent.mkdir()
    url = f"sqlite:///{shared}"
    engine = tmp_path / "engine.yaml"
    engine.write_text("name: Shared\ntype: python\n")
    home_a, home_b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["engines", "create", str(engine), "--home", home_a, "--db", url,
                 "--sandbox", "db-test"]) == 0
    capsys.readouterr()
    assert shared.is_file() and not (tmp_path / "a" / "registry.db").exists()

    monkeypatch.setenv("MLRUNTIME_DB", "")   # what --db set for this process
    assert _names(capsys, "--home", home_b) == []              # b's own registry
    assert _names(capsys, "--home", home_b, "--db", url) == ["Shared"]
    monkeypatch.setenv("MLRUNTIME_DB", url)
    assert _names(capsys, "--home", home_b) == ["Shared"]
    monkeypatch.setenv("MLRUNTIME_DB", "")
    monkeypatch.setenv("MLRUNTIME_STORE", url)
    assert _names(capsys, "--home", home_b) == ["Shared"]
    # The option wins over the variable: a, never written through, is empty.
    assert _names(capsys, "--home", home_b, "--db", f"sqlite:///{tmp_path / 'a' / 'r.db'}") == []
