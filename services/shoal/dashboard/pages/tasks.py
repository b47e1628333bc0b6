"""Tasks: find tasks, page through them, open one to see everything about it and act on it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from shoal.dashboard import api, bulk_panels, charts, graph, live, progress_view, session, taskview, values
from shoal.dashboard import format as fmt
from shoal.dashboard.untrusted import markdown_text

ALL = "all"
PAGE_SIZES = (25, 50, 100)

st.title("Tasks")


def _open(task_id: str | None) -> None:
    """Show `task_id` in the detail panel (and in the URL, so the view can be shared)."""
    if task_id:
        st.query_params["task"] = task_id
    elif "task" in st.query_params:
        del st.query_params["task"]


# ---------------------------------------------------------------- filters (outside the live parts)

snap = live.snapshot()
# The chosen queue stays an option when it empties (the scheduler lists live queues only), so the
# filter does not jump back to "all" under the operator's hands after a bulk cancel.
chosen_queue = st.session_state.get("f_queue")
known_queues = sorted(
    {q["name"] for q in snap.queues or []}
    | {q for w in snap.workers or [] for q in w["queues"]}
    | ({chosen_queue} if isinstance(chosen_queue, str) and chosen_queue != ALL else set())
)
seen_names: set[str] = st.session_state.setdefault("_seen_names", set())
known_names = sorted({n for w in snap.workers or [] for n in w.get("task_names", [])} | seen_names)

cols = st.columns([1.2, 1.2, 1.4, 2.2, 0.8])
state = cols[0].selectbox(
    "State",
    [ALL, *fmt.STATE_ORDER],
    format_func=lambda s: s if s == ALL else fmt.state_label(s),
    key="f_state",
    persist_state="session",
)
queue = cols[1].selectbox(
    "Queue", [ALL, *known_queues], key="f_queue", accept_new_options=True, persist_state="session"
)
name = cols[2].selectbox(
    "Task name", [ALL, *known_names], key="f_name", accept_new_options=True, persist_state="session"
)
wanted_id = (
    cols[3].text_input("Task id", key="f_id", placeholder="paste an id to open it", type="search").strip()
)
page_size = cols[4].selectbox("Rows", PAGE_SIZES, key="f_rows", persist_state="session")
text = st.text_input(
    "Text",
    key="f_text",
    placeholder="search the args, result and error of the listed tasks (a bounded scan, newest first)",
    type="search",
    max_chars=200,
).strip()

if wanted_id and st.query_params.get("task") != wanted_id and st.session_state.get("_opened_id") != wanted_id:
    st.session_state["_opened_id"] = wanted_id
    _open(wanted_id)

filters = (state, queue, name, page_size, text)
if st.session_state.get("_filters") != filters:
    # New filters start from the first page again.
    st.session_state["_filters"] = filters
    st.session_state["_cursors"] = [None]


def _filter_args() -> dict[str, Any]:
    return {
        "state": None if state == ALL else state,
        "queue": None if queue in (ALL, None) else queue,
        "name": None if name in (ALL, None) else name,
        "limit": page_size,
        "text": text or None,
    }


# ---------------------------------------------------------------- the table


def _newer(cursors: list[str | None]) -> None:
    cursors.pop()


def _older(cursors: list[str | None], cursor: str | None) -> None:
    cursors.append(cursor)


@st.fragment(run_every=live.interval_s())
def task_table() -> None:
    cursors: list[str | None] = st.session_state["_cursors"]
    page = len(cursors) - 1
    answer = api.attempt_or_banner(
        "listing tasks", lambda c: c.list_tasks(cursor=cursors[-1], **_filter_args())
    )
    if answer is None:
        return
    tasks, next_cursor = answer.get("tasks", []), answer.get("next_cursor")
    seen_names.update(t["name"] for t in tasks)  # offered in the name filter from now on
    frame = taskview.table(tasks, time.time())
    if frame.empty:
        st.info(
            "No task matches these filters." if page == 0 else "No more tasks on this page.",
            icon=":material/search:",
        )
    event = st.dataframe(
        frame.style.map(fmt.color_cell(fmt.STATE_COLORS), subset=["state"]),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * max(len(frame), 1), 420),
        on_select="rerun",
        selection_mode="single-row",
        key=f"table_{page}",
        column_config={
            "id": st.column_config.TextColumn("id", width="small"),
            "priority": st.column_config.NumberColumn("prio", width="small"),
            "created": st.column_config.DatetimeColumn("created", format="HH:mm:ss"),
            "error": st.column_config.TextColumn("error", width="medium"),
            "progress": st.column_config.ProgressColumn(
                "progress", format="percent", min_value=0, max_value=1
            ),
            "doing": st.column_config.TextColumn("doing", width="small"),
        },
    )
    rows = tuple(event.selection.rows) if event is not None else ()
    # Act on a new click only: after a refresh the same row number may hold another task.
    if rows and st.session_state.get("_handled_rows") != (page, rows):
        st.session_state["_handled_rows"] = (page, rows)
        chosen = frame.iloc[rows[0]]["id"]
        if chosen != st.query_params.get("task"):
            _open(str(chosen))
            st.rerun()
    left, middle, right = st.columns([1, 2, 1], vertical_alignment="center")
    left.button("← Newer", disabled=page == 0, key="newer", on_click=_newer, args=(cursors,))
    searched = (
        f"{answer.get('scanned', 0)} read for the text"
        + (", more to read: Older →" if answer.get("stopped") == "budget" else "")
        + " · "
        if text
        else ""
    )
    middle.caption(
        f"Page {page + 1} · {len(tasks)} tasks · {searched}newest first · click a row to open it · "
        f"updated {fmt.clock(time.time())}"
    )
    right.button(
        "Older →", disabled=next_cursor is None, key="older", on_click=_older, args=(cursors, next_cursor)
    )


# ---------------------------------------------------------------- one task


def _explanation(task: Mapping[str, Any]) -> Mapping[str, Any]:
    """The API's plain-words reason; if it cannot give one, what the task itself says."""
    served = api.explanation(task["id"])
    if served is not None:
        return served
    reason = f"It is {task['state'].replace('_', ' ')}."
    if task["state"] == "pending" and task.get("depends_on"):
        reason += f" It waits on {len(task['depends_on'])} dependencies (see Dependencies below)."
    elif task["state"] == "scheduled" and task.get("scheduled_for"):
        reason += f" It joins its queue at {fmt.clock(task['scheduled_for'])}."
    return {
        "state": task["state"],
        "code": "unexplained",
        "reason": reason + " (The API gave no explanation.)",
    }


