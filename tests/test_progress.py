"""Task progress end to end on real Redis: `shoal.progress()` inside async, thread and process
tasks of an in-process worker, stored with the task by the fenced script, shown in the API's
task JSON (one task and the list) and published as a `progress` event (the stream, and the
SSE endpoint). Reports of an attempt that is over are refused, and the retention trim takes
a task's progress with it."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import httpx
import pytest

import worker_tasks  # noqa: F401 - registers the progress tasks
from api_fixtures import *  # noqa: F403 - the api / client fixtures
from api_fixtures import ApiServer
from shoal import progress
from shoal.core.progress import MAX_MESSAGE_CHARS, ProgressReport, checked, reporting
from shoal.core.store import Store
from shoal.worker import metrics
from store_helpers import claim_one, eventually, must_get, ok, register, submit
from test_worker_runtime import running_worker, wait_terminal

HANG_GUARD_S = 60  # a wait, not a bound: a loaded machine only makes these slower


def test_a_report_is_a_fraction_from_0_to_1_and_a_bounded_message() -> None:
    assert checked(0) == ProgressReport(0.0, None)
    assert checked(1, "done") == ProgressReport(1.0, "done")
    assert checked(0.25, "") == ProgressReport(0.25, None)
    long = checked(0.5, "x" * 5000).message
    assert long is not None and len(long) == MAX_MESSAGE_CHARS and long.endswith("…")
    for bad in (-0.01, 1.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="from 0 to 1"):
            checked(bad)
    for wrong in ("0.5", None, True):
        with pytest.raises(TypeError, match="must be a number"):
            checked(wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message must be a str"):
        checked(0.5, 7)  # type: ignore[arg-type]


def test_outside_a_running_attempt_a_report_goes_nowhere_and_says_so() -> None:
    assert progress(0.5, "called directly") is False
    got: list[ProgressReport] = []
    with reporting(got.append):
        assert progress(0.5, "inside") is True
    assert got == [ProgressReport(0.5, "inside")]
    assert progress(0.6) is False, "the sink ends with its context"


async def test_only_the_running_attempt_on_its_worker_may_report(store: Store) -> None:
    await register(store, "w1")
    task_id = await submit(store, "noop")
    claimed = await claim_one(store, "w1")
    report = ProgressReport(0.4, "step 2")
    assert await store.progress.report("w1", task_id, claimed.attempt, report)
    assert not await store.progress.report("w2", task_id, claimed.attempt, ProgressReport(0.9, "not mine"))
    assert not await store.progress.report("w1", task_id, claimed.attempt + 1, ProgressReport(0.9, "later"))
    assert not await store.progress.report("w1", "no-such-task", 1, report)
    stored = (await must_get(store, task_id)).progress
    assert stored is not None and (stored.attempt, stored.fraction, stored.message) == (1, 0.4, "step 2")

    events = [e for e in await store.recent_events(50) if e["kind"] == "progress"]
    assert [(e["id"], e["attempt"], e["fraction"], e["message"]) for e in events] == [
        (task_id, 1, 0.4, "step 2")
    ]

    assert await store.complete("w1", [ok(claimed)]) == [True]
    assert not await store.progress.report("w1", task_id, claimed.attempt, ProgressReport(1.0, "too late"))
    after = (await must_get(store, task_id)).progress
    assert after is not None and after.message == "step 2", "the attempt's last report stays with the task"


async def test_the_retention_trim_takes_the_progress_with_the_task(store: Store) -> None:
    await register(store, "w1")
    task_id = await submit(store, "noop")
    claimed = await claim_one(store, "w1")
    assert await store.progress.report("w1", task_id, claimed.attempt, ProgressReport(0.5))
    await store.complete("w1", [ok(claimed)])
    assert await store.trim_retention(now_s=time.time() + store.settings.retention_s + 60) >= 1
    assert await store.get(task_id) is None
    assert await store.redis.hexists(store.keys.progress, task_id) == 0


@pytest.mark.parametrize("name", ["progress_async", "progress_thread", "progress_process"])
async def test_a_running_task_reports_progress_seen_in_the_api_and_as_an_event(
    name: str, store: Store, namespace: str, api: ApiServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    written_before = metrics.PROGRESS["written"]
    async with running_worker(namespace) as worker, httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        task_id = await submit(store, name, args=[str(gate), 50])

        async def reported_last_step() -> bool:
            body = (await http.get(f"/api/v1/tasks/{task_id}")).json()
            return (body.get("progress") or {}).get("fraction") == 1.0

        # The task sends 50 reports in a burst: what is stored in the end is the last one.
        assert await eventually(reported_last_step, HANG_GUARD_S), "the last report never arrived"
        body = (await http.get(f"/api/v1/tasks/{task_id}")).json()
        assert body["state"] == "running"
        assert body["progress"]["message"] == "step 50 of 50" and body["progress"]["attempt"] == 1
        listed = (await http.get("/api/v1/tasks", params={"state": "running"})).json()["tasks"]
        assert [(t["id"], t["progress"]["fraction"]) for t in listed] == [(task_id, 1.0)]

        events = [e for e in await store.recent_events(200) if e["kind"] == "progress" and e["id"] == task_id]
        assert events, "published into the event stream"
        assert (events[-1]["fraction"], events[-1]["message"]) == (1.0, "step 50 of 50")
        fractions = [e["fraction"] for e in events]
        assert fractions == sorted(fractions), "merged reports never go back"
        assert 1 <= len(events) <= 50
        await worker.progress.idle()
        assert metrics.PROGRESS["written"] - written_before == len(events)

        gate.touch()
        (done,) = await wait_terminal(store, [task_id], HANG_GUARD_S)
    assert done.result == name.removeprefix("progress_")
    assert done.progress is not None and done.progress.fraction == 1.0


async def test_progress_events_reach_sse_clients(
    store: Store, namespace: str, api: ApiServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with running_worker(namespace), httpx.AsyncClient(base_url=api.url, timeout=HANG_GUARD_S) as http:
        async with http.stream("GET", "/api/v1/events", params={"since": "0"}) as stream:
            task_id = await submit(store, "progress_async", args=[str(gate), 1])
            seen: list[str] = []

            async def first_progress_event() -> str:
                kind = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: ") and kind == "progress":
                        return line.removeprefix("data: ")
                return ""

            seen.append(await asyncio.wait_for(first_progress_event(), HANG_GUARD_S))
        gate.touch()
        await wait_terminal(store, [task_id], HANG_GUARD_S)
    data = httpx.Response(200, content=seen[0]).json()
    assert (data["id"], data["fraction"], data["message"], data["attempt"]) == (
        task_id,
        1.0,
        "step 1 of 1",
        1,
    )


async def test_shoal_status_shows_the_progress_as_text(store: Store, api: ApiServer) -> None:
    from tests.test_cli import cli

    await register(store, "w1")
    task_id = await submit(store, "noop")
    claimed = await claim_one(store, "w1")
    report = ProgressReport(0.4, "step 2 \x1b[31mred\x1b[0m")
    assert await store.progress.report("w1", task_id, claimed.attempt, report)

    async def beat() -> None:  # w1 stays alive: the scheduler's leader would reap its task
        while True:
            await store.heartbeat("w1", [task_id])
            await asyncio.sleep(0.2)

    beating = asyncio.create_task(beat())
    try:
        shown = await asyncio.to_thread(cli, api.url, "status", task_id)
    finally:
        beating.cancel()
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("progress:"))
    assert "40% · step 2 ?[31mred?[0m (attempt 1, " in line, "no escape sequence reaches the terminal"
