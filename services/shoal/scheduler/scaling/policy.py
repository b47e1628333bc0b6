"""The scaling policy: a pure function from the load on the queues to a desired worker count.

No I/O and no clock: the time is an argument and the stabilisation state travels in and out
with each call (`ScalingInput.recent` -> `ScalingDecision.recent`), so every case can be tested
on its own and replayed.

How the count is chosen (the Kubernetes HPA's behaviour, applied to queue depth):

- need: the slots the load occupies now or soon, divided by the slots of one worker.
  Ready (and soon-due) tasks each need a slot; tasks in flight need
  `max(running, floor(arrival_rate * mean_run_time))` slots. Little's law says a steady stream keeps
  `arrival_rate * mean_run_time` tasks busy, and that is the same work `running` already counts
  once the pool keeps up, so the larger of the two is taken instead of their sum (the sum would
  keep twice the workers a steady load needs).
- scale up at once to the need, at most `max_step_up` workers per decision;
- scale down only to the highest need seen during the last `scale_down_window_s`, at most
  `max_step_down` workers per decision, so a load that dips for a moment does not cost a
  worker that is needed again a moment later;
- never above `max_replicas` or below `min_replicas`; with `min_replicas = 0` the pool may go
  to zero and any ready work starts one worker at once;
- a replica count someone else set (`kubectl scale`) is kept for `manual_hold_s`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["up", "down", "hold"]

# A float product such as 79.99999999 tasks in flight must count as the 80 it stands for.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The worker count the load needed at one moment (after min/max), kept for the window."""

    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class ScalingInput:
    """What the policy sees: the load, the pool, its limits and the state of earlier decisions."""

    ready_by_queue: Mapping[str, int]
    """Tasks waiting in each queue the workers serve."""
    running: int
    """Tasks running on the workers now."""
    current: int
    """Worker replicas now (what the backend is set to)."""
    concurrency: int
    """Task slots of one worker."""
    min_replicas: int = 0
    max_replicas: int = 10
    arrival_rate_per_s: float = 0.0
    """Tasks arriving per second, recently."""
    mean_run_time_s: float = 0.0
    """Mean run time of a task, recently."""
    scheduled_due_soon: int = 0
    """Delayed or retrying tasks that become ready before the next decision."""
    max_step_up: int = 4
    max_step_down: int = 1
    scale_down_window_s: float = 60.0
    recent: tuple[Recommendation, ...] = ()
    """The `recent` of the previous decision; empty on the first call."""
    manual_change_at: float | None = None
    """When the replica count was last changed outside Shoal, if ever."""
    manual_hold_s: float = 300.0

    def __post_init__(self) -> None:
        counts = {
            "running": self.running,
            "current": self.current,
            "min_replicas": self.min_replicas,
            "scheduled_due_soon": self.scheduled_due_soon,
            **{f"ready_by_queue[{name!r}]": n for name, n in self.ready_by_queue.items()},
        }
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, value in {
            "concurrency": self.concurrency,
            "max_replicas": self.max_replicas,
            "max_step_up": self.max_step_up,
            "max_step_down": self.max_step_down,
        }.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, number in {
            "arrival_rate_per_s": self.arrival_rate_per_s,
            "mean_run_time_s": self.mean_run_time_s,
            "scale_down_window_s": self.scale_down_window_s,
            "manual_hold_s": self.manual_hold_s,
        }.items():
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {number}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """What to set the pool to, and why in plain words."""

    desired: int
    reason: str
    direction: Direction
    current: int
    needed: int
    """Workers the load needs, before limits, window and steps."""
    at: float
    recent: tuple[Recommendation, ...] = field(default=(), repr=False)
    """Stabilisation state: pass it as `ScalingInput.recent` to the next decision."""
    manual_hold: bool = False
    """True while a replica count set outside Shoal is being respected."""

    def to_dict(self) -> dict[str, Any]:
        """The decision as recorded in the scaling history and published as an event."""
        return {
            "ts": self.at,
            "current": self.current,
            "desired": self.desired,
            "needed": self.needed,
            "direction": self.direction,
            "reason": self.reason,
            "manual_hold": self.manual_hold,
        }