def _show_explanation(task: Mapping[str, Any], explanation: Mapping[str, Any]) -> None:
    state = task["state"]
    # The reason quotes the task's own error and ids: text, never markup.
    text = markdown_text(explanation.get("reason", ""))
    if state == "succeeded":
        st.success(text, icon=":material/check_circle:")
    elif state in ("failed", "upstream_failed"):
        st.error(text, icon=":material/error:")
    elif state == "running":
        st.info(text, icon=":material/play_circle:")
    elif state == "cancelled":
        st.warning(text, icon=":material/cancel:")
    else:
        st.warning(f"**Why is it not running?** {text}", icon=":material/help:")


def _close() -> None:
    _open(None)
    st.session_state.pop("_opened_id", None)


def _actions(task: Mapping[str, Any]) -> None:
    cols = st.columns([1, 1, 2, 1, 1])
    task_id = task["id"]
    viewer = not session.may_act()
    why_not = "Operators only: you are signed in as a viewer." if viewer else None
    cols[0].button(
        "Cancel",
        icon=":material/cancel:",
        help=why_not,
        disabled=viewer or task["state"] not in fmt.CANCELLABLE,
        key="cancel",
        on_click=api.act,
        args=(f"cancelling {task_id}", lambda c: c.cancel(task_id), f"Cancelled {task_id}."),
    )
    cols[1].button(
        "Retry",
        icon=":material/replay:",
        help=why_not,
        disabled=viewer or task["state"] not in fmt.RETRYABLE,
        key="retry",
        on_click=api.act,
        args=(f"retrying {task_id}", lambda c: c.retry(task_id), f"Queued {task_id} again."),
    )
    cols[2].button(
        "Retry with dependents",
        icon=":material/account_tree:",
        help=why_not
        or "Also the upstream_failed tasks below it: they wait on it again and run when it succeeds.",
        disabled=viewer or task["state"] not in fmt.RETRYABLE,
        key="retry_dependents",
        on_click=api.act,
        args=(
            f"retrying {task_id} with its dependents",
            lambda c: c.retry(task_id, dependents=True),
            f"Queued {task_id} again; the upstream_failed tasks below it wait on it again.",
        ),
    )
    # A full rerun: the table's selection and the URL change with it.
    cols[3].button("Close", icon=":material/close:", key="close", on_click=_close)


