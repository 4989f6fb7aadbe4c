"""What a face asks for when it starts a run: one typed `RunRequest` that `run train|score|fp`,
`run submit`, a sweep's trials, `POST /experiments/{id}/runs` and a schedule's fire each build
and hand to the run path (RunExecutor.run in the foreground, .start in the background) in one
call. The faces say what they want; the path validates, prepares, creates, executes and records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol


@dataclass(frozen=True)
class RunRequest:
    """One run, as a face asks for it.

    `body` is the run document as posted (the API's, a schedule's: mode, tasks, description);
    without one the run's document is `{"mode": mode}`. Either way the path validates it once.
    `overrides` are the command line's layer (`-p`, `--params`), `secret_keys` those of them to
    mask; `model_id` is `--model`. `annotations` are written on the run as it is created (a sweep
    trial's place in its sweep)."""

    experiment_id: str
    mode: Optional[str] = None
    body: Optional[Any] = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()
    model_id: Optional[str] = None
    device: Optional[str] = None
    backend: Optional[str] = None
    env_manager: Optional[str] = None
    extra_pip: tuple[str, ...] = ()
    annotations: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, experiment_id: str, body: Any, **options: Any) -> "RunRequest":
        """A run as `POST /experiments/{id}/runs` (or a schedule) words it."""
        return cls(experiment_id=experiment_id, body=body, **options)

    def document(self) -> Any:
        """The run document to validate and write (the body as given, or `{"mode": mode}`)."""
        return self.body if self.body is not None else {"mode": self.mode}

    def cli_overrides(self) -> dict[str, Any]:
        """The command line's layer, `--model` included (a run key, taken out before resolution)."""
        values = dict(self.overrides)
        if self.model_id:
            values["modelId"] = self.model_id
        return values


class Claim(Protocol):
    """What must commit with the run's creation, or nothing is created (a schedule's fire:
    the compare-and-set on its next fire time, then the run id it started)."""

    def take(self) -> bool:
        """In the transaction, before the run is written: False when another process took it
        (no run is written)."""

    def taken(self, run: dict[str, Any]) -> None:
        """In the same transaction, once the run is written."""
