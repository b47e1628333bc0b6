"""One INFO line per transition a worker sees, like Celery's: started, succeeded in 12 ms, failed
with the error, retrying in 4 s. Each carries the task's id, name and attempt (and, bound by the
runtime, the worker's id) as fields, so JSON logs can be filtered by any of them.

A claimed task starts at once (the claim takes only as many tasks as there are free slots), so
"received" and "started" are one line, saying how long the task waited in its queue.
"""

from __future__ import annotations

import logging

from shoal.core.models import ClaimedTask, Outcome

log = logging.getLogger("shoal.tasks")


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms" if ms < 10_000 else f"{seconds:.1f} s"


def _fields(claimed: ClaimedTask, **more: object) -> dict[str, object]:
    return {"task_id": claimed.id, "task": claimed.name, "attempt": claimed.attempt, **more}


def started(claimed: ClaimedTask, waited_s: float) -> None:
    if log.isEnabledFor(logging.INFO):  # the hot path pays for nothing when INFO is off
        log.info(
            "task %s[%s] started: attempt %d, queue %s, waited %s",
            claimed.name, claimed.id, claimed.attempt, claimed.queue, _ms(waited_s),
            extra=_fields(claimed, queue=claimed.queue, waited_ms=round(waited_s * 1000, 3)),
        )  # fmt: skip


def succeeded(claimed: ClaimedTask, took_s: float) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "task %s[%s] succeeded in %s",
            claimed.name, claimed.id, _ms(took_s),
            extra=_fields(claimed, run_ms=round(took_s * 1000, 3)),
        )  # fmt: skip


def failed(claimed: ClaimedTask, outcome: Outcome, took_s: float, asked_retry: bool) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    fields = _fields(claimed, run_ms=round(took_s * 1000, 3), error=outcome.error)
    if asked_retry:
        when = f"in {outcome.retry_delay_s:g} s" if outcome.retry_delay_s is not None else "after a backoff"
        log.info("task %s[%s] retrying %s: %s", claimed.name, claimed.id, when, outcome.error, extra=fields)
        return
    log.info(
        "task %s[%s] failed in %s: %s%s", claimed.name, claimed.id, _ms(took_s), outcome.error,
        _then(claimed, outcome), extra=fields,
    )  # fmt: skip


def _then(claimed: ClaimedTask, outcome: Outcome) -> str:
    """What follows a failed attempt, as far as the worker knows it."""
    if not outcome.retry:
        return " (no retry: the task said so)"
    if not claimed.attempt_limit:
        return ""
    of = f"attempt {claimed.attempt} of {claimed.attempt_limit}"
    if claimed.attempt >= claimed.attempt_limit:
        return f" (no retries left: {of})"
    if outcome.retry_delay_s is None:
        return f"; retrying after a backoff ({of})"
    return f"; retrying in {outcome.retry_delay_s:.3g} s ({of})"
