"""Schedules: every periodic task with its timing in words and its next runs; pause, resume,
delete (after a confirmation) and create one."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from shoal.core import jsonutil
from shoal.dashboard import api, live, session
from shoal.dashboard import format as fmt
from shoal.dashboard.untrusted import markdown_text

API = "/api/v1/schedules"

st.title("Schedules")
st.caption(
    "Periodic tasks. Only the scheduler leader enqueues them, one task per tick, also across a "
    "leader failover; ticks missed while no scheduler ran follow each schedule's misfire policy."
)


def _row(s: dict[str, Any], now: float) -> dict[str, Any]:
    status = s.get("status") or {}
    upcoming = s.get("next_runs") or []
    return {
        "id": s["id"],
        "state": "paused" if s.get("paused") else status.get("code", ""),
        "task": s["task"],
        "when": s.get("description", ""),
        "next run": fmt.ago(upcoming[0], now) if upcoming else "—",
        "last enqueued": fmt.ago(s.get("last_fired_at"), now) if s.get("last_fired_at") else "never",
        "missed": int(s.get("missed") or 0),
        "misfire": s.get("misfire", ""),
        "queue": s.get("queue", ""),
        "source": s.get("source", ""),
    }


@st.fragment(run_every=live.interval_s())
def schedules_list() -> None:
    try:
        schedules: list[dict[str, Any]] = api.attempt(
            "reading schedules", lambda c: c.request("GET", API, params={"next": 5})["schedules"]
        )
    except api.ApiProblem as problem:
        st.error(markdown_text(problem.message), icon=":material/error:")
        return
    now = time.time()
    cols = st.columns(3)
    cols[0].metric("Schedules", len(schedules), border=True)
    cols[1].metric("Paused", sum(1 for s in schedules if s.get("paused")), border=True)
    cols[2].metric("Ticks missed", fmt.count(sum(int(s.get("missed") or 0) for s in schedules)), border=True)
    if not schedules:
        st.info(
            'No schedule yet. Declare one in code (`@task(schedule="0 2 * * *")`) or create one below.',
            icon=":material/event_repeat:",
        )
        return
    st.dataframe([_row(s, now) for s in schedules], hide_index=True, width="stretch")
    overdue = [s for s in schedules if (s.get("status") or {}).get("code") == "overdue"]
    for s in overdue:
        st.warning(markdown_text(f"{s['id']}: {s['status']['reason']}"), icon=":material/schedule:")
    _actions(schedules)


def _actions(schedules: list[dict[str, Any]]) -> None:
    ids = [s["id"] for s in schedules]
    chosen_id = st.selectbox("Schedule", ids, index=None, placeholder="pick a schedule", key="sched_pick")
    chosen = next((s for s in schedules if s["id"] == chosen_id), None)
    if chosen is None:
        return
    sid = chosen["id"]
    with st.container(border=True):
        st.markdown(f"**{markdown_text(sid)}** · {markdown_text(chosen['status']['reason'])}")
        upcoming = chosen.get("next_runs") or []
        if upcoming:
            st.text(
                "Next runs (UTC): "
                + ", ".join(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) for t in upcoming)
            )
        if chosen.get("last_misfire"):
            st.text(f"Last misfire: {chosen['last_misfire']}")
        left, middle, right = st.columns(3)
        paused = bool(chosen.get("paused"))
        viewer = not session.may_act()
        left.button(
            "Resume" if paused else "Pause",
            icon=":material/play_arrow:" if paused else ":material/pause:",
            key="sched_toggle",
            width="stretch",
            disabled=viewer,
            on_click=api.act,
            args=(
                f"{'resuming' if paused else 'pausing'} {sid}",
                lambda c: c.request("POST", f"{API}/{sid}/{'resume' if paused else 'pause'}"),
                f"Schedule {sid} {'resumed from its next tick' if paused else 'paused'}.",
            ),
        )
        middle.button(
            "Delete…", icon=":material/delete:", key="sched_delete", width="stretch", disabled=viewer,
            on_click=st.session_state.__setitem__, args=("sched_confirm_delete", sid),
        )  # fmt: skip
        right.caption(
            f"Source: {chosen.get('source')}. One declared in code returns when a worker declaring it starts."
        )
        if st.session_state.get("sched_confirm_delete") == sid:
            _confirm_delete(sid)


def _confirm_delete(schedule_id: str) -> None:
    """The second step of a delete: say what it does, then act only on a second click."""
    st.warning(
        f"Delete schedule **{markdown_text(schedule_id)}**? It stops enqueueing tasks; the tasks it "
        "already enqueued are kept.",
        icon=":material/warning:",
    )
    yes, no = st.columns(2)
    yes.button(
        "Yes, delete it", type="primary", key="sched_delete_confirm", width="stretch",
        on_click=_delete, args=(schedule_id,),
    )  # fmt: skip
    no.button("Keep it", key="sched_delete_cancel", width="stretch",
              on_click=st.session_state.pop, args=("sched_confirm_delete", None))  # fmt: skip


def _delete(schedule_id: str) -> None:
    st.session_state.pop("sched_confirm_delete", None)
    st.session_state.pop("sched_pick", None)
    api.act(
        f"deleting {schedule_id}",
        lambda c: c.request("DELETE", f"{API}/{schedule_id}"),
        f"Schedule {schedule_id} deleted.",
    )


def create_form() -> None:
    with st.expander("Create a schedule", icon=":material/add:"):
        with st.form("sched_create", clear_on_submit=False, border=False):
            left, right = st.columns(2)
            schedule_id = left.text_input("Id", placeholder="nightly-report", key="sched_new_id")
            task = right.text_input("Task name", placeholder="echo", key="sched_new_task")
            kind = left.radio("Timing", ["cron", "every"], horizontal=True, key="sched_new_kind")
            timing = right.text_input(
                "Cron expression, or seconds", placeholder="30 2 * * *  or  300", key="sched_new_timing"
            )
            timezone = left.text_input("Timezone", value="UTC")
            misfire = right.selectbox("Missed ticks", ["run_once", "skip"])
            kwargs_text = st.text_input("Keyword arguments (JSON object)", value="{}")
            submitted = st.form_submit_button("Create", type="primary", disabled=not session.may_act())
        if submitted:
            _create(schedule_id, task, kind, timing, timezone, misfire, kwargs_text)


def _create(
    schedule_id: str, task: str, kind: str, timing: str, timezone: str, misfire: str, kwargs: str
) -> None:
    try:
        parsed = jsonutil.loads(kwargs or "{}")
    except jsonutil.JSONDecodeError:
        st.error("Keyword arguments must be a JSON object.", icon=":material/error:")
        return
    body: dict[str, Any] = {"id": schedule_id.strip(), "task": task.strip(), "timezone": timezone.strip(),
                            "misfire": misfire, "kwargs": parsed}  # fmt: skip
    if kind == "cron":
        body["cron"] = timing.strip()
    else:
        try:
            body["every_s"] = float(timing)
        except ValueError:
            st.error("The interval must be a number of seconds.", icon=":material/error:")
            return
    api.act(
        f"creating {body['id']}",
        lambda c: c.request("POST", API, body=body),
        f"Schedule {body['id']} created.",
    )
    st.rerun()  # draw the page again with the outcome and the new schedule


api.show_outcome()
schedules_list()
create_form()
