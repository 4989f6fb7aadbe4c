"""The recipe kinds this runtime knows, in one table: what each kind is registered as, how it is
told apart in an unpacked artifact, which adapter runs it and which environment it runs in.

Registration (runtime.recipes.registration), the artifact store (runtime.artifacts), the adapter
loader (runtime.recipes.load_recipe_engine) and the environment builder (runtime.recipes.runs) all
read `KINDS`; none names a kind. A kind without an adapter is refused by name, with what this
runtime runs instead. Adding a kind: its row here (with its detection and reading), its adapter,
its environment builder if none of the existing ones fits, and its tests.

This module sits below both the store and runtime.recipes (it imports neither): adapters and
environment builders are import strings, loaded only when a recipe of the kind runs.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, Field, field_validator

from .errors import BadRequest, ConfigError, EngineNotFound
from .pyspark_application import check_application
from .recipe_metadata import PROJECT_FILES, RecipeMetadata, project_marker, read_recipe_metadata

__all__ = ["EXPECTED", "InvalidArtifact", "KINDS", "RecipeInfo", "RecipeKind", "RecipeTree",
           "inspect_recipe", "kind_named", "refuse_engine_type", "runnable_kinds", "runs_text",
           "unsupported_recipe"]

# Entry points of function-based recipes, by group: the roles the runtime calls.
FUNCTION_ROLES = {"Training": ("training_dataloader", "training_pipeline"),
                  "Scoring": ("scoring_dataloader", "scoring_pipeline", "scoring_datasaver")}
CLASS_GROUPS = ("Trainer.train", "Scorer.score")
EXPECTED = ("a recipe: a zip or tar.gz of a source folder with setup.py, setup.cfg or "
            "pyproject.toml declaring entry points (groups Training/Scoring[/Evaluation], or "
            "Trainer.train/Scorer.score), an egg or a wheel with such entry points, or a PySpark "
            "package with resources/application.yaml")


class InvalidArtifact(BadRequest):
    title, slug = "Invalid Artifact", "invalid-artifact"


class RecipeInfo(BaseModel):
    """What a recipe is, read from its files (recipe.json beside the unpacked tree)."""

    kind: str                            # a runnable kind of KINDS
    name: str
    version: Optional[str] = None
    requirements: list[str] = Field(default_factory=list)
    entry_points: dict[str, dict[str, str]] = Field(default_factory=dict)   # group -> name -> target
    application: Optional[str] = None    # resources/application.yaml, relative to root
    root: str = "."                      # the project folder, relative to the recipe folder
    import_root: str = "."               # the folder put on sys.path (src/ layouts), relative too
    packaging: str = "folder"            # folder | zip | tar.gz | egg | wheel
    sha256: str = ""

    @field_validator("kind")
    @classmethod
    def _runnable(cls, value: str) -> str:
        names = [k.name for k in runnable_kinds()]
        if value not in names:
            raise ValueError(f"unknown recipe kind {value!r}; expected one of {', '.join(names)}")
        return value

    def root_dir(self, recipe_dir: Path) -> Path:
        return (Path(recipe_dir) / self.root).resolve()

    def import_dir(self, recipe_dir: Path) -> Path:
        return (Path(recipe_dir) / self.import_root).resolve()


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class RecipeKind:
    """One row of the table. `detect` says why an unpacked artifact is of this kind (None: it is
    not); `read` turns it into a RecipeInfo. A row without `adapter` is a kind this runtime
    recognises and refuses."""

    name: str                           # recipe.json's `kind`, the `recipe:<kind>:...` reference
    title: str                          # what users call it: "Python", "PySpark", "R"
    engine_types: tuple[str, ...]       # Engine `type` values of the kind (the first one is written)
    languages: tuple[str, ...]          # Engine `language` values it accepts
    detect: Callable[["RecipeTree"], Optional[str]]
    read: Optional[Callable[["RecipeTree", "RecipeKind"], RecipeInfo]] = None
    # "module:function" building the Engine subclass of one stored recipe: (folder, RecipeInfo).
    adapter: Optional[str] = None
    # The engine kind of that class ("python", "pyspark"): the backends that can run it.
    engine_kind: str = "python"
    # "module:function" giving the worker's interpreter: (RecipeInfo, folder, *, home, extra_pip,
    # log) -> a path, or None for the runtime's own.
    environment: Optional[str] = None
    # What the refusal says this runtime runs (runnable kinds), e.g. "Python recipes (type ...)".
    runs: str = ""
    # A recipe of this kind that declares no requirements runs in the runtime's own interpreter.
    runs_here_when_bare: bool = False
    # Built under --env-manager local too (R: reticulate needs the numpy < 2 environment).
    environment_always: bool = False
    # The name an Engine `type` refusal uses, when it differs from `title` ("Scala (Spark)").
    type_title: Optional[str] = None

    @property
    def runnable(self) -> bool:
        return self.adapter is not None

    def engine_class(self, folder: Path, info: RecipeInfo) -> type:
        """The Engine subclass running the stored recipe in `folder` (the adapter, imported now)."""
        try:
            build = _load(self.adapter or "")
        except ImportError as exc:
            raise EngineNotFound(f"{self.title} recipes cannot run here: {exc}") from exc
        return build(folder, info)

    def environment_builder(self) -> Callable[..., Optional[Path]]:
        return _load(self.environment or "")


# --------------------------------------------------------------------------------------------
# An unpacked artifact, read as far as a kind's detection asks


class RecipeTree:
    """The unpacked tree `src` of an artifact. A project may sit at its top or in its single
    folder (`folders`); hidden entries and macOS's __MACOSX are left out. A RecipeInfo's paths
    are relative to `base`; `packaging` is how the artifact came (folder, zip, egg, ...)."""

    def __init__(self, src: Path, *, packaging: str = "folder", base: Optional[Path] = None
                 ) -> None:
        self.src = Path(src)
        self.base = Path(base) if base is not None else self.src
        self.packaging = packaging
        self.children = [p for p in sorted(self.src.iterdir()) if not p.name.startswith(".")
                         and p.name != "__MACOSX"]
        single = self.children[:1] if len(self.children) == 1 and self.children[0].is_dir() else []
        self.folders = [self.src, *single]

    @cached_property
    def foreign_folders(self) -> list[Path]:
        """The folders looked at for another language's project: those before the first Python
        project (a Python project is one, whatever else it holds)."""
        out = []
        for folder in self.folders:
            if project_marker(folder) in PROJECT_FILES:
                break
            out.append(folder)
        return out

    @cached_property
    def project(self) -> Optional[tuple[Path, str]]:
        """The folder holding a Python project's metadata and which metadata it is (a PySpark
        package's application.yaml counts), or None."""
        for folder in self.folders:
            marker = project_marker(folder)
            if marker is not None:
                return folder, marker
        for folder in self.folders:
            if _find_application(folder) is not None:
                return folder, "application.yaml"
        return None

    @property
    def root(self) -> Path:
        if self.project is None:
            top = ", ".join(p.name + ("/" if p.is_dir() else "") for p in self.children[:12]) \
                or "nothing"
            raise InvalidArtifact(f"The artifact holds no Python package metadata (found: {top}); "
                                  f"expected {EXPECTED}")
        return self.project[0]

    @cached_property
    def metadata(self) -> RecipeMetadata:
        try:
            meta = read_recipe_metadata(self.root)
        except ConfigError as exc:      # an unreadable project file: this artifact is no recipe
            raise InvalidArtifact(exc.detail) from exc
        if "entry_points" in meta.dynamic:
            raise InvalidArtifact("setup.py computes entry_points at run time; this runtime reads "
                                  "them without executing setup.py: write them as a literal dict "
                                  "or in setup.cfg")
        return meta

    @cached_property
    def entry_points(self) -> dict[str, dict[str, str]]:
        return {g: dict(eps) for g, eps in self.metadata.entry_points.items()}

    @cached_property
    def application(self) -> Optional[Path]:
        return None if self.project is None else _find_application(self.root)


