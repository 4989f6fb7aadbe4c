"""One error hierarchy for the whole runtime.

Every error a user can see derives from RuntimeError_ (`MLRuntimeError`): it carries a short
`title`, a `detail` sentence and an HTTP `status`. The API maps it once to the contract's error
body `{type, title, status, detail}`; the CLI maps it once to a one-line message.
"""
from __future__ import annotations

from typing import Any


class MLRuntimeError(Exception):
    """Root of every user-facing error."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal-error"

    def __init__(self, detail: str, *, title: str | None = None, status: int | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if title is not None:
            self.title = title
        if status is not None:
            self.status = status
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return f"https://platform.adobe.io/data/foundation/ml/problems/{self.slug}"

    def to_body(self) -> dict[str, Any]:
        return {"type": self.type_uri, "title": self.title, "status": self.status,
                "detail": self.detail}

    def __str__(self) -> str:
        return self.detail


class BadRequest(MLRuntimeError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(MLRuntimeError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(MLRuntimeError):
    """An authenticated caller asking for what it may not reach (a sandbox, a path)."""

    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(MLRuntimeError):
    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(MLRuntimeError):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class NotAcceptable(MLRuntimeError):
    status, title, slug = 406, "Not Acceptable", "not-acceptable"


class Conflict(MLRuntimeError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(MLRuntimeError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(MLRuntimeError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Unprocessable(MLRuntimeError):
    """A valid request this runtime cannot carry out (e.g. a model transcoding)."""

    status, title, slug = 422, "Unprocessable Entity", "unprocessable-entity"


class ValidationFailed(MLRuntimeError):
    """A well-formed request whose values break a rule (a missing name, an unknown engineId)."""

    status, title, slug = 400, "Illegal Argument", "illegal-argument"


class ConfigError(MLRuntimeError):
    """A configuration that cannot be resolved: a bad value, an unknown key, a bad file."""

    status, title, slug = 400, "Invalid Configuration", "invalid-configuration"


class EngineNotFound(MLRuntimeError):
    status, title, slug = 400, "Unknown Engine", "unknown-engine"


class MissingDependency(MLRuntimeError):
    """An optional part is not installed; `detail` carries the exact install command."""

    status, title, slug = 501, "Missing Dependency", "missing-dependency"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'mlinstance-runtime[{extra}]'",
            package=package, extra_name=extra)


class StoreError(MLRuntimeError):
    """The registry store cannot be opened, migrated or written."""

    status, title, slug = 500, "Store Error", "store-error"


class ExecutionError(MLRuntimeError):
    """A run failed on its backend; names the run, the MLInstance and the backend."""

    status, title, slug = 500, "Run Failed", "run-failed"


class ServerConfigError(MLRuntimeError):
    """The server cannot start as asked (for example, a public bind address without tokens)."""

    status, title, slug = 500, "Server Configuration Error", "server-configuration"


class EnvBuildError(MLRuntimeError):
    """A recipe's environment could not be resolved, built or checked; the run does not start.
    `build_log` holds uv's/pip's output (the run's log gets it); `step` names what failed."""

    status, title, slug = 422, "Environment Build Failed", "environment-build-failed"

    def __init__(self, detail: str, *, build_log: str = "", step: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail, step=step, **extra)
        self.build_log = build_log
        self.step = step


class PythonUnavailable(EnvBuildError):
    """The recipe's pins or python_requires need a Python this host lacks; `needed` names it."""

    title, slug = "Python Unavailable", "python-unavailable"

    def __init__(self, detail: str, *, needed: str, build_log: str = "") -> None:
        super().__init__(detail, build_log=build_log, step="python", needed=needed)
        self.needed = needed
