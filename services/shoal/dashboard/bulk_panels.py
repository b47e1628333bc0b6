"""Bulk cancel / retry from the dashboard, over the API's bulk jobs (POST /api/v1/bulk).

Every bulk action takes two steps: the button asks the API how many tasks match now
(POST /bulk/preview, nothing changes) and shows that count with a confirmation; only the
confirmation starts the job. The job's progress is then followed live until it ends.
Viewers see the buttons disabled, and `api.act` refuses whatever a page forgot.
A confirmation belongs to the filter it was asked for: change the filter and it is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from shoal.dashboard import api, live, session
from shoal.dashboard import format as fmt
from shoal.dashboard.untrusted import markdown_text

ASK = "_bulk_ask"  # {scope, action, criteria, matched, complete}
OUTCOME = "_bulk_outcome"  # this module's outcomes, so the task detail's stay its own
JOB = "_bulk_job"  # {scope, id, action}
VERBS = {"cancel": ("Cancel", "cancelled"), "retry": ("Retry", "queued again")}
VIEWER_HELP = "Operators only: you are signed in as a viewer."


def describe(criteria: Mapping[str, Any]) -> str:
    """The filter in words, for the confirmation (values escaped: task names are anyone's text)."""
    parts = []
    if criteria.get("states"):
        parts.append("state " + " or ".join(fmt.state_label(s) for s in criteria["states"]))
    if criteria.get("queue"):
        parts.append(f"queue {markdown_text(criteria['queue'])}")
    if criteria.get("name"):
        parts.append(f"name {markdown_text(criteria['name'])}")
    if criteria.get("error_contains"):
        parts.append(f"error containing “{markdown_text(criteria['error_contains'])}”")
    return " · ".join(parts) or "every task the action applies to"


def ask(scope: str, action: str, criteria: dict[str, Any]) -> None:
    """A button's callback: count the matches now and ask for a confirmation."""
    if not session.may_act():
        api.leave_outcome(OUTCOME, "error", "Only operators may do this: you are signed in as a viewer.")
        return
    try:
        preview = api.attempt(
            f"counting the tasks a bulk {action} would touch", lambda c: c.bulk_preview(action, **criteria)
        )
    except api.ApiProblem as problem:
        api.leave_outcome(OUTCOME, "error", problem.message)
        return
    st.session_state[ASK] = {
        "scope": scope,
        "action": action,
        "criteria": criteria,
        "matched": int(preview["matched"]),
        "complete": bool(preview["complete"]),
    }


def _start(scope: str, action: str, criteria: dict[str, Any]) -> None:
    st.session_state.pop(ASK, None)

    def call(c: Any) -> None:
        job = c.bulk(action, **criteria)
        st.session_state[JOB] = {"scope": scope, "id": job["id"], "action": action}

    api.act(f"starting a bulk {action}", call, f"Bulk {action} started.", key=OUTCOME)


def show_outcome() -> None:
    """The result of this module's last action (API answers quoted as text)."""
    api.show_outcome(OUTCOME)


def _keep() -> None:
    st.session_state.pop(ASK, None)


def _dismiss() -> None:
    st.session_state.pop(JOB, None)


def confirmation(scope: str, criteria: dict[str, Any]) -> None:
    """The pending question of `scope`, if it was asked for these very criteria."""
    pending = st.session_state.get(ASK)
    if not pending or pending["scope"] != scope:
        return
    if pending["criteria"] != criteria:  # the filter changed since: the count no longer applies
        st.session_state.pop(ASK, None)
        return
    action, matched = pending["action"], pending["matched"]
    verb, _ = VERBS[action]
    with st.container(border=True, key=f"bulk_confirm_box_{scope}"):
        if matched == 0:
            st.info(f"No task matches ({describe(criteria)}): nothing to {action}.", icon=":material/search:")
            st.button("OK", key=f"bulk_keep_{scope}", on_click=_keep)
            return
        count = fmt.count(matched) if pending["complete"] else f"at least {fmt.count(matched)}"
        st.warning(
            f"**{verb} {count} tasks?** They match {describe(criteria)} now. The job works in "
            "chunks; a task that moved on by the time its chunk comes is left alone.",
            icon=":material/warning:",
        )
        yes, no = st.columns(2)
        yes.button(
            f"Yes, {action} {count} tasks",
            type="primary",
            key=f"bulk_confirm_{scope}",
            on_click=_start,
            args=(scope, action, criteria),
        )
        no.button("No, keep them", key=f"bulk_keep_{scope}", on_click=_keep)


@st.fragment(run_every=live.interval_s())
def job_progress(scope: str) -> None:
    """The bulk job this session started from `scope`, live until it ends."""
    started = st.session_state.get(JOB)
    if not started or started["scope"] != scope:
        return
    job = api.attempt_or_banner(f"following bulk job {started['id']}", lambda c: c.bulk_job(started["id"]))
    if job is None:
        return
    _, done_word = VERBS.get(job["action"], ("", "changed"))
    counts = (
        f"{fmt.count(job['changed'])} {done_word} · {fmt.count(job['skipped'])} skipped (moved on) · "
        f"{fmt.count(job['scanned'])} of about {fmt.count(job['estimate'])} read"
    )
    with st.container(border=True, key=f"bulk_job_box_{scope}"):
        if job["state"] in ("queued", "running"):
            st.progress(float(job["progress"]), text=f"Bulk {job['action']} {job['state']} · {counts}")
        elif job["state"] == "done":
            st.success(f"Bulk {job['action']} done: {counts}.", icon=":material/check_circle:")
        else:  # stopped | failed
            reason = f": {markdown_text(job['error'])}" if job.get("error") else ""
            st.error(f"Bulk {job['action']} {job['state']}{reason} · {counts}", icon=":material/error:")
        if job["state"] not in ("queued", "running"):
            st.button("Dismiss", key=f"bulk_dismiss_{scope}", on_click=_dismiss)


def filter_actions(state: str | None, queue: str | None, name: str | None) -> None:
    """The Tasks page's bulk buttons: cancel or retry every task of the current filter."""
    base = {k: v for k, v in (("queue", queue), ("name", name)) if v}
    cancel = {**base, "states": [state]} if state else dict(base)
    retry = {**base, "states": ["failed"]} if state in (None, "failed") else None
    viewer = not session.may_act()
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption("Every task of this filter, not only this page:")
        st.button(
            "Cancel all…",
            icon=":material/cancel:",
            key="bulk_cancel",
            disabled=viewer or (state is not None and state not in fmt.CANCELLABLE),
            help=VIEWER_HELP if viewer else "Counts the matching tasks first, then asks.",
            on_click=ask,
            args=("tasks", "cancel", cancel),
        )
        st.button(
            "Retry all failed…",
            icon=":material/replay:",
            key="bulk_retry",
            disabled=viewer or retry is None,
            help=VIEWER_HELP if viewer else "Counts the matching failed tasks first, then asks.",
            on_click=ask,
            args=("tasks", "retry", retry or {}),
        )
    show_outcome()
    pending = st.session_state.get(ASK)
    if pending and pending["scope"] == "tasks":
        wanted = cancel if pending["action"] == "cancel" else retry
        confirmation("tasks", wanted if wanted is not None else {"_": "filter changed"})
    job_progress("tasks")
