"""Why is this task not running? A plain-words answer computed from what the scheduler knows.

`explain_task` is a pure function: the API route gathers the inputs (the task, the states of
its dependencies, how many ready tasks are ahead of it, the live workers, the autoscaler's
state) and every client shows the same answer. It never touches Redis itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.core.flow_store import Hold
from shoal.core.models import Task, WorkerInfo
from shoal.core.schedules import ScheduleState
from shoal.core.states import DEAD, TaskState
from shoal.core.timefmt import humanize_seconds

# How many dependency ids a sentence names before it says "and N more".
_NAMED_IN_SENTENCE = 4


@dataclass(frozen=True, slots=True)
class ScalingView:
    """What the explanation needs to know about the autoscaler."""

    backend: str = "none"  # none | local | kubernetes
    current: int | None = None
    desired: int | None = None
    reason: str | None = None  # the last decision's reason, shown as given


@dataclass(frozen=True, slots=True)
class FlowView:
    """What flow control holds a queued task back with (docs/flow-control.md)."""

    paused_since: float | None = None  # its queue is paused (epoch seconds)
    holds: tuple[Hold, ...] = ()  # the limits at which its queue, task name or flow key stand


@dataclass(frozen=True, slots=True)
class Explanation:
    """The answer: `code` is stable for programs, `reason` is the sentence for people."""

    state: str
    code: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain_task(
    task: Task,
    *,
    now: float,
    dependencies: Mapping[str, TaskState | None] | None = None,
    ahead: int | None = None,
    workers: Sequence[WorkerInfo] | None = None,
    scaling: ScalingView | None = None,
    flow: FlowView | None = None,
) -> Explanation:
    """Say in plain words where `task` stands and what it is waiting for.

    dependencies: state of each id in `task.depends_on` (None: the task no longer exists);
        omitted, the explanation falls back on `task.deps_left`.
    ahead: ready tasks in the task's queue that will be claimed before it (its rank in the
        ready set); None when unknown.
    workers: every registered worker with its state; None when unknown (no worker checks).
    scaling: the autoscaler's state; None when unknown or not configured.
    flow: what flow control holds the task back with; None when nothing does.
    """
    state = TaskState(task.state)
    if state is TaskState.RUNNING:
        return _running(task, now, workers)
    if state in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED):
        return _finished(task, state, now)
    if state is TaskState.UPSTREAM_FAILED:
        return _upstream_failed(task, dependencies)
    if state is TaskState.PENDING:
        return _pending(task, dependencies)
    if state is TaskState.SCHEDULED:
        return _scheduled(task, now)
    if flow is not None and flow.paused_since is not None:
        return _paused(task, now, flow.paused_since)
    if flow is not None and flow.holds:
        return _held(task, now, flow.holds)
    return _queued(task, ahead, workers, scaling)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _attempts_allowed(task: Task) -> int:
    # After a manual retry the budget is fresh: attempt 5 of 8, never "attempt 5 of 4".
    return task.attempt_limit or task.max_retries + 1


def _running(task: Task, now: float, workers: Sequence[WorkerInfo] | None) -> Explanation:
    details: dict[str, Any] = {
        "worker_id": task.worker_id,
        "attempt": task.attempts,
        "attempts_allowed": _attempts_allowed(task),
        "started_at": task.started_at,
        "timeout_s": task.timeout_s,
    }
    since = f" for {humanize_seconds(now - task.started_at)}" if task.started_at else ""
    where = f"on worker {task.worker_id}" if task.worker_id else "on a worker"
    attempt = f"attempt {task.attempts} of {_attempts_allowed(task)}"
    if workers is not None and task.worker_id:
        live = {w.id for w in workers if w.state in ("active", "draining")}
        if task.worker_id not in live:
            return Explanation(
                state=task.state,
                code="worker_lost",
                reason=(
                    f"It was running {where}{since} ({attempt}), but that worker is no longer live; "
                    "it goes back to the queue when its lease expires (at once if the pod watcher saw "
                    "the pod go)."
                ),
                details=details,
            )
    return Explanation(
        state=task.state,
        code="running",
        reason=f"Running {where}{since} ({attempt}, time limit {humanize_seconds(task.timeout_s)}).",
        details=details,
    )


def _finished(task: Task, state: TaskState, now: float) -> Explanation:
    ago = f" {humanize_seconds(now - task.finished_at)} ago" if task.finished_at else ""
    tries = _plural(max(task.attempts, 1), "attempt")
    details: dict[str, Any] = {"finished_at": task.finished_at, "attempts": task.attempts}
    if state is TaskState.SUCCEEDED:
        reason = f"It finished successfully{ago} after {tries}."
    elif state is TaskState.FAILED:
        error = f": {task.error}" if task.error else ""
        reason = f"It failed for good{ago} after {tries}{error}. Retry it to run it again."
        details["error"] = task.error
    else:
        reason = f"It was cancelled{ago}; it will not run."
    return Explanation(state=task.state, code=state.value, reason=reason, details=details)


def _dependency_list(task: Task, dependencies: Mapping[str, TaskState | None]) -> list[dict[str, Any]]:
    listed = []
    for dep_id in task.depends_on:
        dep_state = dependencies.get(dep_id)
        listed.append({"id": dep_id, "state": None if dep_state is None else TaskState(dep_state).value})
    return listed


def _name_some(items: list[dict[str, Any]]) -> str:
    shown = [f"{item['id']} ({item['state'] or 'gone'})" for item in items[:_NAMED_IN_SENTENCE]]
    extra = len(items) - len(shown)
    return ", ".join(shown) + (f" and {extra} more" if extra > 0 else "")


def _upstream_failed(task: Task, dependencies: Mapping[str, TaskState | None] | None) -> Explanation:
    details: dict[str, Any] = {}
    reason = "A task it depends on failed for good, so it will never run."
    if dependencies is not None:
        listed = _dependency_list(task, dependencies)
        dead = [d for d in listed if d["state"] is None or TaskState(d["state"]) in DEAD]
        details["dependencies"] = listed
        details["failed_dependencies"] = dead
        if dead:
            # A failed or cancelled one can be retried with its dependents: this task then waits
            # on it again, under its own id. An upstream_failed one has such a task above it.
            roots = [d["id"] for d in dead if d["state"] in (TaskState.FAILED, TaskState.CANCELLED)]
            details["retry_with_dependents"] = roots
            if roots:
                advice = (
                    f"Retry {', '.join(roots[:_NAMED_IN_SENTENCE])} with its dependents "
                    f"(`shoal retry --dependents {roots[0]}`, or Retry with dependents on that task): this "
                    "task then waits on it again and runs when it succeeds."
                )
            else:
                advice = (
                    "Open that dependency to find the task that failed first above it, and retry that one "
                    "with its dependents: this task then waits again and runs when they succeed."
                )
            reason = f"It will never run: its dependency {_name_some(dead)} did not succeed. {advice}"
    return Explanation(state=task.state, code="upstream_failed", reason=reason, details=details)


def _pending(task: Task, dependencies: Mapping[str, TaskState | None] | None) -> Explanation:
    total = len(task.depends_on)
    noun = "dependency" if total == 1 else "dependencies"
    if dependencies is None:
        return Explanation(
            state=task.state,
            code="waiting_on_dependencies",
            reason=f"It is waiting on {task.deps_left} of its {total} {noun} to succeed.",
            details={"deps_left": task.deps_left, "dependencies_total": total},
        )
    listed = _dependency_list(task, dependencies)
    missing = [d for d in listed if d["state"] is None]
    dead = [d for d in listed if d["state"] is not None and TaskState(d["state"]) in DEAD]
    waiting = [d for d in listed if d["state"] is not None and d["state"] != TaskState.SUCCEEDED.value]
    details = {"dependencies": listed, "waiting_on": waiting, "dependencies_total": total}
    if dead:
        return Explanation(
            state=task.state,
            code="dependency_failed",
            reason=(
                f"Its dependency {_name_some(dead)} did not succeed, so it cannot run; "
                "it is about to be marked upstream_failed."
            ),
            details={**details, "failed_dependencies": dead},
        )
    if missing:
        return Explanation(
            state=task.state,
            code="dependency_missing",
            reason=(
                f"Its dependency {_name_some(missing)} no longer exists (past retention?), so it cannot "
                "start. Cancel it and resubmit with dependencies that exist."
            ),
            details={**details, "missing_dependencies": missing},
        )
    return Explanation(
        state=task.state,
        code="waiting_on_dependencies",
        reason=f"It is waiting on {len(waiting)} of its {total} {noun}: {_name_some(waiting)}.",
        details=details,
    )


def _scheduled(task: Task, now: float) -> Explanation:
    due = task.scheduled_for
    retrying = task.attempts > 0
    last_error = task.error or next((a.error for a in reversed(task.history) if a.error), None)
    details: dict[str, Any] = {
        "until": due,
        "attempt": task.attempts,
        "attempts_allowed": _attempts_allowed(task),
    }
    if retrying:
        details["error"] = last_error
    if due is None or due <= now:
        late = f" {humanize_seconds(now - due)} ago" if due is not None else ""
        return Explanation(
            state=task.state,
            code="due",
            reason=(
                f"Its wait ended{late}; the scheduler leader moves it to the queue within a second. "
                "If it stays here, check that a scheduler is running and one holds the leader lock."
            ),
            details=details,
        )
    wait = humanize_seconds(due - now)
    if retrying:
        error = f" ({last_error})" if last_error else ""
        return Explanation(
            state=task.state,
            code="retry_backoff",
            reason=(
                f"Attempt {task.attempts} of {_attempts_allowed(task)} failed{error}; it is waiting out "
                f"the retry backoff for another {wait} before it is queued again."
            ),
            details=details,
        )
    return Explanation(
        state=task.state,
        code="delayed",
        reason=f"It was submitted with a delay; it joins the queue in {wait}.",
        details=details,
    )


def _paused(task: Task, now: float, since: float) -> Explanation:
    return Explanation(
        state=task.state,
        code="queue_paused",
        reason=(
            f"Its queue '{task.queue}' was paused {humanize_seconds(max(0.0, now - since))} ago: nothing is "
            f"claimed from it until it is resumed (POST /api/v1/queues/{task.queue}/resume)."
        ),
        details={"queue": task.queue, "paused_at": since},
    )


_KIND = {"queue": "Queue", "name": "Task name", "key": "Key"}


def _hold_sentence(hold: Hold, now: float) -> str:
    kind, target = hold.scope.split(":", 1)
    what = f"{_KIND[kind]} {target}"
    via = f" (rule {hold.rule_scope})" if hold.rule_scope != hold.scope else ""
    if hold.reason == "concurrency":
        return f"{what} is at its limit: {hold.used} of {hold.limit} running{via}."
    assert hold.until is not None and hold.period_s is not None
    wait = humanize_seconds(max(0.0, hold.until - now))
    return (
        f"{what} is rate limited{via}: {hold.used} starts in the last {humanize_seconds(hold.period_s)} "
        f"(at most {hold.limit}); the next may start in {wait}."
    )


def _held(task: Task, now: float, holds: Sequence[Hold]) -> Explanation:
    first = holds[0]
    sentences = " ".join(_hold_sentence(h, now) for h in holds)
    return Explanation(
        state=task.state,
        code="limit_reached" if first.reason == "concurrency" else "rate_limited",
        reason=f"It is queued and held back by flow control. {sentences} Other work in the queue goes on.",
        details={
            "holds": [
                {
                    "scope": h.scope,
                    "rule": h.rule_scope,
                    "reason": h.reason,
                    "limit": h.limit,
                    "used": h.used,
                    "period_s": h.period_s,
                    "until": h.until,
                }
                for h in holds
            ]
        },
    )


def _scaling_up(scaling: ScalingView | None) -> bool:
    return (
        scaling is not None
        and scaling.backend != "none"
        and scaling.desired is not None
        and scaling.desired > (scaling.current or 0)
    )


def _scaling_note(scaling: ScalingView | None) -> str:
    if not _scaling_up(scaling):
        return ""
    assert scaling is not None
    return f" The autoscaler is adding workers ({scaling.current or 0} → {scaling.desired})."


def _queued(
    task: Task,
    ahead: int | None,
    workers: Sequence[WorkerInfo] | None,
    scaling: ScalingView | None,
) -> Explanation:
    queue = task.queue
    details: dict[str, Any] = {"queue": queue, "priority": task.priority, "ahead": ahead}
    if scaling is not None:
        details["scaling"] = {
            "backend": scaling.backend,
            "current": scaling.current,
            "desired": scaling.desired,
        }
    behind = (
        ""
        if ahead is None
        else " It is next in line."
        if ahead == 0
        else f" {_plural(ahead, 'task')} of its priority or higher {'is' if ahead == 1 else 'are'} "
        f"ahead of it in queue '{queue}'."
    )

    def answer(code: str, reason: str, **extra: Any) -> Explanation:
        return Explanation(state=task.state, code=code, reason=reason, details={**details, **extra})

    if workers is None:
        return answer("queued", f"It is queued on '{queue}' waiting for a free worker slot.{behind}")

    live = [w for w in workers if w.state in ("active", "draining")]
    active = [w for w in live if w.state == "active"]
    if not live:
        if _scaling_up(scaling):
            assert scaling is not None
            return answer(
                "scaling_up",
                f"No worker is up yet: the autoscaler asked for {scaling.desired} "
                f"(now {scaling.current or 0}) and they are starting.{behind}",
            )
        if scaling is not None and scaling.backend != "none" and not scaling.desired:
            return answer(
                "scaled_to_zero",
                "Workers are scaled to zero; the autoscaler starts one at its next decision now that "
                f"work is waiting.{behind}",
            )
        return answer(
            "no_workers",
            f"No worker is running. Start one (`python -m shoal.worker` with SHOAL_QUEUES={queue}) "
            f"or scale the worker Deployment up.{behind}",
        )

    serving = [w for w in active if queue in w.queues]
    if not serving:
        draining = [w.id for w in live if w.state == "draining" and queue in w.queues]
        if draining:
            return answer(
                "workers_draining",
                f"The only {_plural(len(draining), 'worker')} serving queue '{queue}' "
                f"{'is' if len(draining) == 1 else 'are'} draining and take no new tasks."
                f"{_scaling_note(scaling)}{behind}",
                draining_workers=draining,
            )
        served = sorted({q for w in active for q in w.queues})
        return answer(
            "no_worker_for_queue",
            f"No live worker serves queue '{queue}' (they serve: {', '.join(served) or 'nothing'}). "
            f"Start a worker with SHOAL_QUEUES={queue}.{_scaling_note(scaling)}",
            served_queues=served,
        )

    # A worker with no advertised names is one we know nothing about: do not blame it.
    knowing = [w for w in serving if not w.task_names or task.name in w.task_names]
    if not knowing:
        return answer(
            "no_worker_knows_name",
            f"The {_plural(len(serving), 'worker')} serving queue '{queue}' "
            f"{'does' if len(serving) == 1 else 'do'} not know the task '{task.name}'. Start a worker "
            "whose SHOAL_TASK_MODULES registers it.",
            workers_serving_queue=[w.id for w in serving],
        )

    slots = sum(w.concurrency for w in knowing)
    busy = sum(min(w.running, w.concurrency) for w in knowing)
    free = slots - busy
    extra = {"workers_able": [w.id for w in knowing], "free_slots": free, "slots": slots}
    if free <= 0:
        return answer(
            "workers_busy",
            f"All {slots} slots of the {_plural(len(knowing), 'worker')} that can run it are busy."
            f"{behind}{_scaling_note(scaling)}",
            **extra,
        )
    return answer(
        "queued",
        f"It is queued on '{queue}' and {_plural(free, 'worker slot')} "
        f"{'is' if free == 1 else 'are'} free; a worker claims it within moments.{behind}",
        **extra,
    )


def explain_schedule(state: ScheduleState, now: float) -> Explanation:
    """When a schedule runs next, or why it does not."""
    d = state.definition
    details: dict[str, Any] = {"next_run": state.next_run, "missed": state.missed}
    last = ""
    if state.last_fired_at is not None:
        last = f" It last enqueued a task {humanize_seconds(max(0.0, now - state.last_fired_at))} ago."
    if state.paused:
        since = f" {humanize_seconds(max(0.0, now - state.paused_at))} ago" if state.paused_at else ""
        return Explanation(
            state="paused",
            code="paused",
            reason=f"It was paused{since}; it enqueues nothing until it is resumed "
            f"(ticks that pass meanwhile never run).{last}",
            details={**details, "paused_at": state.paused_at},
        )
    if state.next_run is None:
        return Explanation(
            state="active",
            code="finished",
            reason="Its cron expression matches no future time.",
            details=details,
        )
    if state.next_run >= now:
        return Explanation(
            state="active",
            code="waiting",
            reason=f"Its next tick is in {humanize_seconds(state.next_run - now)}.{last}",
            details=details,
        )
    late = now - state.next_run
    policy = "it will be skipped" if d.misfire == "skip" else "one task will run for all the ticks missed"
    return Explanation(
        state="active",
        code="overdue",
        reason=(
            f"Its tick was due {humanize_seconds(late)} ago and no scheduler leader has enqueued it: "
            "check that a scheduler runs and holds the leader lock. Once more than "
            f"{humanize_seconds(d.misfire_grace_s)} late, {policy} (misfire policy {d.misfire})."
        ),
        details=details,
    )