def _find_application(root: Path) -> Optional[Path]:
    direct = root / "resources" / "application.yaml"
    if direct.is_file():
        return direct
    for depth in ("*/resources/application.yaml", "*/*/resources/application.yaml"):
        found = sorted(root.glob(depth))
        if found:
            return found[0]
    return None


# --------------------------------------------------------------------------------------------
# Detection, per kind


def _r_package(tree: RecipeTree) -> Optional[str]:
    for folder in tree.foreign_folders:
        if (folder / "DESCRIPTION").is_file() and any(folder.glob("R/*.[Rr]")):
            return f"{folder.name}/ is an R package: DESCRIPTION and R/*.R"
        scripts = [p.name for p in folder.rglob("application*.R")]
        if scripts:
            return f"{', '.join(sorted(scripts)[:3])} found"
    return None


def _jvm_project(tree: RecipeTree) -> Optional[str]:
    for folder in tree.foreign_folders:
        for marker in ("pom.xml", "build.sbt", "build.gradle"):
            if (folder / marker).is_file():
                return f"{folder.name}/ is a JVM project: {marker}"
        if (folder / "META-INF" / "MANIFEST.MF").is_file() and next(folder.rglob("*.class"), None):
            return "the artifact is a jar of compiled JVM classes"
    return None


