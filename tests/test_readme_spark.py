"""The README's Spark blocks, run as written (tests/test_readme.py runs the others): a module of
their own, so that a second test worker runs these minutes of JVMs beside the rest."""
from __future__ import annotations

import pytest

from test_readme import SPARK_BLOCKS, run_readme_block, sandbox  # noqa: F401  (the fixture)


@pytest.mark.parametrize("block", SPARK_BLOCKS, ids=[f"line{b[0].line}" for b in SPARK_BLOCKS])
def test_readme_spark_block_runs_as_written(block, sandbox, request):  # noqa: F811
    run_readme_block(block, sandbox, request)
