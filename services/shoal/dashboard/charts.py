"""Altair charts of the dashboard: every chart built from a plain frame, coloured by state the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import altair as alt
import pandas as pd

from shoal.dashboard.format import STATE_COLORS, STATE_ORDER

HEIGHT = 260  # the whole chart, legend and axes included (Streamlit fits it)
FINISHED = ("succeeded", "failed", "upstream_failed", "cancelled")
ACTIVE = ("pending", "scheduled", "queued", "running")


def _state_scale(states: Iterable[str]) -> alt.Scale:
    states = list(states)
    return alt.Scale(domain=states, range=[STATE_COLORS[s] for s in states])


def _time_axis(title: str | None = None) -> alt.X:
    return alt.X("time:T", title=title, axis=alt.Axis(format="%H:%M:%S", labelAngle=0, tickCount=5))


BUCKET_S = 10


def throughput_frame(stats: Mapping[str, Any], now: float | None = None) -> pd.DataFrame:
    """Finished tasks per second by state, per 10-second bucket, from the API's `throughput.series`.

    With `now`, the bucket still filling is left out: drawn, it would look like a sudden drop.
    """
    series = list((stats.get("throughput") or {}).get("series") or [])
    if now is not None:
        series = [bucket for bucket in series if bucket["ts"] + BUCKET_S <= now]
    # Leading idle buckets only squeeze the interesting part; keep at least the last minute.
    while len(series) > 6 and not any(series[0].get(state) for state in FINISHED):
        series.pop(0)
    rows = []
    for bucket in series:
        time = pd.Timestamp.fromtimestamp(bucket["ts"])
        for state in FINISHED:
            rows.append({"time": time, "state": state, "per_s": bucket.get(state, 0) / BUCKET_S})
    return pd.DataFrame(rows, columns=["time", "state", "per_s"])


def failure_rate_frame(throughput: pd.DataFrame) -> pd.DataFrame:
    """Share of finished tasks that failed (for good), per bucket; empty buckets are left out."""
    if throughput.empty:
        return pd.DataFrame(columns=["time", "failure_rate"])
    wide = throughput.pivot_table(index="time", columns="state", values="per_s", aggfunc="sum").fillna(0)
    failed = wide.get("failed", 0) + wide.get("upstream_failed", 0)
    done = failed + wide.get("succeeded", 0)
    rate = (failed / done.where(done > 0)).dropna()
    return pd.DataFrame({"time": rate.index, "failure_rate": rate.to_numpy()})


def throughput_chart(frame: pd.DataFrame) -> alt.Chart:
    present = [s for s in FINISHED if s in set(frame["state"])] or list(FINISHED)
    return (
        alt.Chart(frame)
        .mark_area(interpolate="monotone", opacity=0.85)
        .encode(
            x=_time_axis(),
            y=alt.Y("per_s:Q", stack="zero", title="tasks / s"),
            color=alt.Color(
                "state:N", scale=_state_scale(present), legend=alt.Legend(orient="top", title=None)
            ),
            order=alt.Order("state:N"),
            tooltip=[
                alt.Tooltip("time:T", format="%H:%M:%S"),
                "state:N",
                alt.Tooltip("per_s:Q", format=".1f"),
            ],
        )
        .properties(height=HEIGHT)
    )


def failure_rate_chart(frame: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(frame).encode(
        x=_time_axis(),
        y=alt.Y(
            "failure_rate:Q", title="failed share", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])
        ),
        tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), alt.Tooltip("failure_rate:Q", format=".1%")],
    )
    line = base.mark_line(color=STATE_COLORS["failed"], strokeWidth=2)
    dots = base.mark_circle(color=STATE_COLORS["failed"], size=30)
    return (line + dots).properties(height=HEIGHT)


def states_chart(frame: pd.DataFrame) -> alt.Chart:
    """Tasks in the system (not yet finished) by state over time, stacked."""
    present = [s for s in ACTIVE if s in set(frame["series"])] or list(ACTIVE)
    data = frame[frame["series"].isin(ACTIVE)]
    return (
        alt.Chart(data)
        .mark_area(interpolate="monotone", opacity=0.85)
        .encode(
            x=_time_axis(),
            y=alt.Y("value:Q", stack="zero", title="tasks"),
            color=alt.Color(
                "series:N", scale=_state_scale(present), legend=alt.Legend(orient="top", title=None)
            ),
            tooltip=[
                alt.Tooltip("time:T", format="%H:%M:%S"),
                alt.Tooltip("series:N", title="state"),
                "value:Q",
            ],
        )
        .properties(height=HEIGHT)
    )


def stacked_area(frame: pd.DataFrame, title: str, legend_title: str | None = None) -> alt.Chart:
    """Any long (time, series, value) frame as stacked areas, one colour per series."""
    return (
        alt.Chart(frame)
        .mark_area(interpolate="monotone", opacity=0.85, line=True)
        .encode(
            x=_time_axis(),
            y=alt.Y("value:Q", stack="zero", title=title),
            color=alt.Color(
                "series:N",
                legend=alt.Legend(orient="top", title=legend_title),
                scale=alt.Scale(scheme="tableau10"),
            ),
            tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), "series:N", "value:Q"],
        )
        .properties(height=HEIGHT)
    )


def lines(frame: pd.DataFrame, title: str, value_format: str = "") -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_line(interpolate="monotone", strokeWidth=2)
        .encode(
            x=_time_axis(),
            y=alt.Y("value:Q", title=title),
            color=alt.Color(
                "series:N", legend=alt.Legend(orient="top", title=None), scale=alt.Scale(scheme="tableau10")
            ),
            tooltip=[
                alt.Tooltip("time:T", format="%H:%M:%S"),
                "series:N",
                alt.Tooltip("value:Q", format=value_format),
            ],
        )
        .properties(height=HEIGHT)
    )


def priority_bars(queues: list[dict[str, Any]]) -> alt.Chart:
    """Ready tasks per queue, split by priority (darker = higher)."""
    rows = [
        {"queue": q["name"], "priority": int(p), "ready": n}
        for q in queues
        for p, n in (q.get("by_priority") or {}).items()
        if n
    ]
    frame = pd.DataFrame(rows, columns=["queue", "priority", "ready"])
    return (
        alt.Chart(frame)
        .mark_bar(cornerRadiusEnd=3)
        .encode(
            y=alt.Y("queue:N", title=None, sort="-x"),
            x=alt.X("sum(ready):Q", title="ready tasks"),
            color=alt.Color(
                "priority:O",
                scale=alt.Scale(scheme="oranges"),
                legend=alt.Legend(orient="top", title="priority"),
            ),
            order=alt.Order("priority:O", sort="descending"),
            tooltip=["queue:N", "priority:O", "ready:Q"],
        )
        .properties(height=alt.Step(30))  # a fixed height collapses under a top legend
    )


REPLICA_SERIES = ("desired", "replicas", "workers up")


def replicas_frame(
    history: list[dict[str, Any]], samples: Iterable[dict[str, Any]], now: float
) -> pd.DataFrame:
    """Desired replicas and the replicas seen at each autoscaler decision (`history` is newest first,
    as the API gives it), and the live workers seen by this session; decision lines reach `now`."""
    rows: list[dict[str, Any]] = []
    decisions = sorted(history, key=lambda d: d["ts"])
    for d in decisions:
        time = pd.Timestamp.fromtimestamp(d["ts"])
        rows.append({"time": time, "series": "desired", "value": d["desired"]})
        rows.append({"time": time, "series": "replicas", "value": d["current"]})
    if decisions:
        time = pd.Timestamp.fromtimestamp(max(now, decisions[-1]["ts"]))
        rows.append({"time": time, "series": "desired", "value": decisions[-1]["desired"]})
        rows.append({"time": time, "series": "replicas", "value": decisions[-1]["current"]})
    for s in samples:
        if "workers" in s:
            rows.append(
                {"time": pd.Timestamp.fromtimestamp(s["ts"]), "series": "workers up", "value": s["workers"]}
            )
    return pd.DataFrame(rows, columns=["time", "series", "value"])


def replicas_chart(frame: pd.DataFrame) -> alt.Chart:
    """Desired replicas (dashed), replicas set on the backend, and workers actually up, as steps."""
    return (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", strokeWidth=2.5)
        .encode(
            x=_time_axis(),
            y=alt.Y("value:Q", title="workers", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(
                "series:N",
                scale=alt.Scale(domain=list(REPLICA_SERIES), range=["#7c3aed", "#2d8cf0", "#2fb380"]),
                legend=alt.Legend(orient="top", title=None),
            ),
            strokeDash=alt.StrokeDash(
                "series:N",
                scale=alt.Scale(domain=list(REPLICA_SERIES), range=[[6, 4], [1, 0], [2, 2]]),
                legend=None,
            ),
            tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), "series:N", "value:Q"],
        )
        .properties(height=HEIGHT)
    )


def _attempt_list(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Finished attempts from the history, then the current one if it started and is not listed."""
    listed = [dict(a) for a in task.get("history") or []]
    current = task.get("attempts") or 0
    if task.get("started_at") and current and current not in {a.get("attempt") for a in listed}:
        running = task.get("state") == "running"
        listed.append(
            {
                "attempt": current,
                "worker_id": task.get("worker_id"),
                "state": "running" if running else task.get("state"),
                "error": None if running else task.get("error"),
                "started_at": task["started_at"],
                "finished_at": None if running else task.get("finished_at"),
            }
        )
    return sorted(listed, key=lambda a: a.get("attempt") or 0)


