"""Spark's exceptions become the project's ExecutionError at the boundary, with Spark's message."""
from __future__ import annotations

from ..errors import ExecutionError

__all__ = ["is_spark_error", "spark_message", "translate"]


def is_spark_error(exc: BaseException) -> bool:
    """A pyspark (Python-side) or py4j (JVM-side) exception, without importing either."""
    module = type(exc).__module__ or ""
    return module.startswith(("pyspark", "py4j"))


def spark_message(exc: BaseException) -> str:
    """Spark's own message, first lines only: a JVM stack trace belongs in the log, not the record."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            text = str(java.toString())
        except Exception:
            text = str(exc)
    else:
        getter = getattr(exc, "getMessage", None)
        try:
            text = getter() if callable(getter) else str(exc)
        except Exception:
            text = str(exc)
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    kept = []
    for line in lines:
        if line.lstrip().startswith(("at ", "JVM stacktrace:", "Traceback")):
            break
        kept.append(line.strip())
    return " ".join(kept[:3]) or type(exc).__name__


def translate(exc: BaseException, *, run_id: str, mlinstance_id: str | None,
              backend: str = "pyspark") -> ExecutionError:
    """The ExecutionError to raise `from exc`: names the run, the MLInstance and the backend."""
    instance = mlinstance_id or "(not given)"
    return ExecutionError(
        f"Run {run_id} of MLInstance {instance} failed on the {backend} backend: "
        f"Spark error {type(exc).__name__}: {spark_message(exc)}",
        run_id=run_id, mlinstance_id=mlinstance_id, backend=backend)