def _audit(where: Any, task: Mapping[str, Any]) -> None:
    """Who did what to the task (the API's audit: the token's name, or the signed-in person)."""
    entries = task.get("audit") or []
    where.markdown("**Audit**")
    if not entries:
        where.caption("No action recorded on it.")
        return
    where.dataframe(
        {
            "when": [fmt.clock(e.get("ts")) for e in entries],
            "who": [e.get("actor", "") for e in entries],
            "what": [str(e.get("action", "")).replace("_", " ") for e in entries],
            "detail": [e.get("detail") or "" for e in entries],
        },
        hide_index=True,
        width="stretch",
    )


def _dependencies(task: Mapping[str, Any], related: Mapping[str, Any]) -> None:
    if len(related) <= 1:
        st.caption("No dependencies and no dependents: no task waits on it, nor it on any.")
        return
    st.caption(
        "Dependencies on the left, dependents on the right: a click on a task opens it. Around a big "
        f'fan-out the nearest {graph.PER_NODE} each way are drawn, and a "+N more" box opens the task '
        "whose other links it stands for."
    )
    # Small graphs at their natural size; big ones shrink to the page width.
    st.graphviz_chart(
        graph.dependency_dot(task["id"], related), width="stretch" if len(related) > 8 else "content"
    )
    others = [i for i in related if i != task["id"]]
    choice = st.selectbox(
        "Open a related task",
        others,
        index=None,
        key=f"related_{task['id']}",
        format_func=lambda i: (
            f"{fmt.state_label(related[i]['state'])} · {related[i]['name']} · {i}"
            if related.get(i)
            else f"{i} (gone)"
        ),
        placeholder="pick a task from the graph",
    )
    if choice:
        _open(choice)
        st.rerun()


def _logs(task_id: str) -> None:
    """What each attempt printed and logged, as text (it is the task's own output: never Markdown)."""
    document = api.attempt_or_banner(
        f"reading the logs of {task_id}", lambda c: c.request("GET", f"/api/v1/tasks/{task_id}/logs")
    )
    if document is None:
        return
    if not document["attempts"]:
        st.caption("No attempt has printed or logged anything (or its output is no longer kept).")
    for attempt in reversed(document["attempts"]):  # the latest first
        cut = f" · {fmt.count(attempt['cut_chars'])} characters cut" if attempt["cut_chars"] else ""
        st.caption(f"Attempt {attempt['attempt']}{cut}")
        st.code(values.exact_code(attempt["text"]), language=None, wrap_lines=True, height=320)


def _fetch_or_none(task_id: str) -> Mapping[str, Any] | None:
    try:
        return api.attempt(f"reading task {task_id}", lambda c: c.get(task_id))
    except api.ApiProblem as problem:
        if problem.status == 404:
            return None
        raise