def timeline_frame(task: Mapping[str, Any], now: float) -> pd.DataFrame:
    """One lane per attempt: the wait before it (queue, or retry backoff), then its run coloured
    by outcome; a task that never started gets one lane of waiting up to now (or its end)."""
    rows: list[dict[str, Any]] = []

    def span(lane: str, start: float | None, end: float | None, kind: str, detail: str) -> None:
        if start is None:
            return
        finish = max(end if end is not None else now, start)
        rows.append(
            {
                "lane": lane,
                "start": pd.Timestamp.fromtimestamp(start),
                "end": pd.Timestamp.fromtimestamp(finish),
                "kind": kind,
                "detail": detail,
                "seconds": round(finish - start, 3),
            }
        )

    previous_end = task.get("created_at")
    attempts = _attempt_list(task)
    for attempt in attempts:
        lane = f"attempt {attempt.get('attempt')}"
        started = attempt.get("started_at")
        first = attempt is attempts[0]
        span(lane, previous_end, started, "waiting", "in the queue" if first else "retry backoff and queue")
        outcome = attempt.get("state") or "failed"
        worker = attempt.get("worker_id") or "?"
        span(
            lane, started, attempt.get("finished_at"), outcome, f"{worker}: {attempt.get('error') or outcome}"
        )
        previous_end = attempt.get("finished_at") or previous_end
    if not attempts:
        span("waiting", task.get("created_at"), task.get("finished_at"), "waiting", task.get("state", ""))
    elif task.get("state") in ("scheduled", "queued"):
        # Waiting for the next attempt now: the retry backoff, then the queue.
        next_attempt = (attempts[-1].get("attempt") or 0) + 1
        span(f"attempt {next_attempt}", previous_end, None, "waiting", "retry backoff and queue")
    return pd.DataFrame(rows, columns=["lane", "start", "end", "kind", "detail", "seconds"])


