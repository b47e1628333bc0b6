"""Overview: how much is waiting, running, finishing and failing, right now and over the last minutes."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pandas as pd
import streamlit as st

from shoal.dashboard import charts, live
from shoal.dashboard import format as fmt
from shoal.dashboard.series import column, frame

st.title("Overview")
st.caption(
    "Counts and throughput are of tasks (a task retried three times counts once); latency is of "
    "attempts. Refreshed live from the API."
)


def _state_metric(
    container: Any, state: str, counts: dict[str, int], samples: Iterable[dict[str, Any]]
) -> None:
    container.metric(
        fmt.state_markdown(state),
        fmt.count(counts.get(state, 0)),
        border=True,
        chart_data=column(samples, f"state:{state}")[-60:] or None,
        chart_type="area",
    )


def _latency_frame(samples: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """p90 of queue wait and of run time over the session, in seconds."""
    parts = []
    for key, label in (("queue_wait_ms:p90", "queue wait p90"), ("run_time_ms:p90", "run time p90")):
        part = frame(samples, key)
        part["series"] = label
        part["value"] = part["value"] / 1000.0
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@st.fragment(run_every=live.interval_s())
def overview() -> None:
    snap = live.snapshot()
    if not live.show_problems(snap, ("stats",)):
        return
    stats = snap.stats or {}
    counts = stats.get("counts", {})
    samples = live.samples()
    live_workers = [w for w in snap.workers or [] if w.get("state") in ("active", "draining")]
    throughput = stats.get("throughput") or {}

    cols = st.columns(6)
    for container, state in zip(cols[:4], ("queued", "running", "succeeded", "failed"), strict=True):
        _state_metric(container, state, counts, samples)
    rates = [s["ok_per_s"] + s["failed_per_s"] for s in samples if "ok_per_s" in s]
    cols[4].metric(
        "Finished / s",
        fmt.rate(rates[-1] if rates else throughput.get("per_s_1m")),
        border=True,
        chart_data=rates[-60:] or None,
        help="Tasks that finished (succeeded or failed for good) per second since the last refresh.",
    )
    busy = sum(int(w.get("running", 0)) for w in live_workers)
    slots = sum(int(w.get("concurrency", 0)) for w in live_workers)
    cols[5].metric(
        "Workers up",
        len(live_workers) if snap.workers is not None else stats.get("workers", 0),
        border=True,
        chart_data=column(samples, "workers")[-60:] or None,
        help="Workers that are active or draining.",
    )
    others = [f"{fmt.state_markdown(s)} **{fmt.count(counts.get(s, 0))}**" for s in fmt.STATE_ORDER[:2]]
    others += [f"{fmt.state_markdown(s)} **{fmt.count(counts.get(s, 0))}**" for s in fmt.STATE_ORDER[6:]]
    if slots:
        others.append(f":blue[:material/memory: busy slots] **{busy} of {slots}**")
    st.markdown(" · ".join(others))

    left, right = st.columns([3, 2])
    with left.container(border=True):
        st.markdown("**Tasks finished per second** · by outcome, 10-second buckets")
        tp = charts.throughput_frame(stats, now=time.time())
        if tp.empty or tp["per_s"].sum() == 0:
            st.caption("Nothing has finished in the last 5 minutes.")
        st.altair_chart(charts.throughput_chart(tp), width="stretch")
    with right.container(border=True):
        st.markdown("**Failure rate** · share of finished tasks that failed for good")
        st.altair_chart(charts.failure_rate_chart(charts.failure_rate_frame(tp)), width="stretch")

    left, right = st.columns([3, 2])
    with left.container(border=True):
        st.markdown("**Work in the system** · tasks not yet finished, by state")
        st.altair_chart(charts.states_chart(frame(samples, "state:")), width="stretch")
    with right.container(border=True):
        st.markdown("**Latency** · recent finished attempts")
        wait, run = stats.get("queue_wait_ms") or {}, stats.get("run_time_ms") or {}
        st.dataframe(
            {
                "": ["queue wait", "run time"],
                "p50": [fmt.millis(wait.get("p50")), fmt.millis(run.get("p50"))],
                "p90": [fmt.millis(wait.get("p90")), fmt.millis(run.get("p90"))],
                "p99": [fmt.millis(wait.get("p99")), fmt.millis(run.get("p99"))],
            },
            hide_index=True,
            width="stretch",
        )
        latency = _latency_frame(samples)
        if not latency.empty:
            st.altair_chart(charts.lines(latency, "seconds", ",.2f").properties(height=190), width="stretch")
    st.caption(f"Updated {fmt.clock(snap.at)}")


overview()
