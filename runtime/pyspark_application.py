"""A PySpark recipe's resources/application.yaml, read and checked statically (imports nothing):
the roles it names, each resolved to `package.module.Class` the way the platform looked bare names
up, and checked to be in the artifact and to subclass the role's sdk base where that can be told.

The artifact store checks a recipe with it at registration; the PySpark recipe engine
(runtime.recipes.pyspark_app) resolves its roles with it. A problem is a ConfigError naming the
role and the class (the store answers it as an Invalid Artifact, a 400).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError
from .tasks import FEATURE_PIPELINE, SCORE, TRAIN

__all__ = ["ROLES", "Role", "TASK_ROLES", "check_application", "read_application", "resolve_roles",
           "roles_of", "split_class"]


@dataclass(frozen=True)
class Role:
    key: str
    base_module: str
    base_name: str
    method: str

    @property
    def base(self) -> str:
        return f"{self.base_module}.{self.base_name}"


ROLES: dict[str, Role] = {r.key: r for r in (
    Role("training.dataLoader", "sdk.data_loader", "DataLoader", "load"),
    Role("scoring.dataLoader", "sdk.data_loader", "DataLoader", "load"),
    Role("feature.dataLoader", "sdk.data_loader", "DataLoader", "load"),
    Role("pipeline.class", "sdk.pipeline_factory", "PipelineFactory", "apply"),
    Role("evaluator", "sdk.evaluation.evaluator", "MLEvaluator", "evaluate"),
    Role("scoring.dataSaver", "sdk.data_saver", "DataSaver", "save"),
    Role("feature.dataSaver", "sdk.data_saver", "DataSaver", "save"),
    Role("feature.dataset.transformer", "sdk.dataset_transformer", "DatasetTransformer", "transform"),
)}
TASK_ROLES = {
    TRAIN: ("training.dataLoader", "pipeline.class"),
    SCORE: ("scoring.dataLoader", "pipeline.class", "scoring.dataSaver"),
    FEATURE_PIPELINE: ("feature.dataLoader", "feature.dataset.transformer", "feature.dataSaver"),
}
# Names in our sdk package that subclass each role's base (what a recipe may inherit from).
SDK_CLASSES: dict[str, str] = {
    "sdk.data_loader.DataLoader": "sdk.data_loader.DataLoader",
    "sdk.data_saver.DataSaver": "sdk.data_saver.DataSaver",
    "sdk.pipeline_factory.PipelineFactory": "sdk.pipeline_factory.PipelineFactory",
    "sdk.dataset_transformer.DatasetTransformer": "sdk.dataset_transformer.DatasetTransformer",
    "sdk.evaluation.evaluator.MLEvaluator": "sdk.evaluation.evaluator.MLEvaluator",
    "sdk.evaluation.MLEvaluator": "sdk.evaluation.evaluator.MLEvaluator",
    "sdk.evaluation.regression.RegressionEvaluator": "sdk.evaluation.evaluator.MLEvaluator",
    "sdk.evaluation.classification.ClassificationEvaluator": "sdk.evaluation.evaluator.MLEvaluator",
    "sdk.evaluation.classification.BinaryClassificationEvaluator": "sdk.evaluation.evaluator.MLEvaluator",
    "sdk.evaluation.classification.MulticlassClassificationEvaluator": "sdk.evaluation.evaluator.MLEvaluator",
}


# --- application.yaml ---------------------------------------------------------------------------

def read_application(path: Path) -> dict[str, Any]:
    """application.yaml as flat keys (`training: {dataLoader: x}` and `training.dataLoader: x`
    mean the same)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read the recipe's {Path(path).name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"The recipe's {Path(path).name} is not a mapping of roles to class names")
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            # `feature.dataset.transformer` nests under `feature.dataset` as well as `feature`
            if isinstance(value, dict):
                walk(name + ".", value)
            else:
                flat[name] = value
    walk("", data)
    return flat


def roles_of(application: dict[str, Any]) -> dict[str, str]:
    roles = {}
    for key, value in application.items():
        if key in ROLES and value not in (None, ""):
            if not isinstance(value, str):
                raise ConfigError(f"application.yaml: {key} must name a class "
                                  f"(package.module.ClassName), got {value!r}")
            roles[key] = value.strip()
    return roles


def split_class(target: str) -> tuple[str, str]:
    """(module, class) of `pkg.module.Class` or `pkg.module:Class`."""
    if ":" in target:
        module, _, name = target.partition(":")
    else:
        module, _, name = target.rpartition(".")
    if not module or not name:
        raise ConfigError(f"{target!r} is not a class name of the form package.module.ClassName")
    return module.strip(), name.strip()


