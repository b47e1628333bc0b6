"""Turn API answers about tasks into the tables the Tasks page shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from shoal.dashboard import format as fmt
from shoal.dashboard import progress_view


def table(tasks: Sequence[Mapping[str, Any]], now: float) -> pd.DataFrame:
    """One row per task, newest first, with the columns an operator scans."""
    rows = []
    for t in tasks:
        started, finished = t.get("started_at"), t.get("finished_at")
        if finished and started:
            took = fmt.duration(started, finished)
        elif started and t.get("state") == "running":
            took = f"{fmt.duration(started, now)} so far"
        else:
            took = ""
        rows.append(
            {
                "state": fmt.state_label(t.get("state", "")),
                "name": t.get("name"),
                "id": t.get("id"),
                "queue": t.get("queue"),
                "priority": t.get("priority"),
                "attempts": f"{t.get('attempts', 0)}/{t.get('attempt_limit') or t.get('max_retries', 0) + 1}",
                "worker": t.get("worker_id") or "",
                "created": pd.Timestamp.fromtimestamp(t["created_at"]) if t.get("created_at") else pd.NaT,
                "run time": took,
                "progress": progress_view.fraction(t),
                "doing": progress_view.message(t),
                "error": (t.get("error") or "")[:120],
            }
        )
    columns = [
        "state",
        "name",
        "id",
        "queue",
        "priority",
        "attempts",
        "worker",
        "created",
        "run time",
        "progress",
        "doing",
        "error",
    ]
    return pd.DataFrame(rows, columns=columns)


def attempts(task: Mapping[str, Any], now: float) -> pd.DataFrame:
    """Every attempt with its worker, outcome and times; the current one last."""
    rows = []
    for a in task.get("history") or []:
        rows.append(
            {
                "attempt": a.get("attempt"),
                "worker": a.get("worker_id") or "",
                "outcome": a.get("state") or "",
                "started": fmt.clock(a.get("started_at")),
                "finished": fmt.clock(a.get("finished_at")),
                "took": fmt.duration(a.get("started_at"), a.get("finished_at")),
                "error": a.get("error") or "",
            }
        )
    listed = {r["attempt"] for r in rows}
    current = task.get("attempts") or 0
    if current and current not in listed and task.get("started_at"):
        running = task.get("state") == "running"
        rows.append(
            {
                "attempt": current,
                "worker": task.get("worker_id") or "",
                "outcome": "running" if running else task.get("state", ""),
                "started": fmt.clock(task.get("started_at")),
                "finished": "" if running else fmt.clock(task.get("finished_at")),
                "took": fmt.duration(task.get("started_at"), now if running else task.get("finished_at")),
                "error": "" if running else (task.get("error") or ""),
            }
        )
    return pd.DataFrame(
        rows, columns=["attempt", "worker", "outcome", "started", "finished", "took", "error"]
    )
