"""Parameter sweeps: the grammar (Hydra-multirun style), the trial plan, and the runner.

The grammar and the plan are pure (`parse_param`, `load_sweep_file`, `plan_trials`): strings in,
lists of `{key: value}` overrides out, every mistake a ConfigError naming the parameter.

    -p learning_rate=0.001,0.003,0.01      a list: one trial per value (grid)
    -p hidden_size=range(32,129,32)        32, 64, 96, 128 (stop excluded, as Python and Hydra)
    -p n_estimators=choice(4,8)            a list, spelled as a function
    -p weight_decay=loguniform(1e-6,1e-3)  a distribution: needs --samples N
    -p learning_rate=uniform(0.001,0.1)    (interval(a,b) is the same)
    -p max_depth=randint(1,4)              1, 2 or 3 (high excluded, as numpy)
    -p epochs=5                            one value: the same in every trial
    -p 'input_features="a,b"'              quotes keep a comma inside one value

Without `--samples` the trials are the grid (the product of the lists, first parameter slowest);
with `--samples N --seed S` each of N trials draws every parameter independently (a list or
range: uniformly among its values).

`SweepRunner` runs the trials as ordinary runs of one Experiment through the run queue (each
leases its own CPU slots or GPUs there), at most `parallel` at once, and keeps the sweep's state
in HOME/sweeps/<id>/ (sweep.json, results.csv, results.json) so `run sweep --resume ID` can skip
what already finished.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import ConfigError
# A sweep's own Experiment says so: plain runs never take it as their default (its Models are
# trials, not the MLInstance's Model).
from .runs.prepare import SWEEP_EXPERIMENT_DESCRIPTION

MAX_GRID = 10_000
DISTRIBUTIONS = ("uniform", "interval", "loguniform", "randint")
_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.S)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Axis:
    """One swept parameter: a list of values (`values`) or a distribution (`dist`, `low`, `high`)."""

    key: str
    values: tuple[str, ...] = ()
    dist: Optional[str] = None
    low: float = 0.0
    high: float = 0.0
    text: str = ""

    @property
    def is_distribution(self) -> bool:
        return self.dist is not None

    def draw(self, rng: random.Random) -> str:
        if self.dist is None:
            return rng.choice(self.values)
        if self.dist in ("uniform", "interval"):
            return _fmt(rng.uniform(self.low, self.high))
        if self.dist == "loguniform":
            return _fmt(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return str(rng.randrange(int(self.low), int(self.high)))   # randint


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _split_top(text: str) -> list[str]:
    """Split on commas outside quotes and brackets."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                current.append(ch)
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            current.append(ch)
        elif ch in ")]}":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if quote:
        raise ValueError("an unclosed quote")
    parts.append("".join(current).strip())
    return parts


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"Sweep parameter {key!r}: {text!r} is not a number") from None


def _range(key: str, args: list[str]) -> tuple[str, ...]:
    if not 1 <= len(args) <= 3 or any(not a for a in args):
        raise ConfigError(f"Sweep parameter {key!r}: range takes (stop), (start, stop) or "
                          "(start, stop, step)")
    nums = [_number(key, a) for a in args]
    if len(nums) == 1:
        nums = [0.0, nums[0]]
    start, stop = nums[0], nums[1]
    step = nums[2] if len(nums) == 3 else 1.0
    if step == 0:
        raise ConfigError(f"Sweep parameter {key!r}: range step must not be 0")
    integral = all(float(n).is_integer() and "." not in a and "e" not in a.lower()
                   for n, a in zip(nums, args))
    values: list[str] = []
    i = 0
    while True:
        value = start + i * step
        if (step > 0 and value >= stop - 1e-12) or (step < 0 and value <= stop + 1e-12):
            break
        values.append(str(int(round(value))) if integral else _fmt(value))
        i += 1
        if len(values) > MAX_GRID:
            raise ConfigError(f"Sweep parameter {key!r}: range gives over {MAX_GRID} values")
    if not values:
        raise ConfigError(f"Sweep parameter {key!r}: range({', '.join(args)}) is empty")
    return tuple(values)


