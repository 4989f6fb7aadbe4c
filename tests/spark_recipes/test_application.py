"""application.yaml read and checked at registration, statically (no Spark, no recipe import)."""
from __future__ import annotations

import shutil
import sys

import pytest

from spark_recipe_helpers import FIXTURES
from runtime.artifacts import InvalidArtifact, inspect_recipe, store_artifact
from runtime.recipes import load_recipe_engine, reference


def _variant(tmp_path, application: str, extra: str | None = None):
    folder = tmp_path / "variant"
    shutil.copytree(FIXTURES / "broken_roles", folder)
    (folder / "brokenrecipe" / "resources" / "application.yaml").write_text(application)
    if extra is not None:
        (folder / "brokenrecipe" / "extra.py").write_text(extra)
    return folder


def test_the_test_recipes_are_pyspark_recipes():
    for name in ("retail_regression", "retail_features", "broken_roles"):
        info = inspect_recipe(FIXTURES / name)
        assert info.kind == "pyspark" and info.application.endswith("resources/application.yaml")


@pytest.mark.parametrize("application, extra, message", [
    ("training.dataLoader: brokenrecipe.parts.Missing\npipeline.class: brokenrecipe.parts.Factory\n",
     None, "role training.dataLoader = brokenrecipe.parts.Missing: the module brokenrecipe.parts "
           "defines no class Missing"),
    ("training.dataLoader: brokenrecipe.gone.Loader\npipeline.class: brokenrecipe.parts.Factory\n",
     None, "the module brokenrecipe.gone is not in the artifact"),
    ("training.dataLoader: brokenrecipe.parts.Factory\npipeline.class: brokenrecipe.parts.Factory\n",
     None, "the class Factory does not subclass sdk.data_loader.DataLoader"),
    ("training.dataLoader: brokenrecipe.extra.Plain\npipeline.class: brokenrecipe.parts.Factory\n",
     "class Plain(object):\n    pass\n", "the class Plain does not subclass sdk.data_loader.DataLoader"),
    ("scoring.dataLoader: brokenrecipe.parts.ExplodingLoader\n", None, "which run no task"),
    ("something: else\n", None, "names no role"),
])
def test_registration_refuses_what_cannot_run(tmp_path, application, extra, message):
    with pytest.raises(InvalidArtifact) as refused:
        store_artifact(_variant(tmp_path, application, extra), None, tmp_path / "home")
    assert refused.value.status == 400 and message in refused.value.detail


@pytest.mark.parametrize("extra", [
    "from .parts import ExplodingLoader\nclass Mine(ExplodingLoader):\n    pass\n",   # via the recipe
    "import sdk.data_loader as dl\nclass Mine(dl.DataLoader):\n    pass\n",          # module alias
    "from elsewhere import Base\nclass Mine(Base):\n    pass\n",                        # unknowable
])
def test_bases_reached_indirectly_or_unknowable_pass(tmp_path, extra):
    folder = _variant(tmp_path, "training.dataLoader: brokenrecipe.extra.Mine\n"
                                "pipeline.class: brokenrecipe.parts.Factory\n", extra)
    assert inspect_recipe(folder).kind == "pyspark"


def test_the_engine_class_is_built_without_importing_the_recipe(tmp_path):
    stored = store_artifact(FIXTURES / "retail_features", None, tmp_path / "home")
    engine = load_recipe_engine(reference("pyspark", stored.dir))
    assert engine.kind == "pyspark" and engine.name == "retail-features-spark"
    assert engine.roles["feature.dataset.transformer"] == "retailfeatures.transform.WeeklyFeatures"
    assert engine.roles["feature.dataLoader"] == "retailfeatures.io.RawLoader"   # nested yaml keys
    assert not any(name == "retailfeatures" or name.startswith("retailfeatures.") for name in sys.modules)


# --- bare class names, as the platform's own samples write them --------------------------------

def test_the_platform_style_recipe_s_bare_names_resolve_where_the_platform_found_them(tmp_path):
    stored = store_artifact(FIXTURES / "platform_style", None, tmp_path / "home")
    engine = load_recipe_engine(reference("pyspark", stored.dir))
    assert engine.roles == {
        "feature.dataLoader": "weeklyretail.loading.RawLoader",           # exported by __init__
        "training.dataLoader": "weeklyretail.loading.FeatureLoader",
        "scoring.dataLoader": "weeklyretail.loading.FeatureLoader",
        "pipeline.class": "weeklyretail.pipeline.SalesPipeline",
        "evaluator": "weeklyretail.evaluation.DateSplit",                 # through `import *`
        "feature.dataset.transformer": "weeklyretail.features.WeekFeatures",  # in a module only
        "feature.dataSaver": "weeklyretail.saving.FeatureSaver",
        "scoring.dataSaver": "weeklyretail.saving.ScoreSaver",
    }
    assert not any(name.split(".")[0] == "weeklyretail" for name in sys.modules)


def test_a_bare_name_exported_by_the_package_wins_over_the_modules_defining_it(tmp_path):
    folder = _variant(tmp_path, "training.dataLoader: Loader\npipeline.class: Factory\n",
                      "from .parts import ExplodingLoader\nclass Loader(ExplodingLoader):\n    pass\n")
    (folder / "brokenrecipe" / "other.py").write_text(
        "from sdk.data_loader import DataLoader\nclass Loader(DataLoader):\n    pass\n")
    (folder / "brokenrecipe" / "__init__.py").write_text("from .extra import Loader\n")
    stored = store_artifact(folder, None, tmp_path / "home")
    engine = load_recipe_engine(reference("pyspark", stored.dir))
    assert engine.roles["training.dataLoader"] == "brokenrecipe.extra.Loader"
    assert engine.roles["pipeline.class"] == "brokenrecipe.parts.Factory"   # a module only


@pytest.mark.parametrize("application, message", [
    ("training.dataLoader: Loader\npipeline.class: Factory\n",
     "training.dataLoader = Loader is ambiguous: brokenrecipe.extra.Loader, brokenrecipe.other.Loader"),
    ("training.dataLoader: Nowhere\npipeline.class: Factory\n",
     "no class Nowhere in the namespace of the recipe's package (brokenrecipe) nor in its modules"),
    ("training.dataLoader: Plain\npipeline.class: Factory\n",
     "the class Plain does not subclass sdk.data_loader.DataLoader"),
])
def test_bare_names_that_name_no_single_role_class_are_refused(tmp_path, application, message):
    folder = _variant(tmp_path, application, "from sdk.data_loader import DataLoader\n"
                                             "class Loader(DataLoader):\n    pass\n"
                                             "class Plain:\n    pass\n")
    (folder / "brokenrecipe" / "other.py").write_text(
        "from sdk.data_loader import DataLoader\nclass Loader(DataLoader):\n    pass\n")
    with pytest.raises(InvalidArtifact) as refused:
        store_artifact(folder, None, tmp_path / "home")
    assert refused.value.status == 400 and message in refused.value.detail
