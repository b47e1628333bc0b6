"""Short time series kept in the browser session: one flat sample per refresh, charts read them back.

The API answers "how are things now"; the dashboard remembers the minutes since the tab
opened itself, seeded with the scheduler's own last hour (GET /api/v1/stats/history, one sample
every 10 s, the same for every viewer), so every page can plot throughput, failure rate, queue
depth and replicas over time from the first second. Pure functions over plain containers; the
Streamlit glue lives in `live.py`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from shoal.core.samples import flat_sample

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


def desired_replicas(scaling: Mapping[str, Any] | None) -> int | None:
    """The autoscaler's latest desired replica count, when there is one."""
    desired = (scaling or {}).get("desired")
    return desired if isinstance(desired, int) else None


def record(samples: deque[dict[str, Any]], snap: Snapshot) -> dict[str, Any]:
    """Append one flat sample made from `snap` (`shoal.core.samples.flat_sample`) and return it."""
    previous = samples[-1] if samples else None
    sample = flat_sample(
        snap.at, snap.stats, snap.queues, snap.workers, desired_replicas(snap.scaling), previous
    )
    samples.append(sample)
    return sample


def seed(samples: deque[dict[str, Any]], history: Iterable[dict[str, Any]]) -> None:
    """Start an empty series with the scheduler's own history (oldest first), so a new tab
    draws the last hour at once; the session's samples follow on."""
    if not samples:
        samples.extend(history)


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
