"""A running task's progress (what it reported with `shoal.progress`) on the Tasks page.

The message is the task's own text: in the table it is a cell (never parsed), beside the bar
it goes through `markdown_text`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from shoal.dashboard import format as fmt
from shoal.dashboard.untrusted import markdown_text


def current(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The progress of the task's running attempt; None when it is not running or has not reported."""
    report: Mapping[str, Any] | None = task.get("progress")
    if task.get("state") != "running" or not report or report.get("attempt") != task.get("attempts"):
        return None
    return report


def fraction(task: Mapping[str, Any]) -> float | None:
    """The table's progress cell: how far the running attempt is (0..1), else empty."""
    report = current(task)
    return None if report is None else float(report["fraction"])


def message(task: Mapping[str, Any]) -> str:
    """The table's "doing" cell: what the running attempt last said it was doing."""
    report = current(task)
    return "" if report is None else report.get("message") or ""


def bar(task: Mapping[str, Any]) -> None:
    """The detail panel's progress bar with the task's message and how old the report is."""
    report = current(task)
    if report is None:
        return
    percent = f"{float(report['fraction']):.0%}"
    said = f" · {markdown_text(report['message'])}" if report.get("message") else ""
    st.progress(
        float(report["fraction"]), text=f"{percent}{said} · reported {fmt.ago(report.get('at'), time.time())}"
    )
