"""Live refresh: the refresh interval, and one shared snapshot + time series per browser session.

Every page's live fragment calls `snapshot()`. It asks the API for stats, queues, workers
and scaling at most once per refresh interval and appends a sample to the session's
series, so switching pages neither loses the history nor doubles the requests.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import streamlit as st

from shoal.dashboard import api
from shoal.dashboard.series import Snapshot, is_due, new_samples, record, seed
from shoal.dashboard.untrusted import markdown_text

DEFAULT_INTERVAL_S = 2.0
INTERVALS_S: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
# Parts of one page run (filters, table, detail, sidebar) share one look at the API:
# a snapshot younger than this share of the refresh interval is reused.
REUSE_SHARE = 0.4


def interval_s() -> float | None:
    """Seconds between refreshes chosen in the sidebar; None while paused."""
    if st.session_state.get("live_paused", False):
        return None
    return float(st.session_state.get("live_interval_s", DEFAULT_INTERVAL_S))


def samples() -> deque[dict[str, Any]]:
    series = st.session_state.get("_series")
    if series is None:
        series = st.session_state["_series"] = new_samples()
        try:  # a new tab starts with the scheduler's history (an older scheduler has none: 404)
            history = api.attempt(
                "reading the charts' history", lambda c: c.request("GET", "/api/v1/stats/history")
            )
            seed(series, history.get("samples") or [])
        except api.ApiProblem:
            pass  # the charts start empty; the live samples follow
    return series


def _fetch(snap: Snapshot, part: str, action: str, call: Any) -> Any:
    try:
        return api.attempt(action, call)
    except api.ApiProblem as problem:
        snap.errors[part] = problem.message
        if problem.blocks_everything:
            snap.errors["_blocked"] = problem.kind
        return None


def take_snapshot() -> Snapshot:
    """Ask the API for the current picture. A part that fails is None, with its error kept."""
    snap = Snapshot(at=time.time())
    snap.stats = _fetch(snap, "stats", "reading stats", lambda c: c.stats())
    if "_blocked" in snap.errors:
        # Unreachable, too slow or refused: the other calls would say the same thing again.
        return snap
    snap.queues = _fetch(snap, "queues", "reading queues", lambda c: c.queues())
    snap.workers = _fetch(snap, "workers", "reading workers", lambda c: c.workers())
    snap.scaling = _fetch(snap, "scaling", "reading the scaling state", lambda c: c.scaling())
    return snap


def snapshot(force: bool = False) -> Snapshot:
    """The session's latest snapshot: reused within one script run, fetched again otherwise.

    A sample is added to the series at most once per refresh interval, however many
    fragments and pages ask.
    """
    state = st.session_state
    current: Snapshot | None = state.get("_snapshot")
    now = time.time()
    if force or current is None or now - current.at >= REUSE_SHARE * (interval_s() or DEFAULT_INTERVAL_S):
        current = take_snapshot()
        state["_snapshot"] = current
        if not current.errors.get("stats") and is_due(samples(), now, interval_s() or DEFAULT_INTERVAL_S):
            record(samples(), current)
    return current


def show_problems(snap: Snapshot, parts: tuple[str, ...] = ("stats", "queues", "workers")) -> bool:
    """Banner for the first failed part among `parts`; True when everything needed is there."""
    if "_blocked" in snap.errors:
        parts = ("stats",)  # the one call made, and the reason nothing else was asked
    for part in parts:
        message = snap.errors.get(part)
        if message:
            st.error(markdown_text(message), icon=":material/error:")
            return False
    return True
