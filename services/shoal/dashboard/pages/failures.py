"""Failures: failed tasks grouped by their error, so one kind of failure is retried at once."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from shoal.dashboard import api, bulk_panels, live, session
from shoal.dashboard import format as fmt

MAX_ERROR_NEEDLE = 500  # the API's bound on error_contains (shoal.scheduler.bulk_schemas)

st.title("Failures")
st.caption(
    "Tasks that failed for good, grouped by the first line of their error, most frequent first. "
    "Pick a group to retry its tasks (after a confirmation with the count)."
)


def _frame(groups: list[dict[str, Any]], now: float) -> pd.DataFrame:
    # Errors, names and queues are the tasks' own text: table cells, never Markdown.
    rows = [
        {
            "tasks": g["count"],
            "error": g["error"],
            "task names": ", ".join(f"{n} ({c})" for n, c in g["names"].items()),
            "queues": ", ".join(f"{q} ({c})" for q, c in g["queues"].items()),
            "latest": fmt.ago(g.get("latest_at"), now),
        }
        for g in groups
    ]
    return pd.DataFrame(rows, columns=["tasks", "error", "task names", "queues", "latest"])


def criteria_of(group: dict[str, Any]) -> dict[str, Any]:
    """The bulk filter of a group: failed tasks whose last error contains the group's line."""
    return {"states": ["failed"], "error_contains": group["error"][:MAX_ERROR_NEEDLE]}


@st.fragment(run_every=live.interval_s())
def failures_page() -> None:
    answer = api.attempt_or_banner("grouping failed tasks", lambda c: c.failures())
    if answer is None:
        return
    bulk_panels.show_outcome()
    bulk_panels.job_progress("failures")
    groups = answer["groups"]
    if not groups:
        st.success("No failed task.", icon=":material/check_circle:")
        return
    cols = st.columns(3)
    cols[0].metric("Failed tasks", fmt.count(answer["failed_total"]), border=True)
    cols[1].metric("Kinds of error", fmt.count(len(groups)), border=True)
    cols[2].metric("Largest group", fmt.count(groups[0]["count"]), border=True)
    if not answer["complete"]:
        st.caption(f"Grouped: the newest {fmt.count(answer['scanned'])} failed tasks.")
    event = st.dataframe(
        _frame(groups, time.time()),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="failure_groups",
        column_config={"error": st.column_config.TextColumn("error", width="large")},
    )
    rows = tuple(event.selection.rows) if event is not None else ()
    if not rows or rows[0] >= len(groups):
        st.caption("Click a group to retry its tasks.")
    else:
        group = groups[rows[0]]
        criteria = criteria_of(group)
        viewer = not session.may_act()
        st.button(
            f"Retry the {fmt.count(group['count'])} tasks of this group…",
            icon=":material/replay:",
            key="failures_retry",
            disabled=viewer,
            help=bulk_panels.VIEWER_HELP if viewer else "Counts the matching failed tasks first, then asks.",
            on_click=bulk_panels.ask,
            args=("failures", "retry", criteria),
        )
        bulk_panels.confirmation("failures", criteria)


failures_page()
