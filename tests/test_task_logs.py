"""A task's own output, per attempt: captured from async, thread and process tasks (bounded, the cut
marked), one INFO line per transition the worker sees, stored with the attempt, answered by the
API and printed by `shoal logs`, with a real worker process."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import worker_tasks  # noqa: F401 - registers the talking tasks
from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer
from dashboard_support import wait_until, worker_process
from shoal import task_request
from shoal.core.models import Outcome, TaskSpec
from shoal.core.registry import default_registry
from shoal.core.store import KEPT_ATTEMPT_LOGS, Store
from shoal.worker.bounds import OutcomeBounds
from shoal.worker.executor import Executor
from test_worker_executor import claimed

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(default_registry, threads=2, processes=1, bounds=OutcomeBounds(max_log_chars=1024))
    yield ex
    await ex.close()


async def test_async_thread_and_process_tasks_have_their_output_captured(executor: Executor) -> None:
    ok = await executor.run(claimed("talk_async", 3))
    assert ok.ok and ok.logs is not None
    assert [line for line in ok.logs.splitlines() if line.startswith("async line")] == [
        "async line 0",
        "async line 1",
        "async line 2",
    ]
    assert "WARNING worker_tasks.talk: async says hello" in ok.logs
    assert (
        "started" not in ok.logs and "succeeded" not in ok.logs
    )  # the worker's own lines are not the task's

    failed = await executor.run(claimed("talk_thread", 20))
    assert not failed.ok and failed.logs is not None
    assert "x" * 20 in failed.logs and "ERROR worker_tasks.talk: thread says boom" in failed.logs

    process = await executor.run(claimed("talk_process"))
    assert process.ok and process.logs is not None
    assert "from the pool process" in process.logs and "process logs too" in process.logs

    quiet = await executor.run(claimed("noop"))
    assert quiet.ok and quiet.logs is None


async def test_output_past_the_bound_is_cut_and_the_cut_marked(executor: Executor) -> None:
    outcome = await executor.run(claimed("talk_thread", 5000))
    assert outcome.logs is not None
    kept, _, marker = outcome.logs.rpartition("\n[... ")
    assert len(kept) == 1024 and kept == "x" * 1024
    cut = int(marker.split(" ")[0])
    assert cut > 5000 - 1024  # the rest of the line and the log record


async def test_one_info_line_per_transition(executor: Executor, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="shoal.tasks"):
        task = claimed("talk_async", 1)
        await executor.run(task)
        failing = claimed("talk_thread", 1)
        await executor.run(failing)
        retrying = claimed("retry_later", 4)
        await executor.run(retrying)
    lines = [(r.getMessage(), r.__dict__) for r in caplog.records if r.name == "shoal.tasks"]
    messages = [m for m, _ in lines]
    assert messages[0].startswith(f"task talk_async[{task.id}] started: attempt 1, queue q, waited ")
    assert messages[1].startswith(f"task talk_async[{task.id}] succeeded in ")
    assert messages[3].startswith(f"task talk_thread[{failing.id}] failed in ")
    assert messages[3].endswith("ValueError: thread task failed after talking")
    assert messages[5].startswith(f"task retry_later[{retrying.id}] retrying in 4 s")
    for _, fields in lines:
        assert {"task_id", "task", "attempt"} <= set(fields)


async def test_a_failed_attempt_says_when_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    ex = Executor(default_registry, threads=2, processes=1, backoff=lambda attempt: 2.5 * attempt)
    try:
        with caplog.at_level(logging.INFO, logger="shoal.tasks"):
            first = dataclasses.replace(claimed("talk_thread", 1), attempt=1, attempt_limit=3)
            early = await ex.run(first)
            last = dataclasses.replace(claimed("talk_thread", 1), attempt=3, attempt_limit=3)
            final = await ex.run(last)
    finally:
        await ex.close()
    failed = [
        r.getMessage() for r in caplog.records if r.name == "shoal.tasks" and " failed in " in r.getMessage()
    ]
    assert failed[0].endswith("talking; retrying in 2.5 s (attempt 1 of 3)"), failed[0]
    assert early.retry_delay_s == 2.5, "the delay the line names is the one the store is given"
    assert failed[1].endswith("talking (no retries left: attempt 3 of 3)"), failed[1]
    assert final.retry_delay_s is None


async def test_the_store_keeps_the_last_attempts_for_the_retention(store: Store) -> None:
    (task,) = await store.submit(
        [TaskSpec("noop", id=os.urandom(16).hex(), max_retries=KEPT_ATTEMPT_LOGS + 5)]
    )
    for n in range(1, KEPT_ATTEMPT_LOGS + 3):
        (attempt,) = await store.claim("w1", ["default"], 1)
        await store.save_attempt_logs([(task.id, attempt.attempt, f"attempt {n}\n")])
        await store.complete(
            "w1", [Outcome(task.id, attempt.attempt, ok=n == KEPT_ATTEMPT_LOGS + 2, error="x")]
        )
    kept = await store.attempt_logs(task.id)
    assert list(kept) == list(range(3, KEPT_ATTEMPT_LOGS + 3))
    assert kept[KEPT_ATTEMPT_LOGS + 2] == f"attempt {KEPT_ATTEMPT_LOGS + 2}\n"
    assert await store.trim_retention(now_s=time.time() + store.settings.retention_s + 1) == 1
    assert await store.attempt_logs(task.id) == {}
    assert await store.redis.hlen(store.keys.task_logs) == 0  # gone with the task


def test_a_real_worker_stores_each_attempts_output_for_the_api_and_the_cli(
    api: ApiServer, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with api.client() as client:
        task = client.submit_request(task_request("talk_async", [2]))
        failing = client.submit_request(task_request("talk_thread", [5], max_retries=1))
        with worker_process(
            client,
            redis_url,
            namespace,
            tmp_path / "worker.log",
            task_modules="worker_tasks",
            log_level="INFO",
        ):
            assert client.wait(task["id"], timeout_s=30)["state"] == "succeeded"
            assert client.wait(failing["id"], timeout_s=30)["state"] == "failed"
    answer = httpx.get(f"{api.url}/api/v1/tasks/{task['id']}/logs").json()
    assert [a["attempt"] for a in answer["attempts"]] == [1]
    assert "async line 1" in answer["attempts"][0]["text"] and answer["attempts"][0]["cut_chars"] == 0
    both = wait_until(lambda: httpx.get(f"{api.url}/api/v1/tasks/{failing['id']}/logs").json()["attempts"])
    assert [a["attempt"] for a in both] == [1, 2] and all("xxxxx" in a["text"] for a in both)
    assert httpx.get(f"{api.url}/api/v1/tasks/no-such-task/logs").status_code == 404

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shown = subprocess.run(
        [sys.executable, "-m", "shoal", "--api", api.url, "logs", failing["id"], "--attempt", "2"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("--- attempt 2 ---\n") and "thread says boom" in shown.stdout
    assert "--- attempt 1 ---" not in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "shoal", "--api", api.url, "--json", "logs", task["id"]],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert '"async line 0' in as_json.stdout and '"cut_chars": 0' in as_json.stdout
    worker_log = (tmp_path / "worker.log").read_text()
    assert f"task talk_async[{task['id']}] succeeded in" in worker_log