def _pyspark_package(tree: RecipeTree) -> Optional[str]:
    return None if tree.application is None else "resources/application.yaml"


def _class_entry_points(tree: RecipeTree) -> Optional[str]:
    if tree.project is None or tree.application is not None:   # a PySpark package's
        return None
    entry_points = tree.entry_points
    if any(g in entry_points for g in CLASS_GROUPS):
        missing = [g for g in CLASS_GROUPS if not entry_points.get(g)]
        if len(missing) == len(CLASS_GROUPS):
            raise InvalidArtifact(f"The recipe {tree.root.name!r} declares empty "
                                  f"{'/'.join(CLASS_GROUPS)} entry point groups; expected {EXPECTED}")
        for group, eps in entry_points.items():
            if group in CLASS_GROUPS:
                for name, target in eps.items():
                    if ":" not in target:
                        raise InvalidArtifact(
                            f"Entry point {name} = {target} in group {group} names a module; "
                            "a class-based recipe names classes, e.g. trainer = pkg.trainer:Trainer")
        return "Trainer.train/Scorer.score entry points"
    targets = [t for g in FUNCTION_ROLES for t in entry_points.get(g, {}).values()]
    if targets and all(":" in t for t in targets):
        return "Training/Scoring entry points naming classes"   # the older class groups
    return None


def _function_entry_points(tree: RecipeTree) -> Optional[str]:
    if tree.project is None or tree.application is not None:   # a PySpark package's
        return None
    roles = {g: tree.entry_points.get(g, {}) for g in FUNCTION_ROLES}
    targets = [t for r in roles.values() for t in r.values()]
    if not targets or any(g in tree.entry_points for g in CLASS_GROUPS) or \
            all(":" in t for t in targets):     # none, or a class-based recipe's
        return None
    for group, needed in FUNCTION_ROLES.items():
        if roles[group]:
            missing = [n for n in needed if n not in roles[group]]
            if missing:
                raise InvalidArtifact(
                    f"The recipe's {group} entry points lack {', '.join(missing)} (found: "
                    f"{', '.join(sorted(roles[group]))}); a function-based recipe declares "
                    f"{', '.join(needed)} in {group}")
    return "Training/Scoring entry points"


def _not_a_recipe(tree: RecipeTree) -> InvalidArtifact:
    """What no row claimed: no project at all, or a Python project without recipe entry points."""
    root = tree.root             # raises "holds no Python package metadata"
    groups = ", ".join(sorted(tree.entry_points)) or "none"
    return InvalidArtifact(
        f"The recipe {root.name!r} ({tree.project[1]}) declares no recipe entry points (groups "
        f"found: {groups}) and has no resources/application.yaml; expected {EXPECTED}")


# --------------------------------------------------------------------------------------------
# Reading, per kind


