"""PySpark recipes (Engine type `PySpark`): an Engine built from a recipe's `resources/application.yaml`.

Roles (class names of the recipe's package: `package.module.Class`, or a bare `Class` looked up
as the platform did, in the package's namespace and then its modules) and what the runtime does:
  train            training.dataLoader.load -> evaluator.split (when an evaluator is named and
                   evaluateModel is not false) -> pipeline.class.train, or when it is not overridden
                   or returns None, fit `apply`'s Pipeline (with `getParamMap`'s params) on the
                   train split -> evaluator.evaluate on the test split -> metrics. The model fitted
                   on the train split is kept (no refit on all rows, as the platform's trainer did)
                   and saved with Spark ML's writer.
  score            load the saved model, scoring.dataLoader.load -> pipeline.class.score (when it
                   is not overridden or returns None: model.transform) -> scoring.dataSaver.save
  featurePipeline  feature.dataLoader.load -> feature.dataset.transformer.transform ->
                   feature.dataSaver.save (to transformedDataSetId)

Each run's own session gets Spark 2's SQL behaviour (runtime.spark.config.SPARK2_RECIPE_CONF: the
platform ran Spark 2) unless a spark.* parameter of the run says otherwise.

Building the class reads only application.yaml; recipe code is imported inside the Spark worker,
for one run at a time: its folder is on sys.path (and shipped to executors as a zip through the
context's Python includes) only while the run lasts, and its modules are dropped afterwards, so a
warm worker never shows one recipe's modules to another.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Optional

from ..artifacts import InvalidArtifact, RecipeInfo
from ..digests import digest
from ..engine import Metric, TaskContext
from ..errors import ConfigError, MLRuntimeError
from ..pyspark_application import (ROLES, TASK_ROLES, read_application, resolve_roles, roles_of,
                                   split_class)
from ..tasks import FEATURE_PIPELINE, SCORE, TRAIN
from . import ENV_MARKER, compat_path
from .base import RecipeEngine

__all__ = ["PySparkRecipeEngine", "RecipeRoleError", "engine_for"]

log = logging.getLogger("runtime.recipes.pyspark")

MODEL_PIPELINE_DIR = "pipeline"
MODEL_META_FILE = "recipe-model.json"


# The Spark settings the platform's samples read with spark.sparkContext.getConf().get(...), and
# the local values used when the run's config_properties carry none.
SPARK_CONF_KEYS = {
    "ML_FRAMEWORK_IMS_ML_TOKEN": "local-service-token",
    "ML_FRAMEWORK_IMS_TOKEN": "local-user-token",
    "ML_FRAMEWORK_IMS_ORG_ID": "local@AdobeOrg",
    "ML_FRAMEWORK_IMS_CLIENT_ID": "mlruntime-local",
    "sandboxName": "prod",
}
_FALSE = {"false", "0", "no", "off"}


class RecipeRoleError(MLRuntimeError):
    """A recipe's role failed or is not what application.yaml says: the message names the recipe,
    the role and the class."""

    status, title, slug = 400, "Recipe Role Failed", "recipe-role-failed"


def _evaluate_model(application: dict[str, Any]) -> bool:
    value = application.get("evaluateModel", True)
    return str(value).strip().lower() not in _FALSE


# --- the engine -------------------------------------------------------------------------------

@dataclass
class FittedRecipe:
    """What train hands save_model: the fitted model and the metrics of its test split."""

    model: Any
    metrics: list[Metric] = field(default_factory=list)


class _RunScope:
    """One run's hold on the worker: recipe folder on sys.path and in the context's Python
    includes, the Spark settings the samples read, the data set catalog; all undone by `close`."""

    added_files: ClassVar[set[str]] = set()   # sc.addFile is once per path per context

    def __init__(self, engine: "PySparkRecipeEngine", ctx: TaskContext, config: dict[str, Any]) -> None:
        self.engine, self.spark, self.logger = engine, ctx.spark, ctx.logger
        self.modules_before = set(sys.modules)
        self.paths: list[str] = []
        self.includes: list[str] = []
        self.conf_keys: list[str] = []
        self.catalog_keys: list[str] = []
        self.closed = False
        try:
            self._paths()
            self._includes()
            self._conf(config)
            self._catalog(config)
        except BaseException:
            self.close()
            raise

    def _paths(self) -> None:
        paths = [str(self.engine.import_dir)]
        if not os.environ.get(ENV_MARKER):   # --env-manager local: compat/ is not on the path yet
            paths.append(str(compat_path()))
        for path in reversed(paths):
            if path not in sys.path:
                sys.path.insert(0, path)
                self.paths.append(path)
        importlib.invalidate_caches()

    def _includes(self) -> None:
        """The recipe's package (and our sdk) for the executors' Python workers."""
        sc = self.spark.sparkContext
        zips = [_package_zip(self.engine.import_dir, "recipe", self.engine.recipe.sha256)]
        if not os.environ.get(ENV_MARKER):
            zips.append(_package_zip(compat_path(), "compat", None))
        for path in zips:
            if str(path) not in self.added_files:
                sc.addFile(str(path))
                self.added_files.add(str(path))
            if path.name not in sc._python_includes:
                sc._python_includes.append(path.name)
                self.includes.append(path.name)

    def _conf(self, config: dict[str, Any]) -> None:
        conf = self.spark.sparkContext._conf
        for key, default in SPARK_CONF_KEYS.items():
            value = config.get(key) or default
            conf.set(key, str(value))
            self.spark.conf.set(key, str(value))
            self.conf_keys.append(key)
        self._spark2_behaviour()

    def _spark2_behaviour(self) -> None:
        """Spark 2's SQL behaviour on this run's own session (runtime.spark.config). A run's
        spark.* parameters go into the context's settings (the resolver keeps them out of the
        recipe's config): a key found there wins."""
        from ..spark.config import SPARK2_RECIPE_CONF

        context_conf = self.spark.sparkContext.getConf()
        applied = {key: value for key, value in SPARK2_RECIPE_CONF.items()
                   if not context_conf.contains(key)}
        for key, value in applied.items():
            self.spark.conf.set(key, value)
        if applied:
            self.logger.info("Spark 2 behaviour for this recipe run: %s",
                             ", ".join(f"{k}={v}" for k, v in applied.items()))

    def _catalog(self, config: dict[str, Any]) -> None:
        from ..datasets import active_catalog
        from ..spark.datasource import publish_catalog

        self.catalog_keys = publish_catalog(self.spark, active_catalog(),
                                            sandbox=config.get("sandboxName"))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            sc = self.spark.sparkContext
            for name in self.includes:
                if name in sc._python_includes:
                    sc._python_includes.remove(name)
            jconf = sc._conf._jconf
            for key in self.conf_keys:
                jconf.remove(key)
            from ..spark.datasource import clear_catalog

            clear_catalog(self.spark, self.catalog_keys)
        except Exception:   # a dead context: nothing of ours is left in it
            log.debug("could not undo the run's Spark settings", exc_info=True)
        for path in self.paths:
            while path in sys.path:
                sys.path.remove(path)
        _drop_modules(self.modules_before, [self.engine.import_dir, compat_path()])
        importlib.invalidate_caches()


