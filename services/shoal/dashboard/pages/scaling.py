"""Scaling: desired against actual workers over time, and every recent decision with its reason."""

from __future__ import annotations

import time

import streamlit as st

from shoal.dashboard import charts, live
from shoal.dashboard import format as fmt
from shoal.dashboard.untrusted import markdown_text

st.title("Scaling")
st.caption("The scheduler's leader turns queue depth, arrival rate and run time into a worker count.")

DIRECTION_ICON = {
    "up": ":material/trending_up:",
    "down": ":material/trending_down:",
    "hold": ":material/trending_flat:",
}
DIRECTION_TEXT = {"up": "↑ up", "down": "↓ down", "hold": "→ hold"}
BACKENDS = {
    "none": "off (SHOAL_SCALER_BACKEND=none): the worker count is yours to set",
    "local": "local worker processes started and stopped by the scheduler",
    "kubernetes": "the worker Deployment's replicas, through the Kubernetes API",
}


def _recent(key: str) -> list[float] | None:
    return [s[key] for s in live.samples() if key in s][-60:] or None


@st.fragment(run_every=live.interval_s())
def scaling_page() -> None:
    snap = live.snapshot()
    if not live.show_problems(snap, ("scaling",)):
        return
    scaling = snap.scaling or {}
    history = scaling.get("history") or []
    workers_up = len([w for w in snap.workers or [] if w.get("state") in ("active", "draining")])
    backend = scaling.get("backend", "none")

    cols = st.columns(4)
    cols[0].metric("Backend", backend, border=True, help=BACKENDS.get(backend))
    desired = scaling.get("desired")
    cols[1].metric("Desired", "—" if desired is None else desired, border=True, chart_data=_recent("desired"))
    cols[2].metric("Workers up", workers_up, border=True, chart_data=_recent("workers"))
    cols[3].metric(
        "Limits",
        f"{scaling.get('min', '—')} to {scaling.get('max', '—')}",
        border=True,
        help="SHOAL_SCALER_MIN_REPLICAS to SHOAL_SCALER_MAX_REPLICAS",
    )
    if scaling.get("reason"):
        ago = fmt.ago(scaling.get("ts"), time.time())
        st.info(
            f"**Latest decision** ({ago}): {markdown_text(scaling['reason'])}",
            icon=DIRECTION_ICON.get(history[0]["direction"], ":material/info:")
            if history
            else ":material/info:",
        )
    elif backend == "none":
        st.info(
            f"Autoscaling is {BACKENDS['none']}. Set SHOAL_SCALER_BACKEND=local or kubernetes to turn it on.",
            icon=":material/info:",
        )
    else:
        st.info(
            "The autoscaler has not decided anything yet; it decides every SHOAL_SCALER_INTERVAL_S seconds.",
            icon=":material/hourglass_top:",
        )

    with st.container(border=True):
        st.markdown("**Desired vs actual workers** · over time")
        st.altair_chart(
            charts.replicas_chart(charts.replicas_frame(history, live.samples(), time.time())),
            width="stretch",
        )

    st.markdown("**Recent decisions** · newest first")
    if not history:
        st.caption("None recorded yet.")
        return
    st.dataframe(
        [
            {
                "when": fmt.clock(d.get("ts")),
                "direction": DIRECTION_TEXT.get(d.get("direction", ""), ""),
                "replicas": f"{d.get('current')} → {d.get('desired')}",
                "needed": d.get("needed"),
                "reason": d.get("reason", ""),
                "manual hold": "yes" if d.get("manual_hold") else "",
            }
            for d in history
        ],
        hide_index=True,
        width="stretch",
        column_config={"reason": st.column_config.TextColumn("reason", width="large")},
    )


scaling_page()