@st.fragment(run_every=live.interval_s())
def task_detail() -> None:
    task_id = st.query_params.get("task")
    if not task_id:
        st.caption("Click a row, or paste an id above, to see a task's details, attempts and dependencies.")
        return
    try:
        task = api.attempt(f"reading task {task_id}", lambda c: c.get(task_id))
    except api.ApiProblem as problem:
        if problem.status == 404:
            st.warning(
                f"There is no task {markdown_text(task_id)} (wrong id, or it passed its retention).",
                icon=":material/search:",
            )
        else:
            st.error(problem.message, icon=":material/error:")
        return
    now = time.time()
    try:
        related = graph.collect_related(task, _fetch_or_none)
    except api.ApiProblem as problem:
        st.error(problem.message, icon=":material/error:")
        return

    head, badges = st.columns([3, 2], vertical_alignment="bottom")
    head.subheader(f"{fmt.STATE_ICON.get(task['state'], '')} {markdown_text(task['name'])}", anchor=False)
    head.code(task["id"], language=None)
    with badges, st.container(horizontal=True):
        st.badge(task["state"].replace("_", " "), color=fmt.STATE_BADGE.get(task["state"], "gray"))
        st.badge(f"queue {markdown_text(task['queue'])}", color="blue")
        st.badge(f"priority {task['priority']}", color="violet")
        allowed = task.get("attempt_limit") or task["max_retries"] + 1  # a manual retry adds a budget
        st.badge(f"attempt {task['attempts']} of {allowed}", color="gray")
    api.show_outcome()
    _show_explanation(task, _explanation(task))
    progress_view.bar(task)
    _actions(task)

    overview, error, output, tries, timeline, deps = st.tabs(
        [
            "Details",
            "Error",
            "Logs",
            f"Attempts ({max(task['attempts'], len(task.get('history') or []))})",
            "Timeline",
            f"Dependencies ({len(task.get('depends_on') or [])} · dependents {task.get('dependents_count') or 0})",  # noqa: E501
        ]
    )
    with overview:
        left, right = st.columns(2)
        left.markdown("**args**")
        values.show_value(left, task.get("args") or [])
        left.markdown("**kwargs**")
        values.show_value(left, task.get("kwargs") or {})
        right.markdown("**result**")
        if task["state"] == "succeeded":
            values.show_value(right, task.get("result"))
        else:
            right.caption(
                "No result yet."
                if task["state"] not in ("failed", "cancelled", "upstream_failed")
                else "No result."
            )
        right.dataframe(
            {
                "": [
                    "created",
                    "queued",
                    "started",
                    "finished",
                    "scheduled for",
                    "time limit",
                    "worker",
                    "idempotency key",
                ],
                "value": [
                    f"{fmt.clock(task.get('created_at'))} ({fmt.ago(task.get('created_at'), now)})",
                    fmt.clock(task.get("enqueued_at")),
                    fmt.clock(task.get("started_at")),
                    fmt.clock(task.get("finished_at")),
                    fmt.clock(task.get("scheduled_for")),
                    f"{task.get('timeout_s', 0):g} s",
                    task.get("worker_id") or "—",
                    task.get("idempotency_key") or "—",
                ],
            },
            hide_index=True,
            width="stretch",
        )
        _audit(right, task)
    with error:
        if task.get("error") or task.get("traceback"):
            # Written by the task (or whoever fed it input): shown as text, never as markup.
            st.error("The task's error:", icon=":material/error:")
            st.code(values.exact_code(task.get("error") or "(no message)"), language=None, wrap_lines=True)
            if task.get("traceback"):
                st.code(task["traceback"], language="python")
        else:
            st.caption("No error.")
    with tries:
        table = taskview.attempts(task, now)
        if table.empty:
            st.caption("Not started yet.")
        else:
            st.dataframe(table, hide_index=True, width="stretch")
    with timeline:
        spans = charts.timeline_frame(task, now)
        if spans.empty:
            st.caption("Nothing to draw yet.")
        else:
            st.altair_chart(charts.timeline_chart(spans), width="stretch")
    with output:
        _logs(task["id"])
    with deps:
        _dependencies(task, related)


# The open task beside the list (not below it): scanning the table and reading a task go together.
table_column, detail_column = st.columns([3, 2], gap="medium")
with table_column:
    task_table()
    criteria = _filter_args()
    bulk_panels.filter_actions(criteria["state"], criteria["queue"], criteria["name"])
with detail_column:
    task_detail()