def parse_value(key: str, text: str) -> Axis:
    """One parameter's sweep value (see the module's docstring)."""
    text = text.strip()
    call = _CALL.match(text)
    if call:
        name, inner = call.group(1).lower(), call.group(2)
        try:
            args = _split_top(inner)
        except ValueError as exc:
            raise ConfigError(f"Sweep parameter {key!r}: {exc} in {text!r}") from None
        if name == "range":
            return Axis(key, values=_range(key, args), text=text)
        if name == "choice":
            if not args or any(a == "" for a in args):
                raise ConfigError(f"Sweep parameter {key!r}: choice() needs values")
            return Axis(key, values=tuple(args), text=text)
        if name in DISTRIBUTIONS:
            if len(args) != 2:
                raise ConfigError(f"Sweep parameter {key!r}: {name} takes (low, high), got "
                                  f"{text!r}")
            low, high = _number(key, args[0]), _number(key, args[1])
            if not low < high:
                raise ConfigError(f"Sweep parameter {key!r}: {name}({args[0]}, {args[1]}) needs "
                                  "low < high")
            if name == "loguniform" and low <= 0:
                raise ConfigError(f"Sweep parameter {key!r}: loguniform needs low > 0")
            if name == "randint" and not (low.is_integer() and high.is_integer()):
                raise ConfigError(f"Sweep parameter {key!r}: randint takes whole numbers")
            return Axis(key, dist=name, low=low, high=high, text=text)
        raise ConfigError(f"Sweep parameter {key!r}: unknown sweep function {name!r}(); use "
                          "range, choice, uniform, interval, loguniform or randint (or a, b, c)")
    try:
        values = _split_top(text)
    except ValueError as exc:
        raise ConfigError(f"Sweep parameter {key!r}: {exc} in {text!r}") from None
    if len(values) > 1 and any(v == "" for v in values):
        raise ConfigError(f"Sweep parameter {key!r}: an empty value in the list {text!r}")
    return Axis(key, values=tuple(values), text=text)


def parse_param(text: str) -> Axis:
    """`key=value` from the command line."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"Sweep parameter {text!r}: expected KEY=VALUE (e.g. "
                          "learning_rate=0.001,0.01)")
    if not _KEY.match(key):
        raise ConfigError(f"Sweep parameter {text!r}: {key!r} is not a parameter name")
    return parse_value(key, value)


def axes_from_mapping(params: Mapping[str, Any], where: str) -> list[Axis]:
    """The `params:` of a sweep file: a YAML list is a list of values, a string is parsed like
    the command line, a plain number or boolean is one value."""
    axes = []
    for key, value in params.items():
        key = str(key)
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}: parameter {key!r} has an empty list")
            axes.append(Axis(key, values=tuple(_yaml_text(v) for v in value), text=str(value)))
        elif isinstance(value, (dict, type(None))):
            raise ConfigError(f"{where}: parameter {key!r} must be a value, a list or a sweep "
                              "expression such as range(1,5)")
        elif isinstance(value, str):
            axes.append(parse_value(key, value))
        else:
            axes.append(Axis(key, values=(_yaml_text(value),), text=str(value)))
    return axes


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class SweepConfig:
    """A sweep file's content (any key may be missing; the command line wins)."""

    axes: list[Axis] = field(default_factory=list)
    samples: Optional[int] = None
    seed: Optional[int] = None
    metric: Optional[str] = None
    mode: Optional[str] = None
    parallel: Optional[int] = None


