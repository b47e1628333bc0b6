"""Queues: how deep each queue is, by priority, now and over the last minutes."""

from __future__ import annotations

from typing import Any

import streamlit as st

from shoal.dashboard import api, charts, flow_panels, live
from shoal.dashboard import format as fmt
from shoal.dashboard.series import frame
from shoal.dashboard.untrusted import markdown_text

st.title("Queues")
st.caption(
    "Ready tasks wait in a queue until a worker serving it has a free slot; higher priority goes first."
)


@st.fragment(run_every=live.interval_s())
def queues_page() -> None:
    snap = live.snapshot()
    if not live.show_problems(snap, ("queues",)):
        return
    queues = snap.queues or []
    workers = [w for w in snap.workers or [] if w.get("state") == "active"]
    if not queues:
        st.info("No task has been submitted to any queue yet.", icon=":material/inbox:")
        return

    def total(field: str) -> str:  # from the same answer as the table, so they always agree
        return fmt.count(sum(q.get(field, 0) for q in queues))

    cols = st.columns(4)
    cols[0].metric("Queues", len(queues), border=True)
    cols[1].metric("Ready", total("ready"), border=True, chart_data=_total_ready() or None, chart_type="area")
    cols[2].metric("Scheduled", total("scheduled"), border=True, help="Delayed or in retry backoff.")
    cols[3].metric("Running", total("running"), border=True)

    st.dataframe([_row(q, workers) for q in queues], hide_index=True, width="stretch")
    flow_panels.pause_switches(queues)
    api.show_outcome()
    unserved = [
        q["name"]
        for q in queues
        if q.get("ready") and not any(q["name"] in w.get("queues", []) for w in workers)
    ]
    if unserved and snap.workers is not None:
        st.warning(
            f"No live worker serves {markdown_text(', '.join(repr(n) for n in unserved))}: "
            "their tasks will wait until one "
            "does (start a worker with SHOAL_QUEUES naming them).",
            icon=":material/warning:",
        )

    samples = live.samples()
    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**Ready tasks by queue** · over time")
        st.altair_chart(
            charts.stacked_area(frame(samples, "ready:"), "ready tasks", "queue"), width="stretch"
        )
    with right.container(border=True):
        st.markdown("**Ready tasks by priority** · now")
        if any(q.get("by_priority") for q in queues):
            st.altair_chart(charts.priority_bars(queues), width="stretch")
        else:
            st.caption("Every queue is empty.")
    with st.container(border=True):
        names = [q["name"] for q in queues]
        chosen = st.segmented_control("Queue", names, default=names[0], key="q_focus", required=True)
        st.markdown(f"**Depth of '{markdown_text(chosen)}' by priority** · over time")
        by_priority = frame(samples, f"prio:{chosen}:")
        by_priority["series"] = "priority " + by_priority["series"].astype(str)
        st.altair_chart(charts.stacked_area(by_priority, "ready tasks", "priority"), width="stretch")


def _row(queue: dict[str, Any], workers: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "queue": queue["name"],
        "paused": bool(queue.get("paused")),
        "ready": queue.get("ready", 0),
        "running": queue.get("running", 0),
        "scheduled": queue.get("scheduled", 0),
    }
    row["workers serving"] = sum(1 for w in workers if queue["name"] in w.get("queues", []))
    by_priority = sorted((queue.get("by_priority") or {}).items(), key=lambda item: -int(item[0]))
    row["by priority"] = ", ".join(f"p{p}: {n}" for p, n in by_priority)
    return row


def _total_ready() -> list[int]:
    return [sum(v for k, v in s.items() if k.startswith("ready:")) for s in live.samples()][-60:]


queues_page()
