"""The dashboard's only way to Shoal: the HTTP API through `shoal.Client`, with errors in plain words.

All browser sessions share one client per API target (base URL and token from
`SHOAL_API_URL` and `SHOAL_API_TOKEN`). Every call a page makes goes through `attempt`, which turns a refused
token, an unreachable or slow API, or a 5xx into a banner that says what to check, instead
of a traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st

from shoal import Client, Explanation, Forbidden, RequestTimeout, ShoalError, Unauthorized, Unavailable
from shoal.core.dashboard_settings import DashboardSettings
from shoal.dashboard import session
from shoal.dashboard.auth import User
from shoal.dashboard.untrusted import markdown_text
from shoal.sdk.answers import detail_text

DEFAULT_API_URL = "http://127.0.0.1:8000"
OUTCOME = "_outcome"  # (kind, message, shown until on the monotonic clock)
OUTCOME_SHOWN_S = 12.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ApiTarget:
    url: str
    token: str | None
    timeout_s: float
    actor: str | None = None  # the person actions are recorded for (`shoal.Client(actor=...)`)


def target_from_env(user: User | None = None) -> ApiTarget:
    """Where to find the API, and with which token for `user`; read on each call so a changed
    environment applies.

    Viewers read with SHOAL_API_READ_TOKEN when there is one, so even a page bug cannot make
    them change anything. Everyone else uses the dashboard's own token (SHOAL_API_DASHBOARD_TOKEN,
    which may name the person acting), else SHOAL_API_TOKEN (then the audit says `admin`).
    """
    env = os.environ
    url = env.get("SHOAL_API_URL", "").strip() or DEFAULT_API_URL
    dashboard_token = env.get("SHOAL_API_DASHBOARD_TOKEN", "").strip() or None
    read_token = env.get("SHOAL_API_READ_TOKEN", "").strip() or None
    admin_token = env.get("SHOAL_API_TOKEN", "").strip() or None
    timeout_s = DashboardSettings().dashboard_timeout_s
    if user is not None and not user.may_act and read_token:
        return ApiTarget(url.rstrip("/"), read_token, timeout_s)
    token = dashboard_token or admin_token
    # Only the dashboard's token may name a person (the API refuses it from any other token).
    names_people = dashboard_token is not None or token is None
    actor = user.name if user is not None and user.via in ("account", "proxy") and names_people else None
    return ApiTarget(url.rstrip("/"), token, timeout_s, actor)


class ApiProblem(Exception):
    """A failed API call, already put in words for the banner."""

    def __init__(self, message: str, status: int | None = None, kind: str = "http") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind  # unreachable | timeout | auth | http | unexpected

    @property
    def blocks_everything(self) -> bool:
        """True when no other call can succeed either (nothing to gain by making them)."""
        return self.kind in ("unreachable", "timeout", "auth")


def describe(error: BaseException, target: ApiTarget, action: str) -> ApiProblem:
    """What went wrong with `action` and what to check, for any error a call can raise."""
    if isinstance(error, ApiProblem):
        return error
    if isinstance(error, RequestTimeout):
        return ApiProblem(
            f"The API at {target.url} did not answer within {target.timeout_s:g} s while {action}. "
            "The scheduler may be overloaded or Redis slow: check their logs and GET /readyz.",
            kind="timeout",
        )
    if isinstance(error, Unavailable) and not error.status:
        return ApiProblem(
            f"Cannot reach the Shoal API at {target.url} while {action}. "
            "Is the scheduler running (`make up`, or `uvicorn shoal.scheduler.main:app`)? "
            "Is SHOAL_API_URL right?",
            kind="unreachable",
        )
    if isinstance(error, ShoalError) and error.status:
        status = error.status
        detail = detail_text(error.detail)
        if isinstance(error, Forbidden):  # a known token that may not do this (a viewer's read token)
            return ApiProblem(f"The API refused this ({action}): {detail}", status)
        if isinstance(error, Unauthorized):
            return ApiProblem(
                f"The API at {target.url} refused the dashboard's token ({status}) while {action}. "
                "Give the dashboard the scheduler's SHOAL_API_DASHBOARD_TOKEN (or SHOAL_API_TOKEN).",
                status,
                "auth",
            )
        if status == 404:
            return ApiProblem(f"Not found while {action}: {detail}", status)
        if status == 409:
            return ApiProblem(f"Not possible now ({action}): {detail}", status)
        if status in (413, 422):
            return ApiProblem(f"The API refused the request ({action}): {detail}", status)
        if status >= 500:
            return ApiProblem(
                f"The API failed ({status}) while {action}: {detail}. "
                "Check the scheduler's logs and that Redis is up (GET /readyz).",
                status,
            )
        return ApiProblem(f"The API answered {status} while {action}: {detail}", status)
    return ApiProblem(f"Unexpected error while {action}: {type(error).__name__}: {error}", kind="unexpected")


@st.cache_resource(max_entries=64, show_spinner=False, on_release=lambda c: c.close())
def _shared_client(url: str, token: str | None, timeout_s: float, actor: str | None) -> Client:
    # One keep-alive pool per API target and person for every browser session of this dashboard.
    # "" rather than None for no token: the client would otherwise read the environment itself.
    # No retries: a page shows what failed at once and the next refresh asks again.
    return Client(url, token=token or "", timeout_s=timeout_s, retries=0, actor=actor)


def client() -> Client:
    """The client of the API this session talks to (settings read again on each call)."""
    user = session.current_user()
    if user is None:  # signed out in another tab, expired, or the account changed
        raise ApiProblem("Your sign-in has ended: reload the page to sign in again.", kind="auth")
    target = target_from_env(user)
    st.session_state["_shoal_target"] = target
    return _shared_client(target.url, target.token, target.timeout_s, target.actor)


def target() -> ApiTarget:
    return st.session_state.get("_shoal_target") or target_from_env()


def attempt(action: str, call: Callable[[Client], T]) -> T:
    """Run `call` with this session's client; any failure becomes an `ApiProblem` about `action`."""
    try:
        return call(client())
    except Exception as e:  # every failure is shown as a banner, never as a traceback
        raise describe(e, target(), action) from e