def _drop_modules(before: set[str], folders: Iterable[Path]) -> None:
    """Forget the modules the run imported from `folders` (and any other from the recipe's)."""
    roots = [str(Path(f).resolve()) + os.sep for f in folders]
    for name in list(sys.modules):
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) or ""
        paths = list(getattr(getattr(module, "__path__", None) or [], "__iter__", lambda: [])())
        inside = any(str(p).startswith(tuple(roots)) for p in [where, *paths] if p)
        if inside:
            del sys.modules[name]


def _package_zip(folder: Path, kind: str, known_digest: Optional[str]) -> Path:
    """`folder`'s Python files as a zip for sc.addFile, cached by content digest."""
    from ..spark.datasource import jar_dir

    folder = Path(folder)
    key = (known_digest or "")[:16] or digest(folder, exclude=True)[:16]
    target = jar_dir() / "pyfiles" / f"mlruntime-{kind}-{key}.zip"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git") and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / name
                archive.write(path, path.relative_to(folder).as_posix())
    os.replace(tmp, target)
    return target


class PySparkRecipeEngine(RecipeEngine):
    """The adapter of one stored PySpark recipe; `engine_for` builds its subclass."""

    kind = "pyspark"
    application: ClassVar[dict[str, Any]] = {}
    roles: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._scope: Optional[_RunScope] = None
        self._config: Optional[dict[str, Any]] = None
        self._instances: dict[str, Any] = {}
        self.loader_reached_at: Optional[float] = None

    @property
    def import_dir(self) -> Path:
        return self.recipe.import_dir(self.recipe_dir)

    # --- one run's setup and teardown ------------------------------------------------------------

    def begin(self, ctx: TaskContext) -> dict[str, Any]:
        if self._config is not None:
            return self._config
        if ctx.spark is None:
            raise ConfigError(f"Recipe {self.recipe.name!r} is a PySpark recipe: it runs on the "
                              "pyspark backend, which gives it a SparkSession")
        missing = [r for r in TASK_ROLES[ctx.task] if r not in self.roles]
        if missing:
            raise ConfigError(f"Recipe {self.recipe.name!r} cannot run {ctx.task}: its "
                              f"application.yaml names no {', '.join(missing)}")
        config = self.config(ctx)
        self._scope = _RunScope(self, ctx, config)
        self._config = config
        return config

    def end_run(self) -> None:
        """Called by the Spark worker when the run is over, whatever its outcome."""
        if self._scope is not None:
            self._scope.close()
            self._scope = None
        self._instances.clear()

    def role(self, key: str) -> Any:
        """An instance of the class application.yaml names for `key`, checked against its base."""
        if key in self._instances:
            return self._instances[key]
        target = self.roles.get(key)
        if not target:
            raise ConfigError(f"Recipe {self.recipe.name!r}: application.yaml names no {key}")
        spec = ROLES[key]
        where = f"Recipe {self.recipe.name!r}, role {key} ({target})"
        module_name, class_name = split_class(target)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RecipeRoleError(f"{where}: cannot import {module_name}: {exc}") from exc
        except Exception as exc:
            raise RecipeRoleError(f"{where}: importing {module_name} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            raise RecipeRoleError(f"{where}: the module {module_name} has no class {class_name}")
        base = getattr(importlib.import_module(spec.base_module), spec.base_name)
        if not issubclass(cls, base):
            raise RecipeRoleError(f"{where}: {class_name} does not subclass {spec.base}")
        try:
            instance = cls()
        except Exception as exc:
            raise RecipeRoleError(f"{where}: {class_name}() failed: {type(exc).__name__}: {exc}") from exc
        self._instances[key] = instance
        return instance

    def call(self, key: str, method: str, *args: Any) -> Any:
        """`role(key).method(*args)`, a failure naming the recipe, the role and the class."""
        instance = self.role(key)
        try:
            return getattr(instance, method)(*args)
        except MLRuntimeError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            text = _error_text(exc)
            raise RecipeRoleError(f"Recipe {self.recipe.name!r}, role {key} "
                                  f"({self.roles[key]}).{method} failed: {type(exc).__name__}: "
                                  f"{text}") from exc

    def _frame(self, key: str, method: str, value: Any) -> Any:
        if not (type(value).__module__.startswith("pyspark.sql") and hasattr(value, "columns")):
            raise RecipeRoleError(f"Recipe {self.recipe.name!r}, role {key} ({self.roles[key]})."
                                  f"{method} returned {type(value).__name__}, not a Spark DataFrame")
        return value

    # --- stages ---------------------------------------------------------------------------------

    def load_data(self, ctx: TaskContext, uri: Any = None) -> Any:
        config = self.begin(ctx)
        key = {TRAIN: "training.dataLoader", SCORE: "scoring.dataLoader",
               FEATURE_PIPELINE: "feature.dataLoader"}[ctx.task]
        loader = self.role(key)
        self.loader_reached_at = time.time()   # the Spark worker reports dispatch -> loader
        del loader
        return self._frame(key, "load", self.call(key, "load", config, ctx.spark))

    def feature_pipeline(self, ctx: TaskContext, data: Any) -> Any:
        if ctx.task != FEATURE_PIPELINE:
            return data     # train and score: the recipe's pipeline holds its feature stages
        config = self.begin(ctx)
        key = "feature.dataset.transformer"
        return self._frame(key, "transform", self.call(key, "transform", config, data))

    def train(self, ctx: TaskContext, features: Any) -> FittedRecipe:
        config = self.begin(ctx)
        evaluating = "evaluator" in self.roles and _evaluate_model(self.application)
        if evaluating:
            parts = self.call("evaluator", "split", config, features)
            if not (isinstance(parts, (tuple, list)) and len(parts) == 2):
                raise RecipeRoleError(f"Recipe {self.recipe.name!r}, role evaluator "
                                      f"({self.roles['evaluator']}).split returned "
                                      f"{type(parts).__name__}, not (train, test)")
            train_rows = self._frame("evaluator", "split", parts[0])
            test_rows = self._frame("evaluator", "split", parts[1])
        else:
            train_rows, test_rows = features, None
        model = self._fit(ctx, config, train_rows)
        metrics: list[Metric] = []
        if evaluating:
            found = self.call("evaluator", "evaluate", test_rows, model, config)
            metrics = _metrics(found, self.recipe.name, self.roles["evaluator"])
            ctx.logger.info("metrics on the test split: %s",
                            ", ".join(f"{m.name}={m.value:.6g}" for m in metrics) or "none")
        return FittedRecipe(model=model, metrics=metrics)

    def _fit(self, ctx: TaskContext, config: dict[str, Any], rows: Any) -> Any:
        from sdk.pipeline_factory import PipelineFactory

        factory = self.role("pipeline.class")
        key = "pipeline.class"
        where = f"Recipe {self.recipe.name!r}, role {key} ({self.roles[key]})"
        model = None
        if type(factory).train is not PipelineFactory.train:    # the recipe fits it itself
            model = self.call(key, "train", config, rows)
            if model is None:   # `pass`, as the platform's samples have: the platform fitted apply()
                ctx.logger.info("%s.train returned None: fitting its apply() pipeline, as the "
                                "platform did", self.roles[key])
        if model is None:
            from pyspark.ml import Estimator

            pipeline = self.call(key, "apply", config)
            if not isinstance(pipeline, Estimator):
                raise RecipeRoleError(f"{where}.apply returned {type(pipeline).__name__}, not a "
                                      "pyspark.ml Pipeline")
            params = self.call(key, "getParamMap", config, ctx.spark)
            if isinstance(params, (list, tuple)):
                raise RecipeRoleError(f"{where}.getParamMap returned {len(params)} param maps; "
                                      "return one ParamMap (a dict), or None")
            try:
                model = pipeline.fit(rows, params) if params else pipeline.fit(rows)
            except Exception as exc:
                text = _error_text(exc)
                raise RecipeRoleError(f"{where}: fitting its pipeline failed: "
                                      f"{type(exc).__name__}: {text}") from exc
        if not (hasattr(model, "transform") and hasattr(model, "write")):
            raise RecipeRoleError(f"{where}: training produced {type(model).__name__}, not a "
                                  "fitted Spark ML model that Spark's writer can save")
        return model

    def evaluate(self, ctx: TaskContext, model: Any, data: Any) -> list[Metric]:
        return list(model.metrics) if isinstance(model, FittedRecipe) else []

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        fitted = model.model if isinstance(model, FittedRecipe) else model
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fitted.write().overwrite().save(str(directory / MODEL_PIPELINE_DIR))
        cls = type(fitted)
        (directory / MODEL_META_FILE).write_text(json.dumps({
            "recipe": self.recipe.name, "version": self.recipe.version,
            "recipeSha256": self.recipe.sha256, "kind": "pyspark",
            "modelClass": f"{cls.__module__}.{cls.__qualname__}", "format": "spark-ml"}, indent=2))
        self.model_digest = "sha256:" + digest(directory)

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        self.begin(ctx)          # the recipe's classes may be stages of the saved pipeline
        directory = Path(directory)
        expected = self.expected_digest(ctx, directory)
        self.refuse_changed(directory, expected, "sha256:" + digest(directory))
        try:
            meta = json.loads((directory / MODEL_META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The model at {directory} is not a PySpark recipe's model: {exc}") from exc
        module_name, _, class_name = str(meta.get("modelClass", "")).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"The model at {directory} is a {meta.get('modelClass')!r}, which "
                              f"cannot be imported here: {exc}") from exc
        return cls.load(str(directory / MODEL_PIPELINE_DIR))

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        from sdk.pipeline_factory import PipelineFactory

        config = self.begin(ctx)
        factory = self.role("pipeline.class")
        scored = None
        if type(factory).score is not PipelineFactory.score:
            scored = self.call("pipeline.class", "score", config, data, model)
            if scored is None:  # `pass`: the platform transformed with the fitted model itself
                ctx.logger.info("%s.score returned None: transforming with the fitted model, as "
                                "the platform did", self.roles["pipeline.class"])
        if scored is None:
            scored = model.transform(data)
        return self._frame("pipeline.class", "score", scored)

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        config = self.begin(ctx)
        key, target = (("feature.dataSaver", "transformedDataSetId") if ctx.task == FEATURE_PIPELINE
                       else ("scoring.dataSaver", "scoringResultsDataSetId"))
        self.call(key, "save", config, frame)
        return config.get(target)


def _error_text(exc: BaseException) -> str:
    """An exception's own message, first lines only (a JVM stack trace stays in the log)."""
    kept = []
    for line in str(exc).strip().splitlines():
        if line.lstrip().startswith(("at ", "JVM stacktrace:", "Traceback")):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept[:3]) or type(exc).__name__


def _metrics(found: Any, recipe: str, target: str) -> list[Metric]:
    """The evaluator's answer as Metrics: [{name, value, valueType}], [(name, value)], {name: value},
    or objects with name and value."""
    if found is None:
        return []
    if isinstance(found, dict) and "name" not in found:
        items: list[Any] = [{"name": k, "value": v} for k, v in found.items()]
    elif isinstance(found, dict):
        items = [found]
    else:
        try:
            items = list(found)
        except TypeError:
            raise RecipeRoleError(f"Recipe {recipe!r}, role evaluator ({target}).evaluate returned "
                                  f"{type(found).__name__}, not a list of metrics") from None
    out = []
    for item in items:
        if isinstance(item, dict):
            name, value, kind = item.get("name"), item.get("value"), item.get("valueType") or "double"
        elif isinstance(item, (tuple, list)) and len(item) >= 2:
            name, value, kind = item[0], item[1], "double"
        else:
            name, value = getattr(item, "name", None), getattr(item, "value", None)
            kind = getattr(item, "valueType", None) or "double"
        try:
            out.append(Metric(name=str(name), value=float(value), valueType=str(kind)))
        except (TypeError, ValueError):
            raise RecipeRoleError(f"Recipe {recipe!r}, role evaluator ({target}).evaluate returned "
                                  f"the metric {item!r}, which has no numeric value") from None
    return out


def engine_for(recipe_dir: Path, info: RecipeInfo) -> type[PySparkRecipeEngine]:
    """The Engine class of a stored PySpark recipe (reads application.yaml, imports nothing)."""
    if not info.application:
        raise InvalidArtifact(f"Recipe {info.name!r} has no resources/application.yaml")
    path = info.root_dir(recipe_dir) / info.application
    application = read_application(path)
    cls = PySparkRecipeEngine.build(recipe_dir, info)
    cls.application = application
    cls.roles = resolve_roles(roles_of(application), path, info.import_dir(recipe_dir))
    cls.kind = "pyspark"
    return cls
