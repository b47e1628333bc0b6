"""Limits: the concurrency and rate limits of queues, task names and flow keys, and their use now."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pandas as pd
import streamlit as st

from shoal.dashboard import api, live, session
from shoal.dashboard import format as fmt
from shoal.dashboard.untrusted import markdown_text

API = "/api/v1/limits"

st.title("Limits")
st.caption(
    "Never more than N tasks of a scope running at once, at most N starts per period: the claim "
    "script enforces them, and a task over a limit waits without blocking the ones behind it."
)


def _path(scope: str) -> str:
    return f"{API}/{quote(scope, safe=':*')}"


def _row(limit: dict[str, Any], now: float) -> dict[str, Any]:
    concurrency, running = limit.get("concurrency"), limit.get("running", 0)
    rate = limit.get("rate")
    until = rate.get("limited_until") if rate else None
    return {
        "scope": limit["scope"],
        "running": f"{running} of {concurrency}" if concurrency is not None else f"{running} (no cap)",
        "use": (min(1.0, running / concurrency) if concurrency else (1.0 if concurrency == 0 else None)),
        "rate": f"{rate['started']} of {rate['limit']} per {rate['period_s']:g} s" if rate else "—",
        "rate limited": f"until {fmt.clock(until)} ({fmt.ago(until, now)})" if until and until > now else "",
        "weight": limit.get("weight", 1),
        "busiest keys": ", ".join(f"{k} ({n})" for k, n in list((limit.get("keys") or {}).items())[:5]),
    }


@st.fragment(run_every=live.interval_s())
def limits_page() -> None:
    answer = api.attempt_or_banner("reading the limits", lambda c: c.request("GET", API))
    if answer is None:
        return
    limits = answer.get("limits") or []
    if not limits:
        st.info(
            "No limit is set. Set one with `PUT /api/v1/limits/<scope>` (queue:<queue>, name:<task>, "
            "key:<flow key> or key:<prefix>:*).",
            icon=":material/tune:",
        )
        return
    now = time.time()
    at_cap = sum(
        1 for lim in limits if lim.get("concurrency") is not None and lim["running"] >= lim["concurrency"]
    )
    limited = sum(1 for lim in limits if ((lim.get("rate") or {}).get("limited_until") or 0) > now)
    cols = st.columns(3)
    cols[0].metric("Limits", len(limits), border=True)
    cols[1].metric("At their concurrency cap", at_cap, border=True)
    cols[2].metric("Rate limited now", limited, border=True)
    # Scopes and keys are anyone's names: table cells, never Markdown.
    st.dataframe(
        pd.DataFrame([_row(lim, now) for lim in limits]),
        hide_index=True,
        width="stretch",
        column_config={
            "use": st.column_config.ProgressColumn("use", format="percent", min_value=0, max_value=1),
        },
    )
    st.caption(f"updated {fmt.clock(now)}")
    _remove([lim["scope"] for lim in limits])


def _remove(scopes: list[str]) -> None:
    """Remove a scope's limits, in two steps: pick it, then confirm."""
    chosen = st.selectbox("Limit", scopes, index=None, placeholder="pick a limit to remove", key="lim_pick")
    if chosen is None:
        return
    viewer = not session.may_act()
    st.button(
        "Remove…", icon=":material/delete:", key="lim_remove", disabled=viewer,
        help="Operators only: you are signed in as a viewer." if viewer else None,
        on_click=st.session_state.__setitem__, args=("lim_confirm", chosen),
    )  # fmt: skip
    if st.session_state.get("lim_confirm") != chosen:
        return
    st.warning(
        f"Remove the limits of **{markdown_text(chosen)}**? Its tasks then start without them.",
        icon=":material/warning:",
    )
    yes, no = st.columns(2)
    yes.button("Yes, remove them", type="primary", key="lim_remove_confirm", on_click=_delete, args=(chosen,))
    no.button("Keep them", key="lim_remove_keep", on_click=st.session_state.pop, args=("lim_confirm", None))


def _delete(scope: str) -> None:
    st.session_state.pop("lim_confirm", None)
    st.session_state.pop("lim_pick", None)
    api.act(
        f"removing the limits of {scope}",
        lambda c: c.request("DELETE", _path(scope)),
        f"Removed {scope}.",
    )


def set_form() -> None:
    with st.expander("Set a limit", icon=":material/tune:"):
        with st.form("lim_set", clear_on_submit=False, border=False):
            scope = st.text_input(
                "Scope",
                placeholder="queue:mail, name:send_email, key:tenant:42 or key:tenant:*",
                key="lim_scope",
            )
            left, middle, right = st.columns(3)
            concurrency = left.text_input("Running at once (blank: no cap)", key="lim_concurrency")
            rate = middle.text_input("Starts per period (blank: no rate)", key="lim_rate")
            period = right.text_input("Period (seconds)", value="60", key="lim_period")
            weight = left.number_input("Weight (flow keys)", min_value=1, value=1, step=1, key="lim_weight")
            submitted = st.form_submit_button("Set", type="primary", disabled=not session.may_act())
        if submitted:
            _put(scope.strip(), concurrency.strip(), rate.strip(), period.strip(), int(weight))


def _put(scope: str, concurrency: str, rate: str, period: str, weight: int) -> None:
    body: dict[str, Any] = {"weight": weight}
    try:
        if concurrency:
            body["concurrency"] = int(concurrency)
        if rate:
            body["rate"] = {"limit": int(rate), "period_s": float(period)}
    except ValueError:
        st.error(
            "Running at once and starts are whole numbers; the period is seconds.", icon=":material/error:"
        )
        return
    if not scope:
        st.error("Name the scope the limit applies to.", icon=":material/error:")
        return
    api.act(
        f"setting the limits of {scope}",
        lambda c: c.request("PUT", _path(scope), body=body),
        f"Set {scope}.",
    )
    st.rerun()  # draw the page again with the outcome and the limit


api.show_outcome()
limits_page()
set_form()
