"""A clone without ../shared skips exactly the tests that read it: the source reading that decides
which ones (tests/shared_files.py) follows constants, helper functions and imports between modules."""
from __future__ import annotations

import textwrap

import shared_files


def test_shared_names_follow_constants_functions_and_imports(tmp_path):
    (tmp_path / "helpers_x.py").write_text(textwrap.dedent('''
        from pathlib import Path
        REPO = Path(__file__).resolve().parents[1]
        RETAIL = REPO.parent / "shared" / "data" / "retail"
        TRAINING = RETAIL / "retail-training.csv"
        OTHER = REPO / "configs"

        def train_frame():
            return TRAINING.read_text()

        def unrelated():
            return OTHER
    '''))
    module = tmp_path / "test_x.py"
    module.write_text(textwrap.dedent('''
        from helpers_x import train_frame, unrelated
        REFERENCE = ".." + "/shared/reference"

        def uses_helper():
            return train_frame()

        def guarded():
            if REFERENCE.exists():
                return REFERENCE

        def plain():
            return unrelated()
    '''))
    helpers = shared_files.shared_names(tmp_path / "helpers_x.py")
    assert helpers["RETAIL"] == {"data/retail"}
    assert helpers["TRAINING"] == {"data/retail/retail-training.csv"}
    assert helpers["train_frame"] == {"data/retail/retail-training.csv"}
    assert "unrelated" not in helpers and "OTHER" not in helpers

    names = shared_files.shared_names(module)
    assert names["uses_helper"] == {"data/retail/retail-training.csv"}
    assert "guarded" not in names      # it asks .exists() itself
    assert "plain" not in names


def test_the_skip_reason_names_each_file_and_where_it_is_expected():
    reason = shared_files.skip_reason(frozenset({"reference/sensei-ml-api.openapi.yaml"}))
    assert str(shared_files.SHARED / "reference" / "sensei-ml-api.openapi.yaml") in reason
    assert "is not there" in reason