def _python_info(tree: RecipeTree, kind: RecipeKind) -> tuple[RecipeInfo, Path]:
    """A Python project's RecipeInfo, and the folder its modules are imported from."""
    root, marker = tree.root, tree.project[1]
    meta = tree.metadata
    import_root = root
    package_dir = meta.package_dir
    if isinstance(package_dir, dict) and package_dir.get(""):
        import_root = root / str(package_dir[""])
    elif (root / "src").is_dir() and not (root / "src" / "__init__.py").exists() \
            and marker in ("setup.cfg", "pyproject.toml"):
        import_root = root / "src"
    app = tree.application
    return RecipeInfo(
        kind=kind.name, name=meta.name or root.name, version=meta.version,
        requirements=list(meta.requirements), entry_points=tree.entry_points,
        application=None if app is None else app.relative_to(root).as_posix(),
        root=os.path.relpath(root, tree.base), import_root=os.path.relpath(import_root, tree.base),
        packaging=tree.packaging), import_root


def _read_python(tree: RecipeTree, kind: RecipeKind) -> RecipeInfo:
    info, import_root = _python_info(tree, kind)
    _check_targets(tree.entry_points, import_root)
    return info


def _read_pyspark(tree: RecipeTree, kind: RecipeKind) -> RecipeInfo:
    info, import_root = _python_info(tree, kind)
    try:   # application.yaml's role classes, read statically (imports nothing)
        check_application(tree.root, tree.application, import_root)
    except ConfigError as exc:
        raise InvalidArtifact(exc.detail) from exc
    return info


R_TRAINER, R_SCORER = "R/applicationTrainer.R", "R/applicationScorer.R"


def _read_r(tree: RecipeTree, kind: RecipeKind) -> RecipeInfo:
    """An R recipe: the folder (the top, or its single folder) holding R/; the trainer and the
    scorer are required, R/applicationEvaluator.R, R/Helper.R and DESCRIPTION optional, anything
    else (Dockerfile, build scripts, .Rhistory) is ignored. Read statically: no R needed."""
    found = [f for f in tree.foreign_folders if (f / "R").is_dir()]
    if not found:
        raise InvalidArtifact(f"The R recipe ({tree.children[0].name if tree.children else '?'}) "
                              f"has no R/ folder at its top or in its single top folder; expected "
                              f"{R_TRAINER} and {R_SCORER} there")
    root = found[0]
    missing = [f for f in (R_TRAINER, R_SCORER) if not (root / f).is_file()]
    if missing:
        raise InvalidArtifact(f"The R recipe {root.name!r} lacks {' and '.join(missing)}; an R "
                              f"recipe holds {R_TRAINER} and {R_SCORER} (R/applicationEvaluator.R, "
                              "R/Helper.R and DESCRIPTION are optional)")
    fields: dict[str, str] = {}
    if (root / "DESCRIPTION").is_file():
        for line in (root / "DESCRIPTION").read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and not line[:1].isspace():
                fields[key.strip()] = value.strip()
    name = fields.get("Package") or (root.name if root != tree.src else "r-recipe")
    return RecipeInfo(kind=kind.name, name=name, version=fields.get("Version") or None,
                      root=os.path.relpath(root, tree.base),
                      import_root=os.path.relpath(root, tree.base), packaging=tree.packaging)


def _module_file(import_root: Path, module: str) -> bool:
    path = import_root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or \
        any(path.parent.glob(path.name + ".*.so")) or any(path.parent.glob(path.name + ".pyc"))


def _check_targets(entry_points: dict[str, dict[str, str]], import_root: Path) -> None:
    for group, eps in entry_points.items():
        if group not in (*FUNCTION_ROLES, "Evaluation", *CLASS_GROUPS):
            continue
        for name, target in eps.items():
            module = target.split(":", 1)[0].strip()
            if not _module_file(import_root, module):
                raise InvalidArtifact(
                    f"Entry point {name} = {target} (group {group}) names module {module!r}, "
                    f"which the artifact does not contain (looked under "
                    f"{import_root.name or '.'}/); expected the module's .py file or package")