def load_sweep_file(path: str | os.PathLike) -> SweepConfig:
    import yaml

    where = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"Sweep file {where}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"Sweep file {where}: not valid YAML{line}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
        raise ConfigError(f"Sweep file {where}: expected a mapping with `params:` (parameter -> "
                          "values), and optionally samples, seed, metric, mode, parallel")
    unknown = set(doc) - {"params", "samples", "seed", "metric", "mode", "parallel"}
    if unknown:
        raise ConfigError(f"Sweep file {where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    config = SweepConfig(axes=axes_from_mapping(doc["params"], where))
    for name in ("samples", "seed", "parallel"):
        if doc.get(name) is not None:
            if not isinstance(doc[name], int) or isinstance(doc[name], bool):
                raise ConfigError(f"Sweep file {where}: {name} must be a whole number")
            setattr(config, name, doc[name])
    for name in ("metric", "mode"):
        if doc.get(name) is not None:
            setattr(config, name, str(doc[name]))
    return config


def plan_trials(axes: Sequence[Axis], *, samples: Optional[int] = None,
                seed: Optional[int] = None) -> list[dict[str, str]]:
    """The trials' parameter values, in order."""
    keys = [a.key for a in axes]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ConfigError(f"Sweep parameter(s) given twice: {', '.join(duplicated)}")
    if samples is not None:
        if samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {samples}")
        rng = random.Random(0 if seed is None else seed)
        return [{a.key: a.draw(rng) for a in axes} for _ in range(samples)]
    if seed is not None:
        raise ConfigError("--seed only applies to random sampling: add --samples N")
    dists = [a for a in axes if a.is_distribution]
    if dists:
        raise ConfigError(f"Sweep parameter {dists[0].key}={dists[0].text} is a distribution: "
                          "sample it with --samples N (a grid needs lists or ranges)")
    size = math.prod(len(a.values) for a in axes) if axes else 0
    if size == 0:
        raise ConfigError("A sweep needs at least one parameter: -p KEY=V1,V2 or a sweep file")
    if size > MAX_GRID:
        raise ConfigError(f"The grid has {size} trials (over {MAX_GRID}): narrow it, or sample "
                          "it with --samples N")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(a.values for a in axes))]


# --- results --------------------------------------------------------------------------------

def metric_of(metrics: Sequence[Mapping[str, Any]], name: str) -> Optional[float]:
    """The value of metric `name` (case-insensitive) in a run's metric list."""
    wanted = name.strip().lower()
    for metric in metrics or ():
        if str(metric.get("name", "")).lower() == wanted:
            try:
                return float(metric["value"])
            except (TypeError, ValueError, KeyError):
                return None
    return None


