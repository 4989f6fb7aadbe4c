"""Schedules as data: a schedule's cron, times and time zone checked when written, its next fire
time, and the schedules an MLService or an Experiment defines. Pure (no store, no clock of its
own): the schemas check with it, the MLService desk and the scheduler (runtime.scheduler) compute
with it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .errors import MLRuntimeError, ValidationFailed

# `run services run-now`: due at once, whatever the clocks of the CLI and the server say.
RUN_NOW = "1970-01-01T00:00:00.000Z"

# The schedule fields of each owner: (task, document field); an Experiment's is template.schedule.
SERVICE_SCHEDULES = (("train", "trainingSchedule"), ("score", "scoringSchedule"))


# -- times and cron ----------------------------------------------------------------------------

def iso(epoch_s: float) -> str:
    """An epoch time in the registry's format, `2019-01-01T00:00:00.000Z` (sorts as text)."""
    t = datetime.fromtimestamp(epoch_s, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(text: str, where: str) -> datetime:
    """An ISO date-time (`Z` or an offset; none: UTC), or a ValidationFailed naming `where`."""
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{where} {text!r} is not an ISO date-time such as "
                               "2024-01-01T00:00:00.000Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _zone(name: Optional[str], where: str) -> Any:
    if not name:
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"{_at(where, 'timezone')} {name!r} is not an IANA time zone such as "
                               "Europe/Paris") from None


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_schedule(schedule: Optional[dict[str, Any]], where: str = "") -> None:
    """A schedule's cron, times and time zone, checked when it is written (a 400 naming them)."""
    if not schedule or not schedule.get("cron"):
        for key in ("startTime", "endTime"):
            if schedule and schedule.get(key):
                parse_time(schedule[key], _at(where, key))
        return
    from croniter import croniter

    cron = str(schedule["cron"])
    if not croniter.is_valid(cron):
        raise ValidationFailed(f"{_at(where, 'cron')} {cron!r} is not a cron expression (five "
                               "fields: minute hour day-of-month month day-of-week, e.g. "
                               "'0 2 * * *', or @hourly, @daily, @weekly)")
    _zone(schedule.get("timezone"), where)
    start = schedule.get("startTime") and parse_time(schedule["startTime"], _at(where, "startTime"))
    end = schedule.get("endTime") and parse_time(schedule["endTime"], _at(where, "endTime"))
    if start and end and end <= start:
        raise ValidationFailed(f"{_at(where, 'endTime')} {schedule['endTime']!r} is not after "
                               f"its startTime {schedule['startTime']!r}")


def next_fire(spec: dict[str, Any], after_s: float) -> Optional[float]:
    """The first fire strictly after `after_s` (and not before startTime), or None once the
    schedule's endTime has passed."""
    from croniter import croniter

    zone = _zone(spec.get("timezone"), "schedule")
    after = datetime.fromtimestamp(after_s, timezone.utc)
    if spec.get("startTime"):
        start = parse_time(spec["startTime"], "schedule.startTime")
        if start > after:   # a fire may fall on startTime itself
            after = start - (datetime.min.resolution * 1000)
    fire = croniter(str(spec["cron"]), after.astimezone(zone)).get_next(datetime)
    if spec.get("endTime") and fire > parse_time(spec["endTime"], "schedule.endTime"):
        return None
    return fire.timestamp()


def seconds(text: Optional[str]) -> Optional[float]:
    """A registry time as epoch seconds (None stays None)."""
    return None if not text else parse_time(text, "time").timestamp()


# -- what defines schedules --------------------------------------------------------------------

def _spec(schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**{k: schedule.get(k) for k in ("cron", "startTime", "endTime", "timezone")
               if schedule.get(k)}, **extra}


def definitions(kind: str, doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(schedule id, task, spec) of an MLService's or an Experiment's schedules."""
    out = []
    if kind == "mlService":
        for task, field in SERVICE_SCHEDULES:
            schedule = doc.get(field) or {}
            if isinstance(schedule, dict) and schedule.get("cron"):
                out.append((f"{doc['id']}:{task}", task, _spec(schedule)))
    else:
        schedule = (doc.get("template") or {}).get("schedule") or {}
        if isinstance(schedule, dict) and schedule.get("cron"):
            from .tasks import run_mode

            try:
                mode = run_mode(str(schedule.get("mode") or "train"))
            except MLRuntimeError:
                mode = str(schedule.get("mode"))
            out.append((f"{doc['id']}:{mode}", mode, _spec(schedule, mode=mode)))
    return out