def attempt_or_banner(action: str, call: Callable[[Client], T]) -> T | None:
    """Like `attempt`, but shows the problem as an error banner and returns None."""
    try:
        return attempt(action, call)
    except ApiProblem as problem:
        st.error(markdown_text(problem.message), icon=":material/error:")
        return None


def explanation(task_id: str) -> Explanation | None:
    """The API's answer to "why is this task not running?", or None when it could not give one."""
    try:
        return attempt(f"explaining {task_id}", lambda c: c.explain(task_id))
    except ApiProblem:
        return None


def act(action: str, call: Callable[[Client], Any], done: str, key: str = OUTCOME) -> None:
    """A button's callback: run `call`, and leave the outcome under `key` for `show_outcome`.

    Callbacks run before the page is drawn again, so the page shows the state after the action.
    Viewers never act: pages disable their buttons, and this refuses whatever a page forgot.
    """
    if not session.may_act():
        leave_outcome(key, "error", "Only operators may do this: you are signed in as a viewer.")
        return
    try:
        attempt(action, call)
    except ApiProblem as problem:
        leave_outcome(key, "error", problem.message)
    else:
        leave_outcome(key, "success", done)
    st.session_state.pop("_snapshot", None)  # the next look at the API must see the change


def leave_outcome(key: str, kind: str, message: str) -> None:
    """Leave an outcome ("error" or "success") under `key` for `show_outcome` to display."""
    st.session_state[key] = (kind, message, time.monotonic() + OUTCOME_SHOWN_S)


def show_outcome(key: str = OUTCOME) -> None:
    """The result of the last action left under `key`, for `OUTCOME_SHOWN_S` after it.

    Shown for a time rather than for one run: live pages draw themselves again every few
    seconds, and a run that a newer one interrupts would otherwise take the message with it.
    """
    outcome = st.session_state.get(key)
    if outcome is None:
        return
    kind, message, until = outcome
    if time.monotonic() >= until:
        del st.session_state[key]
        return
    # Outcomes quote the API's answer and the ids acted on: text, never markup.
    if kind == "error":
        st.error(markdown_text(message), icon=":material/error:")
    else:
        st.success(markdown_text(message), icon=":material/check_circle:")
