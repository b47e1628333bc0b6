"""Timing bounds that hold on a loaded machine: derived from what the run itself measured.

A chaos test bounds how late something happened (an attempt's end past its timeout, a dead
worker's tasks running again). On a busy machine (load 2.5 on 2 cores is normal in CI) every
such moment comes later, by however much the processes waited for a CPU. `recording_lateness`
measures that delay in the same run, from the tasks whose true length is known, so a bound is
"what the mechanism promises + what this run showed the machine adds", not a guess.
"""

from __future__ import annotations

from collections.abc import Mapping

from chaos.invariants import Stored
from shoal.core import jsonutil


def recording_lateness(tasks: Mapping[str, Stored]) -> float:
    """The longest this run took, past a task's true end, to record that end (seconds, >= 0).

    For every `sleep` task that succeeded at its first try, the recorded attempt length
    (finished - started, both stamped by Redis) minus the seconds it slept: the worker's event
    loop waking late from the sleep, the completion flush and the complete script all add to
    it, exactly as they add to the recorded end of an attempt stopped by its timeout.
    """
    late = [0.0]
    for task in tasks.values():
        fields = task.fields
        if fields.get("name") != "sleep" or task.state != "succeeded" or task.attempts != 1:
            continue
        seconds = float(jsonutil.loads(fields.get("kwargs") or "{}").get("seconds", 0))
        ran = (int(fields["finished_at"]) - int(fields["started_at"])) / 1000
        late.append(ran - seconds)
    return max(late)


def longest_queue_wait(tasks: Mapping[str, Stored]) -> float:
    """The longest any first attempt of this run waited in the queue for a free slot (seconds):
    from when it became ready (enqueued_at) to when a worker claimed it (started_at)."""
    waits = [0.0]
    for task in tasks.values():
        fields = task.fields
        if task.attempts == 1 and fields.get("enqueued_at") and fields.get("started_at"):
            waits.append((int(fields["started_at"]) - int(fields["enqueued_at"])) / 1000)
    return max(waits)