def decide(inp: ScalingInput, now: float) -> ScalingDecision:
    """The desired replica count for `inp` at time `now` (seconds, any monotonic origin)."""
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite number, got {now}")
    ready = sum(inp.ready_by_queue.values())
    demand_text, slots = _demand(inp, ready)
    needed = -(-slots // inp.concurrency)  # ceiling division, exact on integers
    bounded = min(max(needed, inp.min_replicas), inp.max_replicas)
    recent = _remember(inp.recent, Recommendation(now, bounded), inp, now)
    window_max = max(r.replicas for r in recent)

    reason = f"{demand_text} need {_workers(needed)} of {inp.concurrency} slots"
    if needed > inp.max_replicas:
        reason += f"; capped at max {inp.max_replicas}"
    elif needed < inp.min_replicas:
        reason += f"; kept at min {inp.min_replicas}"

    if inp.manual_change_at is not None and now < inp.manual_change_at + inp.manual_hold_s:
        left = inp.manual_change_at + inp.manual_hold_s - now
        reason += (
            f"; keeping {inp.current} set outside Shoal {now - inp.manual_change_at:.0f}s ago"
            f" for {left:.0f}s more"
        )
        return ScalingDecision(inp.current, reason, "hold", inp.current, needed, now, recent, True)

    # Activation from zero needs no rule of its own: any ready task makes `bounded` >= 1
    # (max_replicas >= 1) and scaling up is never delayed.
    desired, step_text = _step(inp, bounded, window_max)
    reason += step_text
    direction: Direction = "up" if desired > inp.current else "down" if desired < inp.current else "hold"
    return ScalingDecision(desired, reason, direction, inp.current, needed, now, recent)


def _demand(inp: ScalingInput, ready: int) -> tuple[str, int]:
    """The slots the load occupies, and that load in words."""
    # Whole tasks only: a trickle that keeps less than one task busy on average must not pin
    # a worker forever; when such a task arrives, it is ready work and activates one at once.
    in_flight = math.floor(inp.arrival_rate_per_s * inp.mean_run_time_s + _EPSILON)
    parts = [f"{ready} ready"]
    if inp.scheduled_due_soon:
        parts.append(f"{inp.scheduled_due_soon} due soon")
    if in_flight > inp.running:
        rate, run_s = inp.arrival_rate_per_s, inp.mean_run_time_s
        parts.append(
            f"~{in_flight} in flight ({rate:.3g}/s x {run_s:.3g}s run time, {inp.running} running now)"
        )
        busy = in_flight
    else:
        parts.append(f"{inp.running} running")
        busy = inp.running
    return " + ".join(parts), inp.scheduled_due_soon + ready + busy


def _remember(
    previous: tuple[Recommendation, ...], latest: Recommendation, inp: ScalingInput, now: float
) -> tuple[Recommendation, ...]:
    """The recommendations still inside the window, ending with `latest`.

    Only entries larger than every later one can ever be the window's maximum, so the rest
    are dropped: the state stays at most max_replicas + 1 entries whatever the interval.
    With no history (first decision, new leader) the current count counts as recommended now,
    so a restarted autoscaler waits a full window before it scales in.
    """
    if not previous:
        previous = (Recommendation(now, min(inp.current, inp.max_replicas)),)
    cutoff = now - inp.scale_down_window_s
    kept = [r for r in previous if r.at > cutoff and r.replicas > latest.replicas]
    return (*kept, latest)


def _step(inp: ScalingInput, bounded: int, window_max: int) -> tuple[int, str]:
    """Apply the window, the step bounds and the hard limits; returns the count and its wording."""
    current = inp.current
    if bounded > current:
        desired = min(bounded, current + inp.max_step_up)
        text = f"; scaling up {current} -> {desired}"
        if desired < bounded:
            text += f" (at most +{inp.max_step_up} per decision)"
        if current == 0:
            text += ", activating from zero"
    elif bounded < current:
        window = f"{_workers(window_max)} needed within the last {inp.scale_down_window_s:g}s"
        target = min(current, window_max)
        desired = max(target, current - inp.max_step_down)
        if desired == current:
            text = f"; holding {current}: {window}"
        else:
            text = f"; scaling down {current} -> {desired}"
            if target > bounded:
                text += f" ({window})"
            elif desired > target:
                text += f" (at most -{inp.max_step_down} per decision)"
    else:
        desired, text = current, f"; at {current}"
    # The limits are hard: a pool outside them (limits changed, or a manual change whose hold
    # ended) is brought inside at once, whatever the steps and the window say.
    if desired > inp.max_replicas:
        return inp.max_replicas, f"; {current} is above max {inp.max_replicas}: scaling down to it"
    if desired < inp.min_replicas:
        return inp.min_replicas, f"; {current} is below min {inp.min_replicas}: scaling up to it"
    return desired, text


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"
