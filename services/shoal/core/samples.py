"""One flat sample of the system for the charts: counts by state, throughput, queue depths,
worker slots, desired replicas. The dashboard makes one per refresh from what the API answers;
the scheduler leader makes one every HISTORY_EVERY_S and keeps the last HISTORY_KEPT in Redis,
so that a tab opened now starts with the last hour drawn instead of an empty chart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shoal.core.states import TaskState

STATE_ORDER: tuple[str, ...] = tuple(s.value for s in TaskState)
HISTORY_EVERY_S = 10.0
HISTORY_KEPT = 360  # an hour at HISTORY_EVERY_S


def finished_totals(counts: Mapping[str, int]) -> tuple[int, int]:
    """(succeeded, failed for good) from counts by state."""
    failed = counts.get("failed", 0) + counts.get("upstream_failed", 0)
    return counts.get("succeeded", 0), failed


def server_throughput(stats: Mapping[str, Any]) -> tuple[float, float] | None:
    """(succeeded/s, failed/s) over the last minute, from the API's own throughput figures."""
    throughput = stats.get("throughput")
    if not isinstance(throughput, Mapping):
        return None
    done, failed = throughput.get("per_s_1m"), throughput.get("failed_per_s_1m")
    if isinstance(done, int | float) and isinstance(failed, int | float):
        return max(float(done) - float(failed), 0.0), float(failed)
    return None


def flat_sample(
    at: float,
    stats: Mapping[str, Any] | None,
    queues: Sequence[Mapping[str, Any]] | None,
    workers: Sequence[Mapping[str, Any]] | None,
    desired: int | None,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The sample of one look at the system (a part is None when it could not be read).

    Rates come from the change in finished counts since `previous` (never negative: retention
    trims old tasks, a retry moves a task out of `failed`); without one, the API's last-minute
    average.
    """
    sample: dict[str, Any] = {"ts": at}
    if stats is not None:
        counts = stats.get("counts", {}) or {}
        for state in STATE_ORDER:
            sample[f"state:{state}"] = int(counts.get(state, 0))
        ok_total, bad_total = finished_totals(counts)
        sample["ok_total"], sample["failed_total"] = ok_total, bad_total
        if previous is not None and "ok_total" in previous:
            elapsed = max(at - previous["ts"], 1e-6)
            rates: tuple[float, float] | None = (
                max(ok_total - previous["ok_total"], 0) / elapsed,
                max(bad_total - previous["failed_total"], 0) / elapsed,
            )
        else:
            rates = server_throughput(stats)
        if rates is not None:
            sample["ok_per_s"], sample["failed_per_s"] = rates
            done = rates[0] + rates[1]
            sample["failure_rate"] = rates[1] / done if done > 0 else 0.0
        for part in ("queue_wait_ms", "run_time_ms"):
            for pct, value in (stats.get(part) or {}).items():
                if isinstance(value, int | float):
                    sample[f"{part}:{pct}"] = float(value)
    if queues is not None:
        for queue in queues:
            name = queue.get("name", "?")
            sample[f"ready:{name}"] = int(queue.get("ready", 0))
            sample[f"scheduled:{name}"] = int(queue.get("scheduled", 0))
            sample[f"running:{name}"] = int(queue.get("running", 0))
            for priority, n in (queue.get("by_priority") or {}).items():
                sample[f"prio:{name}:{priority}"] = int(n)
    if workers is not None:
        live = [w for w in workers if w.get("state") in ("active", "draining")]
        sample["workers"] = len(live)
        sample["slots"] = sum(int(w.get("concurrency", 0)) for w in live)
        sample["busy"] = sum(int(w.get("running", 0)) for w in live)
    if desired is not None:
        sample["desired"] = desired
    return sample
