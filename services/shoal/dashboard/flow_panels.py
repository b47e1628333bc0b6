"""Flow-control parts of the existing dashboard pages: pause switches on Queues."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from shoal.dashboard import api
from shoal.dashboard import format as fmt


def pause_switches(queues: list[dict[str, Any]]) -> None:
    """One switch per queue: off pauses it (no worker claims from it; it still accepts tasks)."""
    with st.container(border=True):
        st.markdown("**Pause** · a paused queue accepts tasks, but no worker claims from it")
        now = time.time()
        columns = st.columns(min(4, max(1, len(queues))))
        for i, queue in enumerate(queues):
            name = queue["name"]
            paused = bool(queue.get("paused"))
            label = f"{name} (paused {fmt.ago(queue.get('paused_at'), now)})" if paused else name
            columns[i % len(columns)].toggle(
                label,
                value=not paused,
                key=f"pause_{name}_{int(paused)}",  # a new switch when the state changed elsewhere
                help="On: workers claim from this queue. Off: paused.",
                on_change=_flip,
                args=(name, paused),
            )


def _flip(queue: str, was_paused: bool) -> None:
    action = "resume" if was_paused else "pause"
    api.act(
        f"{'resuming' if was_paused else 'pausing'} queue {queue}",
        lambda c: c.request("POST", f"/api/v1/queues/{queue}/{action}"),
        f"Queue {queue} {'resumed' if was_paused else 'paused'}.",
    )