# --- the registration check (static: imports nothing) ----------------------------------------------

def check_application(root: Path, application: Path, import_root: Path) -> None:
    """Refuse (ConfigError, a 400) a PySpark recipe whose application.yaml names a role class
    that is not in the artifact, or that visibly does not subclass the role's sdk base. A base
    that comes from elsewhere cannot be judged here; the run checks it."""
    path = Path(application)
    if not path.is_file():      # relative to the project folder
        path = Path(root) / application
    app = read_application(path)
    roles = roles_of(app)
    if not roles:
        raise ConfigError(f"application.yaml names no role; expected some of {', '.join(ROLES)}")
    complete = [task for task, needed in TASK_ROLES.items() if all(r in roles for r in needed)]
    if not complete:
        wants = "; ".join(f"{task}: {', '.join(needed)}" for task, needed in TASK_ROLES.items())
        raise ConfigError(f"application.yaml names the roles {', '.join(roles)}, which run no "
                          f"task; each task needs these roles ({wants})")
    scanner = _Scanner(Path(import_root))
    for role, target in resolve_roles(roles, path, Path(import_root), scanner).items():
        problem = scanner.check(target, ROLES[role])
        if problem:
            raise ConfigError(f"application.yaml role {role} = {roles[role]}: {problem}")


def resolve_roles(roles: dict[str, str], application: Path, import_root: Path,
                  scanner: Optional["_Scanner"] = None) -> dict[str, str]:
    """Each role's class as `package.module.Class`. The platform's own samples name roles by bare
    class name (`pipeline.class: TrainPipeline`), which the platform looked up in the namespace of
    the recipe's package (its `__init__` exports them), then in the package's modules; a bare name
    found in no module, or defined in several and exported by none, is refused (a 400)."""
    scanner = scanner or _Scanner(Path(import_root))
    packages = _recipe_packages(Path(application), Path(import_root))
    return {role: scanner.resolve(target, packages, role) for role, target in roles.items()}


def _recipe_packages(application: Path, import_root: Path) -> list[str]:
    """Where bare role names are looked up: the package holding resources/application.yaml, else
    every top-level package of the recipe."""
    try:
        owner = application.resolve().parent.parent.relative_to(import_root.resolve())
    except ValueError:
        owner = None
    if owner is not None and owner.parts and (import_root / owner / "__init__.py").is_file():
        return [".".join(owner.parts)]
    return sorted(p.name for p in import_root.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name.isidentifier())