def timeline_chart(frame: pd.DataFrame) -> alt.LayerChart:
    kinds = list(dict.fromkeys(frame["kind"]))
    colors = {
        **STATE_COLORS, "waiting": "#cbd5e1", "handed_back": "#f2b134", "reaped": "#f76808",
        "retried": "#b39ddb",
    }  # fmt: skip
    scale = alt.Scale(domain=kinds, range=[colors.get(k, "#9aa5b1") for k in kinds])
    tooltip: list[str | alt.Tooltip] = [
        "lane:N",
        "kind:N",
        "detail:N",
        alt.Tooltip("seconds:Q", title="seconds"),
    ]
    base = alt.Chart(frame).encode(
        y=alt.Y("lane:N", title=None, sort=None),
        color=alt.Color("kind:N", scale=scale, legend=alt.Legend(orient="top", title=None)),
        tooltip=tooltip,
    )
    bars = base.mark_bar(cornerRadius=4, height=16).encode(
        x=alt.X("start:T", title=None, axis=alt.Axis(format="%H:%M:%S", labelAngle=0)), x2="end:T"
    )
    # A run of a few milliseconds is too thin to see as a bar: mark where each run started.
    starts = base.transform_filter(alt.datum.kind != "waiting").mark_point(
        filled=True, size=90, shape="diamond"
    )
    starts = starts.encode(x="start:T")
    return (bars + starts).properties(height=alt.Step(30))


def slots_chart(workers: list[dict[str, Any]]) -> alt.Chart:
    """Busy and free slots per live worker, as one horizontal stacked bar each."""
    rows = []
    for w in workers:
        busy = min(int(w.get("running", 0)), int(w.get("concurrency", 0)))
        rows.append({"worker": w["id"], "slots": "busy", "n": busy})
        rows.append({"worker": w["id"], "slots": "free", "n": int(w.get("concurrency", 0)) - busy})
    frame = pd.DataFrame(rows, columns=["worker", "slots", "n"])
    return (
        alt.Chart(frame)
        .mark_bar(cornerRadiusEnd=3)
        .encode(
            y=alt.Y("worker:N", title=None),
            x=alt.X("n:Q", title="slots", stack="zero", axis=alt.Axis(tickMinStep=1, format="d")),
            color=alt.Color(
                "slots:N",
                scale=alt.Scale(domain=["busy", "free"], range=[STATE_COLORS["running"], "#cfd6e1"]),
                legend=alt.Legend(orient="top", title=None),
            ),
            order=alt.Order("slots:N"),
            tooltip=["worker:N", "slots:N", "n:Q"],
        )
        .properties(height=alt.Step(26))
    )


def state_order_key(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)
