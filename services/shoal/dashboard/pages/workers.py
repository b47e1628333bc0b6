"""Workers: who is up, what each one serves and runs, how long since it was heard from; drain one."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from shoal.dashboard import api, charts, live, session
from shoal.dashboard import format as fmt

ATTEMPTS = "Attempts, not tasks: a task that ran three times counts three."

st.title("Workers")
st.caption("Every registered worker with its live load. Draining a worker stops it claiming new tasks; "
           "it finishes what it runs.")  # fmt: skip


def _table(workers: list[dict[str, Any]], now: float) -> pd.DataFrame:
    rows = []
    for w in workers:
        beat = w.get("last_heartbeat")
        rows.append(
            {
                "state": w.get("state", ""),
                "id": w["id"],
                "host": w.get("host", ""),
                "queues": list(w.get("queues") or []),
                "slots": int(w.get("concurrency", 0)),
                "running": int(w.get("running", 0)),
                "load": int(w.get("running", 0)) / max(int(w.get("concurrency", 0)), 1),
                "attempts run": int(w.get("processed", 0)),
                "attempts failed": int(w.get("failed", 0)),
                "heartbeat": round(now - beat, 1) if beat else None,
                "tasks": len(w.get("task_names") or []),
                "version": w.get("version", ""),
                "up for": fmt.ago(w.get("started_at"), now).removesuffix(" ago"),
            }
        )
    return pd.DataFrame(rows)


@st.fragment(run_every=live.interval_s())
def workers_page() -> None:
    snap = live.snapshot()
    if not live.show_problems(snap, ("workers",)):
        return
    now = time.time()
    workers = sorted(snap.workers or [], key=lambda w: (w.get("state") != "active", w["id"]))
    alive = [w for w in workers if w.get("state") in ("active", "draining")]
    cols = st.columns(5)
    cols[0].metric("Live workers", len(alive), border=True, chart_data=live_column("workers"))
    cols[1].metric("Slots", sum(int(w.get("concurrency", 0)) for w in alive), border=True)
    cols[2].metric(
        "Busy", sum(int(w.get("running", 0)) for w in alive), border=True, chart_data=live_column("busy")
    )
    # The workers count attempts (a task retried three times ran three); the Overview counts tasks.
    cols[3].metric(
        "Attempts run",
        fmt.count(sum(int(w.get("processed", 0)) for w in workers)),
        border=True,
        help=ATTEMPTS,
    )
    cols[4].metric(
        "Attempts failed",
        fmt.count(sum(int(w.get("failed", 0)) for w in workers)),
        border=True,
        help=ATTEMPTS,
    )

    if not workers:
        st.info(
            "No worker has registered. Start one with `python -m shoal.worker` "
            "(SHOAL_QUEUES picks its queues), or run `make up`.",
            icon=":material/build:",
        )
        return

    st.dataframe(
        _table(workers, now).style.map(fmt.color_cell(fmt.WORKER_STATE_COLORS), subset=["state"]),
        hide_index=True,
        width="stretch",
        column_config={
            "queues": st.column_config.ListColumn("queues"),
            "load": st.column_config.ProgressColumn("load", format="percent", min_value=0, max_value=1),
            "heartbeat": st.column_config.NumberColumn("heartbeat age", format="%.1f s"),
            "attempts run": st.column_config.NumberColumn("attempts run", format="%d", help=ATTEMPTS),
            "attempts failed": st.column_config.NumberColumn("attempts failed", format="%d", help=ATTEMPTS),
        },
    )
    if alive:
        with st.container(border=True):
            st.markdown("**Slots** · busy and free, per live worker")
            st.altair_chart(charts.slots_chart(alive), width="stretch")

    active = [w["id"] for w in workers if w.get("state") == "active"]
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    chosen = left.selectbox(
        "Drain a worker", active, index=None, placeholder="pick an active worker", key="drain_pick"
    )
    viewer = not session.may_act()
    right.button(
        "Drain",
        icon=":material/pause_circle:",
        help="Operators only: you are signed in as a viewer." if viewer else None,
        disabled=viewer or not chosen,
        width="stretch",
        key="drain",
        on_click=api.act,
        args=(
            f"draining {chosen}",
            lambda c: c.drain_worker(chosen),
            f"Draining {chosen}: it takes no new tasks and finishes the ones it runs.",
        ),
    )
    api.show_outcome()


def live_column(key: str) -> list[float] | None:
    values = [s[key] for s in live.samples() if key in s][-60:]
    return values or None


workers_page()
