"""Submit: run any task the workers know, or load a demo to watch the system work."""

from __future__ import annotations

from typing import Any

import streamlit as st

from shoal.dashboard import PAGES_DIR, api, demo, forms, live
from shoal.dashboard.untrusted import markdown_text

TASKS_PAGE = (PAGES_DIR / "tasks.py").as_posix()

st.title("Submit")

snap = live.snapshot()
live_workers = [w for w in snap.workers or [] if w.get("state") == "active"]
names = sorted({n for w in live_workers for n in w.get("task_names", [])})
served_queues = sorted({q for w in live_workers for q in w.get("queues", [])})
queues = sorted(set(served_queues) | {q["name"] for q in snap.queues or []} | {"default"})

live.show_problems(snap, ("workers",))
if snap.workers is not None and not names:
    st.warning(
        "No live worker advertises any task yet, so there is nothing to pick from. Start one with "
        "`python -m shoal.worker` (or `make up`); you can still type a task name.",
        icon=":material/build:",
    )

form_col, demo_col = st.columns([3, 2], gap="large")

with form_col, st.form("submit_task", border=True):
    st.markdown("**A task**")
    top = st.columns([2, 1, 1])
    name = top[0].selectbox(
        "Task name", names, index=names.index("echo") if "echo" in names else 0 if names else None,
        accept_new_options=True, key="s_name",
        help="Names the live workers advertise; type another to submit it anyway.",
    )  # fmt: skip
    queue = top[1].selectbox(
        "Queue", queues, index=queues.index("default"), accept_new_options=True, key="s_queue"
    )
    priority = top[2].number_input(
        "Priority", min_value=-100, max_value=100, value=0, step=1, key="s_priority"
    )
    args_text = st.text_area("args (JSON list)", value="[]", height=68, key="s_args")
    kwargs_text = st.text_area("kwargs (JSON object)", value="{}", height=68, key="s_kwargs")
    depends_text = st.text_input("Depends on (task ids, comma-separated)", key="s_deps")
    bottom = st.columns(3)
    delay_s = bottom[0].number_input("Delay (s)", min_value=0.0, value=0.0, step=1.0, key="s_delay")
    max_retries = bottom[1].number_input(
        "Max retries", min_value=0, max_value=100, value=None, placeholder="server default", key="s_retries"
    )
    timeout_s = bottom[2].number_input(
        "Time limit (s)", min_value=0.001, value=None, placeholder="server default", key="s_timeout"
    )
    submitted = st.form_submit_button("Submit task", type="primary", icon=":material/send:")

if submitted:
    body, errors = forms.build_task(
        name=name or "",
        args_text=args_text,
        kwargs_text=kwargs_text,
        queue=queue or "",
        priority=int(priority),
        depends_text=depends_text,
        delay_s=float(delay_s or 0),
        max_retries=None if max_retries is None else int(max_retries),
        timeout_s=None if timeout_s is None else float(timeout_s),
    )
    with form_col:
        for error in errors:
            st.error(markdown_text(error.message), icon=":material/front_hand:")
        if body is not None:
            request = body
            task = api.attempt_or_banner(f"submitting {request['name']}", lambda c: c.submit_request(request))
            if task is not None:
                st.success(
                    # Ids are [A-Za-z0-9_.:-]: a code span shows them as they are.
                    f"Submitted **{markdown_text(task['name'])}** as `{task['id']}` — it is {task['state']}.",
                    icon=":material/check_circle:",
                )
                st.page_link(
                    TASKS_PAGE,
                    label="Open it on the Tasks page",
                    icon=":material/search:",
                    query_params={"task": task["id"]},
                )


def _load(kind: str, tasks: list[dict[str, Any]]) -> None:
    answer = api.attempt_or_banner(f"submitting the {kind}", lambda c: c.submit_batch(tasks))
    if answer is None:
        return
    st.session_state["_last_demo"] = {"kind": kind, "count": len(answer), "last": answer[-1]["id"]}


with demo_col, st.container(border=True):
    st.markdown("**Demo loads** · one click, one batch request")
    st.caption(
        "1,000 mixed built-in tasks (sleep, echo, noop, flaky, cpu, a few failures) at priorities 0-9, "
        "or a layered DAG of 50 tasks whose last task waits on the whole last layer."
    )
    available = set(names)
    mixed_clicked = st.button(
        "Load 1,000 mixed tasks",
        icon=":material/waves:",
        width="stretch",
        disabled=not available,
        key="demo_mixed",
    )
    dag_clicked = st.button(
        "Load a DAG of 50",
        icon=":material/account_tree:",
        width="stretch",
        disabled=not available,
        key="demo_dag",
    )
    try:
        if mixed_clicked:
            _load("mixed load", demo.mixed_load(available, 1000, served_queues or ["default"]))
        if dag_clicked:
            dag_queue = "default" if "default" in served_queues or not served_queues else served_queues[0]
            _load("DAG", demo.dag_load(available, 50, dag_queue))
    except ValueError as e:
        st.error(str(e), icon=":material/front_hand:")
    last = st.session_state.get("_last_demo")
    if last:
        st.success(f"Submitted the {last['kind']}: {last['count']} tasks.", icon=":material/check_circle:")
        label = "Open its final task" if last["kind"] == "DAG" else "Open the last task"
        st.page_link(TASKS_PAGE, label=label, icon=":material/search:", query_params={"task": last["last"]})