def sorted_rows(rows: Sequence[Mapping[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Rows with a metric first (best first), then the rest in trial order."""
    sign = 1.0 if mode == "min" else -1.0
    return sorted((dict(r) for r in rows), key=lambda r: (
        r.get("metric") is None, sign * r["metric"] if r.get("metric") is not None else 0.0,
        r["trial"]))


def table_text(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], metric: Optional[str]) -> str:
    headers = ["trial", *keys, metric or "metric", "duration_s", "state", "run"]
    body = []
    for r in rows:
        value = r.get("metric")
        body.append([str(r["trial"]), *(str(r["params"].get(k, "")) for k in keys),
                     "-" if value is None else f"{value:.6g}",
                     "-" if r.get("duration_s") is None else f"{r['duration_s']:.1f}",
                     r.get("state") or "", r.get("runId") or "-"])
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in body]
    return "\n".join(lines)


# --- the runner -----------------------------------------------------------------------------

FINISHED = ("DONE", "STOPPED EARLY")   # what --resume keeps
STOP_EARLY_RULES = ("median",)
MEDIAN_MIN_COMPLETED = 2     # completed trials with a value at that epoch before any is stopped
MEDIAN_GRACE_STEPS = 1       # steps (epochs) 1..GRACE are never judged
MONITOR_POLL_S = 0.5


def sweeps_dir(home_root: Path) -> Path:
    return Path(home_root) / "sweeps"


class SweepRunner:
    """Runs a sweep's trials as runs of one Experiment, at most `parallel` at once. `state` is
    the sweep.json document; `out(line)` reports progress."""

    def __init__(self, registry: Any, caller: Any, state: dict[str, Any], *,
                 out: Callable[[str], None], device: Optional[str] = None,
                 backend: Optional[str] = None, interrupt: Any = None,
                 executor: Any = None) -> None:
        from .runs import RunExecutor

        self.registry = registry
        self.caller = caller
        self.state = state
        self.out = out
        self.device = device
        self.backend = backend
        self.interrupt = interrupt
        self.executor = executor or RunExecutor(registry)
        self.folder = sweeps_dir(registry.home.root) / state["id"]
        self._lock = threading.Lock()
        self._next = 0
        # trials reported so far: a resumed sweep's finished ones count; two ending together
        # are reported 1/N and 2/N, not twice 2/N
        self._reported = sum(1 for r in state["rows"] if r["state"] in FINISHED)
        self._running: dict[str, dict[str, Any]] = {}   # run id -> row, metrics file offset
        self._done_flag = threading.Event()

    # -- state ---------------------------------------------------------------------------------

    @staticmethod
    def new_state(*, sweep_id: Optional[str] = None, instance_id: str, experiment_id: str,
                  mode: str, trials: list[dict[str, str]], base: dict[str, Any],
                  metric: Optional[str], order: str, parallel: int, keys: list[str],
                  target: str, stop_early: Optional[str] = None,
                  env_manager: Optional[str] = None,
                  extra_pip: Optional[list[str]] = None) -> dict[str, Any]:
        if stop_early is not None and stop_early not in STOP_EARLY_RULES:
            raise ConfigError(f"--stop-early {stop_early!r}: the rule is one of "
                              f"{', '.join(STOP_EARLY_RULES)}")
        if stop_early and not metric:
            raise ConfigError("--stop-early needs --metric: the per-epoch metric it compares")
        return {"id": sweep_id or str(uuid.uuid4()), "mlInstanceId": instance_id,
                "experimentId": experiment_id, "mode": mode, "target": target,
                "metric": metric, "order": order, "parallel": parallel, "keys": keys,
                "stopEarly": stop_early, "envManager": env_manager, "extraPip": extra_pip or [],
                "base": base, "created": time.time(),
                "rows": [{"trial": i, "params": p, "runId": None, "state": "PENDING",
                          "metric": None, "duration_s": None, "modelId": None, "reason": None}
                         for i, p in enumerate(trials)]}

    @classmethod
    def load(cls, home_root: Path, sweep_id: str) -> dict[str, Any]:
        path = sweeps_dir(home_root) / sweep_id / "sweep.json"
        if not _safe_id(sweep_id) or not path.is_file():
            from .errors import NotFound

            raise NotFound(f"Sweep {sweep_id!r} not found under {sweeps_dir(home_root)}")
        return json.loads(path.read_text())

    def save(self) -> None:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.folder / "sweep.json", json.dumps(self.state, indent=1))
            rows = self.results()
            _atomic_write(self.folder / "results.json", json.dumps(rows, indent=1))
            keys = self.state["keys"]
            tmp = self.folder / "results.csv.tmp"
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["trial", *keys, self.state.get("metric") or "metric",
                                 "duration_s", "state", "runId", "modelId", "reason"])
                for r in rows:
                    writer.writerow([r["trial"], *(r["params"].get(k, "") for k in keys),
                                     "" if r["metric"] is None else r["metric"],
                                     "" if r["duration_s"] is None else round(r["duration_s"], 3),
                                     r["state"], r["runId"] or "", r["modelId"] or "",
                                     r["reason"] or ""])
            os.replace(tmp, self.folder / "results.csv")

    def results(self) -> list[dict[str, Any]]:
        return sorted_rows(self.state["rows"], self.state.get("order") or "min")

    # -- running -------------------------------------------------------------------------------

    def stopping(self) -> bool:
        return bool(self.interrupt is not None and getattr(self.interrupt, "reason", None))

    def run(self) -> list[dict[str, Any]]:
        """Run every trial not DONE yet; returns the sorted results."""
        todo = [r for r in self.state["rows"] if r["state"] not in FINISHED]
        for row in todo:   # a resumed sweep runs its unfinished trials again
            row.update(state="PENDING", runId=None, metric=None, duration_s=None, modelId=None,
                       reason=None)
        self.save()
        self._todo = todo
        threads = [threading.Thread(target=self._worker, name=f"sweep-{i}", daemon=True)
                   for i in range(max(1, min(self.state["parallel"], len(todo))))]
        for thread in threads:
            thread.start()
        monitor = None
        if self.state.get("stopEarly"):
            monitor = threading.Thread(target=self._monitor, name="sweep-stop-early", daemon=True)
            monitor.start()
        for thread in threads:
            while thread.is_alive():
                try:
                    thread.join(0.2)
                except KeyboardInterrupt:   # a second Ctrl-C: the runs are stopping already
                    continue
        if monitor is not None:
            self._done_flag.set()
            monitor.join(timeout=5)
        for row in self.state["rows"]:
            if row["state"] == "PENDING" and self.stopping():
                row.update(state="NOT STARTED", reason=self.interrupt.reason)
        self._tag_best()
        self.save()
        return self.results()

    def _take(self) -> Optional[dict[str, Any]]:
        with self._lock:
            if self.stopping() or self._next >= len(self._todo):
                return None
            row = self._todo[self._next]
            self._next += 1
            return row

    def _worker(self) -> None:
        while True:
            row = self._take()
            if row is None:
                return
            try:
                self._trial(row)
            except BaseException as exc:  # one trial's failure never stops the sweep
                row.update(state="FAILED" if not self.stopping() else "ABORTED",
                           reason=getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}")
            self.save()
            self._report(row)

    def _trial(self, row: dict[str, Any]) -> None:
        from .runs import RunRequest

        state = self.state
        if self.stopping():
            row.update(state="NOT STARTED", reason=self.interrupt.reason)
            return
        request = RunRequest(
            experiment_id=state["experimentId"], mode=state["mode"],
            overrides={**state["base"], **row["params"]}, device=self.device,
            backend=self.backend, env_manager=state.get("envManager"),
            extra_pip=tuple(state.get("extraPip") or ()),
            annotations={"sweep": {"id": state["id"], "trial": row["trial"],
                                   "params": row["params"]}})

        def created(run: dict[str, Any], plan: Any) -> None:   # an ordinary run of its own
            row["runId"] = run["id"]
            row["state"] = "RUNNING"
            self.save()
            if state.get("stopEarly"):
                with self._lock:
                    self._running[run["id"]] = {"row": row, "offset": 0}

        try:
            summary = self.executor.run(self.caller, request, interrupt=self.interrupt,
                                        on_created=created)
        finally:
            if state.get("stopEarly") and row.get("runId"):
                with self._lock:
                    self._running.pop(row["runId"], None)
        if summary is None:   # stopped before its run was created
            row.update(state="NOT STARTED", reason=self.interrupt.reason)
            return
        row["state"] = summary["state"]
        row["modelId"] = summary.get("modelId")
        row["reason"] = summary.get("reason") if summary["state"] != "DONE" else None
        if state.get("metric"):
            row["metric"] = metric_of(summary.get("metrics") or [], state["metric"])
        if row.get("stoppedEarly") and summary["state"] == "ABORTED":
            row.update(state="STOPPED EARLY", reason=row["stoppedEarly"], metric=None)
        elif state.get("stopEarly") and summary["state"] == "DONE":
            row["curve"] = self._curve(row["runId"])
        row["duration_s"] = self._duration(row["runId"])

    # -- early stopping (median rule) ----------------------------------------------------------

    def _curve(self, run_id: str) -> dict[str, float]:
        """The run's per-step values of the sweep's metric, from its run folder."""
        from .metrics_series import METRICS_FILE, read_points

        points, _, _ = read_points(self.registry.home.runs / run_id / METRICS_FILE)
        wanted = str(self.state["metric"]).lower()
        return {str(p["step"]): p["value"] for p in points
                if p["name"].lower() == wanted and p["value"] is not None}

    def _median_at(self, step: int) -> tuple[Optional[float], int]:
        import statistics

        values = [r["curve"][str(step)] for r in self.state["rows"]
                  if r["state"] == "DONE" and str(step) in (r.get("curve") or {})]
        if len(values) < MEDIAN_MIN_COMPLETED:
            return None, len(values)
        return statistics.median(values), len(values)

    def _monitor(self) -> None:
        """Stops a running trial whose metric at an epoch is worse than the median of the
        completed trials at that epoch (after MEDIAN_GRACE_STEPS, once MEDIAN_MIN_COMPLETED
        trials have a value there)."""
        from .metrics_series import METRICS_FILE, read_points

        wanted = str(self.state["metric"]).lower()
        worse = ((lambda v, m: v > m) if (self.state.get("order") or "min") == "min"
                 else (lambda v, m: v < m))
        while not self._done_flag.wait(MONITOR_POLL_S):
            with self._lock:
                running = list(self._running.items())
            for run_id, entry in running:
                row = entry["row"]
                if row.get("stoppedEarly"):
                    continue
                points, entry["offset"], _ = read_points(
                    self.registry.home.runs / run_id / METRICS_FILE, entry["offset"])
                for p in points:
                    if (p["name"].lower() != wanted or p["value"] is None
                            or p["step"] <= MEDIAN_GRACE_STEPS):
                        continue
                    median, count = self._median_at(p["step"])
                    if median is None or not worse(p["value"], median):
                        continue
                    reason = (f"stopped early: {self.state['metric']} {p['value']:.6g} at epoch "
                              f"{p['step']} is worse than the median {median:.6g} of {count} "
                              "completed trials there")
                    row["stoppedEarly"] = reason
                    control = self.executor.supervisor.control(run_id)
                    if control is not None:
                        control.request_stop(reason)
                    break

    def _duration(self, run_id: str) -> Optional[float]:
        status = self.registry.status_document(self.caller.scope, run_id)
        if status is None or not status.task.started or not status.task.ended:
            return None
        return status.task.duration_s()

    def _report(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._reported += 1
            done, total = self._reported, len(self.state["rows"])
        params = " ".join(f"{k}={v}" for k, v in row["params"].items())
        metric = self.state.get("metric")
        shown = (f" {metric}={row['metric']:.6g}" if metric and row["metric"] is not None else "")
        why = f" ({row['reason']})" if row.get("reason") else ""
        dur = f" in {row['duration_s']:.1f} s" if row.get("duration_s") is not None else ""
        self.out(f"[{done}/{total}] trial {row['trial']} {row['state']}{shown}{dur}: {params} "
                 f"run {row.get('runId') or '-'}{why}")

    def finished_ok(self) -> bool:
        return all(r["state"] in FINISHED for r in self.state["rows"])

    def best(self) -> Optional[dict[str, Any]]:
        for row in self.results():
            if row["state"] == "DONE" and row.get("metric") is not None:
                return row
        return None

    def _tag_best(self) -> None:
        """The best run's Model gets tags sweepId and sweepBest (metric=value); a Model of this
        sweep tagged best by an earlier pass of it loses the tag."""
        from .schemas import MODEL

        best = self.best()
        metric = self.state.get("metric")
        if not metric:
            return
        registry, scope = self.registry, self.caller.scope
        with registry.transaction():
            for row in self.state["rows"]:
                if not row.get("modelId"):
                    continue
                doc = registry.find(MODEL, scope, row["modelId"])
                if doc is None:
                    continue
                tags = dict(doc.get("tags") or {})
                tags["sweepId"] = self.state["id"]
                if best is not None and row["trial"] == best["trial"]:
                    tags["sweepBest"] = f"{metric}={row['metric']:.6g}"
                else:
                    tags.pop("sweepBest", None)
                registry.set_tags(MODEL, scope, doc["id"], tags)


def _safe_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9\-]{1,64}", text))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