# --------------------------------------------------------------------------------------------
# The table. Each row's detection excludes the others' (a tree is of one kind at most); refusals
# and listings follow the rows' order.

_PYTHON_RUNS = ("Python recipes (type Python: function-based, or class-based as the Tensorflow "
                "type's are)")

KINDS: tuple[RecipeKind, ...] = (
    RecipeKind(name="r", title="R", engine_types=("R",), languages=("R",), detect=_r_package,
               read=_read_r, adapter="runtime.recipes.r:engine_for",
               environment="runtime.recipes.r.host:environment", environment_always=True,
               runs="R recipes (type R: R/applicationTrainer.R and R/applicationScorer.R)"),
    RecipeKind(name="scala", title="Scala", type_title="Scala (Spark)",
               engine_types=("Spark", "Scala"), languages=("Scala",), detect=_jvm_project),
    RecipeKind(name="python-functions", title="Python", engine_types=("Python",),
               languages=("Python",), detect=_function_entry_points, read=_read_python,
               adapter="runtime.recipes.python_functions:engine_for",
               environment="runtime.recipes.runs:python_environment", runs=_PYTHON_RUNS),
    RecipeKind(name="python-classes", title="Python", engine_types=("Python", "Tensorflow"),
               languages=("Python",), detect=_class_entry_points, read=_read_python,
               adapter="runtime.recipes.python_classes:engine_for",
               environment="runtime.recipes.runs:python_environment", runs=_PYTHON_RUNS),
    RecipeKind(name="pyspark", title="PySpark", engine_types=("PySpark",), languages=("Python",),
               detect=_pyspark_package, read=_read_pyspark,
               adapter="runtime.recipes.pyspark_app:engine_for", engine_kind="pyspark",
               environment="runtime.recipes.runs:pyspark_environment", runs_here_when_bare=True,
               runs="PySpark recipes (type PySpark: a package with resources/application.yaml)"),
)


def runnable_kinds() -> tuple[RecipeKind, ...]:
    return tuple(k for k in KINDS if k.runnable)


def kind_named(name: str) -> RecipeKind:
    for kind in KINDS:
        if kind.name == name and kind.runnable:
            return kind
    raise InvalidArtifact(f"Unknown recipe kind {name!r}; this runtime runs "
                          f"{', '.join(k.name for k in runnable_kinds())}")


def runs_text() -> str:
    """What this runtime runs, said whenever it refuses a recipe of a kind it does not run."""
    phrases = list(dict.fromkeys(k.runs for k in runnable_kinds()))
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"it runs {listed}"


def unsupported_recipe(what: str, evidence: str) -> InvalidArtifact:
    return InvalidArtifact(f"This runtime does not run {what} recipes yet ({evidence}); "
                           f"{runs_text()}. Nothing was registered")


def refuse_engine_type(engine_type: str, languages: list[str]) -> None:
    """An Engine whose type is a refused kind's, or whose languages are all ones no runnable kind
    accepts, is a 400 now rather than a 201 whose runs fail."""
    for kind in KINDS:
        if not kind.runnable and engine_type.lower() in (t.lower() for t in kind.engine_types):
            raise unsupported_recipe(kind.type_title or kind.title,
                                     f"the Engine's type is {engine_type}")
    accepted = {x.lower() for k in runnable_kinds() for x in k.languages}
    if languages and not any(x.lower() in accepted for x in languages):
        raise unsupported_recipe("/".join(languages),
                                 f"the Engine's language is {', '.join(languages)}")


def inspect_recipe(src: Path, *, packaging: str = "folder", base: Optional[Path] = None
                   ) -> RecipeInfo:
    """The recipe in an unpacked tree: kind, name, version, requirements, entry points.

    `base` is the folder paths in the result are relative to (default: `src`)."""
    tree = RecipeTree(Path(src), packaging=packaging, base=base)
    for kind in KINDS:
        evidence = kind.detect(tree)
        if evidence is None:
            continue
        if kind.read is None:
            raise unsupported_recipe(kind.title, evidence)
        return kind.read(tree, kind)
    raise _not_a_recipe(tree)
