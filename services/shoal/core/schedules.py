"""Periodic tasks: what a schedule is, and when it ticks.

A schedule enqueues one task per *tick*. Ticks come from a cron expression read in a
timezone (parsed by `cronsim`, which follows Debian cron, DST transitions included) or
from a fixed interval counted from an anchor time. Everything here is pure: the leader's
ticker (`shoal.scheduler.ticker`) decides with these functions what to enqueue, and the
store keeps the definitions and their next tick in Redis.

Why cronsim: it is small, dependency-free, maintained, and written for correctness first
(it is what Healthchecks uses to predict cron runs); it takes `zoneinfo` timezones and
mimics cron's behaviour in the hour that is skipped or repeated at a DST change, where
hand-written or naive parsers double-fire or skip.

Misfires: a tick is *on time* when it is enqueued within `misfire_grace_s` of its time
(a leader failover or a busy loop is late by seconds, not minutes). Ticks later than that
were missed while nothing ran, and the schedule's policy decides: `skip` enqueues none of
them, `run_once` enqueues one task for the latest of them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError

from shoal.core.names import NAME_PATTERN

Misfire = Literal["skip", "run_once"]
MISFIRE_POLICIES: tuple[str, ...] = ("skip", "run_once")
DEFAULT_MISFIRE_GRACE_S = 60.0
MIN_EVERY_S = 1.0
MAX_EVERY_S = 366 * 86400.0
MAX_MISSED_COUNTED = 1000  # beyond this many missed ticks the count says "at least"

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MS = 1000


class ScheduleError(ValueError):
    """A schedule that cannot work (bad cron expression, unknown timezone, ...)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """How often a task runs, as declared in code: `@task(schedule=Schedule(cron="0 2 * * *"))`.

    Give exactly one of `cron` (five fields, or six with seconds first; `@daily` and the other
    macros work) and `every_s`. `timezone` is an IANA name (`Europe/Berlin`); the cron fields
    are read in it. `args`/`kwargs` are passed to every run. `id` defaults to the task name.
    """

    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    misfire: Misfire = "run_once"
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    id: str | None = None

    def __post_init__(self) -> None:
        check_timing(self.cron, self.every_s, self.timezone, self.misfire, self.misfire_grace_s)


@dataclass(slots=True)
class ScheduleDefinition:
    """A schedule as stored: the task it enqueues and when."""

    id: str
    task: str
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_retries: int | None = None
    timeout_s: float | None = None
    misfire: Misfire = "run_once"
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    source: Literal["api", "code"] = "api"

    def validate(self) -> ScheduleDefinition:
        if not NAME_PATTERN.match(self.id):
            raise ScheduleError("schedule id must be 1-128 of [A-Za-z0-9_.:-]")
        if not NAME_PATTERN.match(self.task):
            raise ScheduleError("task must be a task name: 1-128 of [A-Za-z0-9_.:-]")
        if not NAME_PATTERN.match(self.queue):
            raise ScheduleError("queue must be 1-128 of [A-Za-z0-9_.:-]")
        check_timing(self.cron, self.every_s, self.timezone, self.misfire, self.misfire_grace_s)
        return self

    def digest(self) -> str:
        """Identifies the definition: a re-declaration with the same digest changes nothing."""
        fields = {
            "task": self.task,
            "cron": self.cron,
            "every_s": self.every_s,
            "timezone": self.timezone,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "priority": self.priority,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
            "misfire": self.misfire,
            "misfire_grace_s": self.misfire_grace_s,
        }
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]

    @property
    def timing(self) -> Timing:
        return Timing(self.cron, self.every_s, self.timezone)


@dataclass(slots=True)
class ScheduleState:
    """A stored schedule with where it stands (times in float seconds since the epoch)."""

    definition: ScheduleDefinition
    paused: bool
    next_run: float | None
    anchor: float
    created_at: float
    updated_at: float
    paused_at: float | None = None
    last_tick: float | None = None
    last_task_id: str | None = None
    last_fired_at: float | None = None
    missed: int = 0  # ticks not enqueued on time (skipped, or folded into one run)
    last_misfire: str | None = None


def check_timing(
    cron: str | None, every_s: float | None, timezone: str, misfire: str, misfire_grace_s: float
) -> None:
    """Raise ScheduleError saying what is wrong with a schedule's timing, if anything."""
    if (cron is None) == (every_s is None):
        raise ScheduleError("give exactly one of cron and every_s")
    if misfire not in MISFIRE_POLICIES:
        raise ScheduleError(f"misfire must be one of {', '.join(MISFIRE_POLICIES)}")
    if not 0 <= misfire_grace_s <= 86400:
        raise ScheduleError("misfire_grace_s must be between 0 and 86400")
    if every_s is not None and not MIN_EVERY_S <= every_s <= MAX_EVERY_S:
        raise ScheduleError(f"every_s must be between {MIN_EVERY_S:g} and {MAX_EVERY_S:g} seconds")
    zone(timezone)
    if cron is not None:
        expression = normalise_cron(cron)
        try:
            CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ScheduleError(f"cron {cron!r}: {exc}") from None


def normalise_cron(cron: str) -> str:
    text = re.sub(r"\s+", " ", cron.strip())
    return _MACROS.get(text.lower(), text)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r} (use an IANA name such as Europe/Berlin)") from None


