"""Short time series kept in the browser session: one flat sample per refresh, charts read them back.

The API answers "how are things now"; the dashboard remembers the last minutes itself so
every page can plot throughput, failure rate, queue depth and replicas over time without
the server storing history for each viewer. Pure functions over plain containers; the
Streamlit glue lives in `live.py`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from shoal.dashboard.format import STATE_ORDER

MAX_SAMPLES = 450  # 15 minutes at the default 2 s refresh


@dataclass(slots=True)
class Snapshot:
    """One look at the system through the API; a part is None when its call failed."""

    at: float
    stats: dict[str, Any] | None = None
    queues: list[dict[str, Any]] | None = None
    workers: list[dict[str, Any]] | None = None
    scaling: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def new_samples() -> deque[dict[str, Any]]:
    return deque(maxlen=MAX_SAMPLES)


def is_due(samples: deque[dict[str, Any]], now: float, interval_s: float) -> bool:
    """Whether a new sample is worth taking: pages share one series, so a quick page switch
    does not add a point a fraction of a second after the last one."""
    return not samples or now - samples[-1]["ts"] >= interval_s * 0.75


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


def desired_replicas(scaling: Mapping[str, Any] | None) -> int | None:
    """The autoscaler's latest desired replica count, when there is one."""
    desired = (scaling or {}).get("desired")
    return desired if isinstance(desired, int) else None


def record(samples: deque[dict[str, Any]], snap: Snapshot) -> dict[str, Any]:
    """Append one flat sample made from `snap` and return it.

    Rates come from the change in finished counts since the previous sample (never negative:
    retention trims old tasks, a retry moves a task out of `failed`); the first sample takes
    the API's last-minute average.
    """
    sample: dict[str, Any] = {"ts": snap.at}
    previous = samples[-1] if samples else None
    if snap.stats is not None:
        counts = snap.stats.get("counts", {}) or {}
        for state in STATE_ORDER:
            sample[f"state:{state}"] = int(counts.get(state, 0))
        ok_total, bad_total = finished_totals(counts)
        sample["ok_total"], sample["failed_total"] = ok_total, bad_total
        if previous is not None and "ok_total" in previous:
            elapsed = max(snap.at - previous["ts"], 1e-6)
            rates: tuple[float, float] | None = (
                max(ok_total - previous["ok_total"], 0) / elapsed,
                max(bad_total - previous["failed_total"], 0) / elapsed,
            )
        else:
            rates = server_throughput(snap.stats)
        if rates is not None:
            sample["ok_per_s"], sample["failed_per_s"] = rates
            done = rates[0] + rates[1]
            sample["failure_rate"] = rates[1] / done if done > 0 else 0.0
        for part in ("queue_wait_ms", "run_time_ms"):
            for pct, value in (snap.stats.get(part) or {}).items():
                if isinstance(value, int | float):
                    sample[f"{part}:{pct}"] = float(value)
    if snap.queues is not None:
        for queue in snap.queues:
            name = queue.get("name", "?")
            sample[f"ready:{name}"] = int(queue.get("ready", 0))
            sample[f"scheduled:{name}"] = int(queue.get("scheduled", 0))
            sample[f"running:{name}"] = int(queue.get("running", 0))
            for priority, n in (queue.get("by_priority") or {}).items():
                sample[f"prio:{name}:{priority}"] = int(n)
    if snap.workers is not None:
        live = [w for w in snap.workers if w.get("state") in ("active", "draining")]
        sample["workers"] = len(live)
        sample["slots"] = sum(int(w.get("concurrency", 0)) for w in live)
        sample["busy"] = sum(int(w.get("running", 0)) for w in live)
    desired = desired_replicas(snap.scaling)
    if desired is not None:
        sample["desired"] = desired
    samples.append(sample)
    return sample


def frame(samples: Iterable[dict[str, Any]], prefix: str) -> pd.DataFrame:
    """Long-form frame (time, series, value) of every column starting with `prefix`.

    A series missing from a sample (a queue not yet created) reads as 0, so lines do not break.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    listed = list(samples)
    for sample in listed:
        seen.update(k for k in sample if k.startswith(prefix))
    for sample in listed:
        time = pd.Timestamp.fromtimestamp(sample["ts"])  # the dashboard's local time, as `clock()`
        for key in sorted(seen):
            rows.append({"time": time, "series": key[len(prefix) :], "value": sample.get(key, 0)})
    return pd.DataFrame(rows, columns=["time", "series", "value"])


def column(samples: Iterable[dict[str, Any]], key: str) -> list[float]:
    """The values of one column, skipping samples that lack it (for st.metric sparklines)."""
    return [s[key] for s in samples if key in s]
