"""A host without Rscript: registering an R recipe needs no R; its run fails before anything
starts, naming the one apt command that installs R."""
from __future__ import annotations

from pathlib import Path

from r_helpers import FIXTURES, cli


def test_without_rscript_the_run_fails_naming_the_apt_command(tmp_path: Path) -> None:
    from runtime.artifacts import store_artifact
    from runtime.recipes.r.host import APT_COMMAND

    info = store_artifact(str(FIXTURES / "one_arg"), None, tmp_path / "home")
    assert info.recipe.kind == "r"
    proc = cli(tmp_path / "home", FIXTURES, "train", "one_arg/one.config.json", "--engine",
               "one_arg", env={"MLRUNTIME_RSCRIPT": str(tmp_path / "no-R-here" / "Rscript")},
               check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Rscript is not on this host's PATH" in text and APT_COMMAND in text