def describe(cron: str | None, every_s: float | None, timezone: str) -> str:
    """A schedule's timing in words: `At 02:30 on Monday through Friday (Europe/Berlin)`."""
    if every_s is not None:
        return f"Every {_seconds_words(every_s)}"
    assert cron is not None
    try:
        words = CronSim(normalise_cron(cron), datetime(2000, 1, 1, tzinfo=UTC)).explain()
    except Exception:  # the explainer does not cover every expression it parses
        words = f"cron {cron}"
    return f"{words} ({timezone})"


def _seconds_words(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n} {unit}s"
    return "second" if seconds == 1 else f"{seconds:g} seconds"


@dataclass(frozen=True, slots=True)
class Timing:
    """Tick arithmetic of one schedule, in integer milliseconds since the epoch."""

    cron: str | None
    every_s: float | None
    timezone: str = "UTC"

    def next_after(self, t_ms: int, anchor_ms: int) -> int:
        """The first tick strictly after `t_ms`."""
        if self.every_s is not None:
            every = int(self.every_s * _MS)
            if t_ms < anchor_ms:
                return anchor_ms
            return anchor_ms + ((t_ms - anchor_ms) // every + 1) * every
        start = datetime.fromtimestamp(t_ms / _MS, zone(self.timezone))
        return _ms(next(CronSim(normalise_cron(self.cron or ""), start)))

    def latest_at_or_before(self, t_ms: int, anchor_ms: int) -> int | None:
        """The last tick at or before `t_ms` (None if there is none since the anchor)."""
        if self.every_s is not None:
            every = int(self.every_s * _MS)
            if t_ms < anchor_ms:
                return None
            return anchor_ms + ((t_ms - anchor_ms) // every) * every
        # One microsecond later, because cronsim's reverse iteration excludes its start.
        start = datetime.fromtimestamp(t_ms / _MS, zone(self.timezone)) + timedelta(microseconds=1)
        try:
            return _ms(next(CronSim(normalise_cron(self.cron or ""), start, reverse=True)))
        except StopIteration:
            return None

    def upcoming(self, after_ms: int, anchor_ms: int, count: int) -> list[int]:
        out: list[int] = []
        t = after_ms
        for _ in range(count):
            try:
                t = self.next_after(t, anchor_ms)
            except StopIteration:
                break
            out.append(t)
        return out

    def count_between(self, first_ms: int, last_ms: int, anchor_ms: int) -> int:
        """Ticks in [first_ms, last_ms] (both ticks), counted up to MAX_MISSED_COUNTED."""
        if last_ms < first_ms:
            return 0
        if self.every_s is not None:
            return min(MAX_MISSED_COUNTED, (last_ms - first_ms) // int(self.every_s * _MS) + 1)
        n, t = 1, first_ms
        while n < MAX_MISSED_COUNTED:
            t = self.next_after(t, anchor_ms)
            if t > last_ms:
                break
            n += 1
        return n


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * _MS)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the ticker does with a due schedule: enqueue `fire` (a tick time) or nothing, then
    move the schedule's next run to `next_run`; `missed` ticks were not enqueued on time."""

    fire: int | None
    next_run: int
    missed: int = 0
    note: str | None = None


def decide(
    timing: Timing, due_ms: int, now_ms: int, anchor_ms: int, misfire: str, grace_s: float
) -> Decision:
    """The ticker's decision for a schedule whose next run `due_ms` is at or before `now_ms`."""
    if now_ms - due_ms <= grace_s * _MS:
        return Decision(fire=due_ms, next_run=timing.next_after(due_ms, anchor_ms))
    # Every tick from due_ms up to now was missed by more than the grace, except maybe the
    # latest ones: those still within the grace are on time and run normally afterwards.
    cutoff = now_ms - int(grace_s * _MS) - 1
    last_missed = timing.latest_at_or_before(cutoff, anchor_ms) or due_ms
    missed = timing.count_between(due_ms, last_missed, anchor_ms)
    more = "at least " if missed >= MAX_MISSED_COUNTED else ""
    plural = "tick" if missed == 1 else "ticks"
    next_run = timing.next_after(last_missed, anchor_ms)
    if misfire == "skip":
        note = f"skipped {more}{missed} {plural} missed while no scheduler ran (misfire policy skip)"
        return Decision(fire=None, next_run=next_run, missed=missed, note=note)
    note = f"ran once for {more}{missed} {plural} missed while no scheduler ran (misfire policy run_once)"
    return Decision(fire=last_missed, next_run=next_run, missed=missed, note=note)


def tick_idempotency_key(schedule_id: str, tick_ms: int) -> str:
    """One task per (schedule, tick): a leader that dies after enqueueing a tick and its
    successor enqueue it once between them."""
    return f"schedule:{schedule_id}:{tick_ms}"


def definition_from_schedule(task_name: str, schedule: Schedule | str, index: int = 0) -> ScheduleDefinition:
    """The stored definition of a schedule declared in code on task `task_name`."""
    if isinstance(schedule, str):
        schedule = Schedule(cron=schedule)
    default_id = task_name if index == 0 else f"{task_name}.{index}"
    return ScheduleDefinition(
        id=schedule.id or default_id,
        task=task_name,
        cron=schedule.cron,
        every_s=schedule.every_s,
        timezone=schedule.timezone,
        args=list(schedule.args),
        kwargs=dict(schedule.kwargs),
        queue=schedule.queue,
        priority=schedule.priority,
        misfire=schedule.misfire,
        misfire_grace_s=schedule.misfire_grace_s,
        source="code",
    ).validate()