class _Scanner:
    """Classes of a recipe's package read with `ast`: where a name comes from, what it extends."""

    def __init__(self, import_root: Path) -> None:
        self.import_root = import_root
        self._modules: dict[str, Optional[ast.Module]] = {}
        self._packages: set[str] = set()

    def module(self, name: str) -> Optional[ast.Module]:
        if name not in self._modules:
            path = self.import_root.joinpath(*name.split("."))
            for candidate in (path.with_suffix(".py"), path / "__init__.py"):
                if candidate.is_file():
                    try:
                        self._modules[name] = ast.parse(candidate.read_text(errors="replace"))
                    except SyntaxError as exc:
                        raise ConfigError(f"{candidate.relative_to(self.import_root)} does not "
                                          f"parse: {exc}") from exc
                    if candidate.name == "__init__.py":
                        self._packages.add(name)
                    break
            else:
                self._modules[name] = None
        return self._modules[name]

    def resolve(self, target: str, packages: list[str], role: str) -> str:
        if "." in target or ":" in target:
            return target
        if not target.isidentifier():
            raise ConfigError(f"application.yaml role {role} = {target!r} is not a class name")
        exported = list(dict.fromkeys(found for pkg in packages
                                      if (found := self._exported(pkg, target, set()))))
        if len(exported) == 1:
            return exported[0]
        defined = exported or list(dict.fromkeys(
            f"{module}.{target}" for pkg in packages for module in self._modules_of(pkg)
            if self._defines(module, target)))
        if len(defined) == 1:
            return defined[0]
        where = ", ".join(packages) or "none"
        if not defined:
            raise ConfigError(
                f"application.yaml role {role} = {target}: no class {target} in the namespace of "
                f"the recipe's package ({where}) nor in its modules; name it as "
                "package.module.ClassName, or export it from the package's __init__.py")
        raise ConfigError(
            f"application.yaml role {role} = {target} is ambiguous: {', '.join(defined)} all "
            "define it; name one as package.module.ClassName")

    def _defines(self, module_name: str, class_name: str) -> bool:
        tree = self.module(module_name)
        return tree is not None and any(isinstance(node, ast.ClassDef) and node.name == class_name
                                        for node in tree.body)

    def _modules_of(self, package: str) -> list[str]:
        folder = self.import_root.joinpath(*package.split("."))
        found = [package]
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            if parts and all(p.isidentifier() for p in parts) and \
                    all((folder.joinpath(*parts[:i]) / "__init__.py").is_file()
                        for i in range(1, len(parts))):
                found.append(".".join((package, *parts)))
        return list(dict.fromkeys(found))

    def _exported(self, module_name: str, name: str, seen: set) -> Optional[str]:
        """`module.Class` where `name` in `module_name`'s namespace is defined: by a class
        statement, an import (followed while it stays in the recipe) or a star import."""
        if module_name in seen:
            return None
        seen.add(module_name)
        tree = self.module(module_name)
        if tree is None:
            return None
        if self._defines(module_name, name):
            return f"{module_name}.{name}"
        imports = _imports(tree, module_name, module_name in self._packages)
        if name in imports:
            owner, _, original = imports[name].rpartition(".")
            if self.module(owner) is not None:
                return self._exported(owner, original, seen) or f"{module_name}.{name}"
            # a submodule imported by name, or something from outside the recipe
            return None if self.module(imports[name]) is not None else f"{module_name}.{name}"
        for source in _star_imports(tree, module_name, module_name in self._packages):
            found = self._exported(source, name, seen)
            if found:
                return found
        return None

    def check(self, target: str, role: Role) -> Optional[str]:
        module_name, class_name = split_class(target)
        if self.module(module_name) is None:
            return f"the module {module_name} is not in the artifact"
        verdict = self._extends(module_name, class_name, role.base, set())
        if verdict is None:
            return f"the module {module_name} defines no class {class_name}"
        if verdict == "no":
            return f"the class {class_name} does not subclass {role.base}"
        return None

    def _extends(self, module_name: str, class_name: str, base: str, seen: set) -> Optional[str]:
        """'yes', 'no', 'unknown' (a base from outside the recipe), None (no such class)."""
        if (module_name, class_name) in seen:
            return "unknown"
        seen.add((module_name, class_name))
        tree = self.module(module_name)
        if tree is None:
            return None
        imports = _imports(tree, module_name, module_name in self._packages)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == class_name:
                verdicts = [self._base_verdict(module_name, imports, b, base, seen) for b in node.bases]
                if "yes" in verdicts:
                    return "yes"
                return "unknown" if "unknown" in verdicts else "no"
        if class_name in imports:   # re-exported: `from .loaders import Loader`
            source = imports[class_name]
            owner, _, name = source.rpartition(".")
            if self.module(owner) is not None:
                return self._extends(owner, name, base, seen)
            return "unknown"
        return None

    def _base_verdict(self, module_name: str, imports: dict[str, str], node: ast.expr, base: str,
                      seen: set) -> str:
        dotted = _dotted(node)
        if dotted is None:
            return "unknown"
        if dotted in ("object", "builtins.object"):
            return "no"
        head, _, rest = dotted.partition(".")
        full = (imports[head] + ("." + rest if rest else "")) if head in imports else f"{module_name}.{dotted}"
        if full in SDK_CLASSES:
            return "yes" if SDK_CLASSES[full] == base or (base.endswith("MLEvaluator") and
                                                             SDK_CLASSES[full].endswith("MLEvaluator")) else "no"
        if full.startswith("sdk."):
            return "no"
        owner, _, name = full.rpartition(".")
        if self.module(owner) is not None:
            verdict = self._extends(owner, name, base, seen)
            return "unknown" if verdict is None else verdict
        return "unknown"


def _dotted(node: ast.expr) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _absolute(node: ast.ImportFrom, module_name: str, is_package: bool) -> str:
    here = module_name.split(".") if is_package else module_name.split(".")[:-1]
    source = node.module or ""
    if node.level:
        base = here[:len(here) - (node.level - 1)] if node.level - 1 <= len(here) else []
        source = ".".join([*base, *([source] if source else [])])
    return source


def _star_imports(tree: ast.Module, module_name: str, is_package: bool) -> list[str]:
    """The modules `from X import *` at the top of `tree` takes every name of."""
    return [_absolute(node, module_name, is_package) for node in tree.body
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)]


def _imports(tree: ast.Module, module_name: str, is_package: bool) -> dict[str, str]:
    """Local name -> the full dotted name it was imported as."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module_name, is_package)
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{source}.{alias.name}" if source else alias.name
    return names
