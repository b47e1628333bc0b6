"""The plain-words answer to "why is this task not running?" for every state and obstacle."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.core.models import Attempt, Task, WorkerInfo
from shoal.core.states import TaskState
from shoal.scheduler.explain import ScalingView, explain_task, humanize_seconds

NOW = 1_764_230_000.0


def make_task(state: TaskState, **fields: Any) -> Task:
    base: dict[str, Any] = {
        "id": "t1",
        "name": "echo",
        "state": state,
        "queue": "default",
        "priority": 0,
        "args": [],
        "kwargs": {},
        "depends_on": [],
        "deps_left": 0,
        "attempts": 0,
        "max_retries": 3,
        "timeout_s": 300.0,
        "created_at": NOW - 60,
    }
    base.update(fields)
    return Task(**base)


def make_worker(wid: str = "w1", **fields: Any) -> WorkerInfo:
    base: dict[str, Any] = {
        "id": wid,
        "host": "host",
        "queues": ["default"],
        "concurrency": 4,
        "task_names": ["echo", "sleep"],
        "version": "0.1.0",
        "pid": 1,
        "started_at": NOW - 100,
        "state": "active",
        "running": 0,
    }
    base.update(fields)
    return WorkerInfo(**base)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0.4 s"),
        (3, "3 s"),
        (42.4, "42 s"),
        (60, "1 min"),
        (185, "3 min 5 s"),
        (7200, "2 h"),
        (7800, "2 h 10 min"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_humanize_seconds(seconds: float, text: str) -> None:
    assert humanize_seconds(seconds) == text


def test_pending_names_the_unfinished_dependencies_and_their_states() -> None:
    task = make_task(TaskState.PENDING, depends_on=["a", "b", "c"], deps_left=2)
    deps = {"a": TaskState.SUCCEEDED, "b": TaskState.RUNNING, "c": TaskState.QUEUED}
    answer = explain_task(task, now=NOW, dependencies=deps)
    assert answer.code == "waiting_on_dependencies"
    assert answer.reason == "It is waiting on 2 of its 3 dependencies: b (running), c (queued)."
    assert answer.details["waiting_on"] == [{"id": "b", "state": "running"}, {"id": "c", "state": "queued"}]


def test_pending_with_many_dependencies_names_a_few_and_counts_the_rest() -> None:
    ids = [f"d{i}" for i in range(10)]
    task = make_task(TaskState.PENDING, depends_on=ids, deps_left=10)
    answer = explain_task(task, now=NOW, dependencies=dict.fromkeys(ids, TaskState.QUEUED))
    assert answer.reason.endswith("d3 (queued) and 6 more.")


def test_pending_without_dependency_states_uses_the_counter() -> None:
    task = make_task(TaskState.PENDING, depends_on=["a"], deps_left=1)
    answer = explain_task(task, now=NOW)
    assert answer.reason == "It is waiting on 1 of its 1 dependency to succeed."


def test_pending_with_a_failed_dependency_says_it_cannot_run() -> None:
    task = make_task(TaskState.PENDING, depends_on=["a", "b"], deps_left=2)
    answer = explain_task(task, now=NOW, dependencies={"a": TaskState.FAILED, "b": TaskState.QUEUED})
    assert answer.code == "dependency_failed"
    assert "a (failed)" in answer.reason


def test_pending_with_a_vanished_dependency_says_so() -> None:
    task = make_task(TaskState.PENDING, depends_on=["gone"], deps_left=1)
    answer = explain_task(task, now=NOW, dependencies={"gone": None})
    assert answer.code == "dependency_missing"
    assert "gone (gone) no longer exists" in answer.reason


def test_upstream_failed_names_the_culprit() -> None:
    task = make_task(TaskState.UPSTREAM_FAILED, depends_on=["a", "b"], deps_left=1)
    answer = explain_task(
        task, now=NOW, dependencies={"a": TaskState.SUCCEEDED, "b": TaskState.UPSTREAM_FAILED}
    )
    assert answer.code == "upstream_failed"
    assert "b (upstream_failed)" in answer.reason
    assert answer.details["failed_dependencies"] == [{"id": "b", "state": "upstream_failed"}]
    # b has a failed task above it: that is the one to retry with its dependents.
    assert answer.details["retry_with_dependents"] == []
    assert "find the task that failed first above it, and retry that one with its dependents" in answer.reason
    assert "resubmit" not in answer.reason


@pytest.mark.parametrize("dead", [TaskState.FAILED, TaskState.CANCELLED])
def test_upstream_failed_offers_the_retry_of_its_dependency_with_dependents(dead: TaskState) -> None:
    task = make_task(TaskState.UPSTREAM_FAILED, depends_on=["a", "b"], deps_left=1)
    answer = explain_task(task, now=NOW, dependencies={"a": TaskState.SUCCEEDED, "b": dead})
    assert answer.details["retry_with_dependents"] == ["b"]
    assert f"its dependency b ({dead}) did not succeed. Retry b with its dependents" in answer.reason
    assert "`shoal retry --dependents b`" in answer.reason and "resubmit" not in answer.reason


def test_retry_backoff_says_until_when_and_why() -> None:
    history = [Attempt(1, "w1", "failed", "ValueError: boom", NOW - 20, NOW - 19)]
    task = make_task(TaskState.SCHEDULED, attempts=1, scheduled_for=NOW + 12, history=history)
    answer = explain_task(task, now=NOW)
    assert answer.code == "retry_backoff"
    assert answer.reason == (
        "Attempt 1 of 4 failed (ValueError: boom); it is waiting out the retry backoff "
        "for another 12 s before it is queued again."
    )
    assert answer.details["until"] == NOW + 12


def test_delayed_task_says_when_it_joins_the_queue() -> None:
    task = make_task(TaskState.SCHEDULED, scheduled_for=NOW + 125)
    answer = explain_task(task, now=NOW)
    assert answer.code == "delayed"
    assert "in 2 min 5 s" in answer.reason


def test_overdue_scheduled_task_points_at_the_leader() -> None:
    task = make_task(TaskState.SCHEDULED, scheduled_for=NOW - 30)
    answer = explain_task(task, now=NOW)
    assert answer.code == "due"
    assert "leader" in answer.reason


def test_queued_with_no_workers_and_no_autoscaler_says_start_one() -> None:
    task = make_task(TaskState.QUEUED, queue="io")
    answer = explain_task(task, now=NOW, workers=[], ahead=3)
    assert answer.code == "no_workers"
    assert "SHOAL_QUEUES=io" in answer.reason
    assert "3 tasks of its priority or higher are ahead of it in queue 'io'." in answer.reason


def test_queued_with_workers_starting_says_the_autoscaler_is_on_it() -> None:
    task = make_task(TaskState.QUEUED)
    scaling = ScalingView(backend="kubernetes", current=0, desired=3)
    answer = explain_task(task, now=NOW, workers=[make_worker(state="lost")], scaling=scaling, ahead=0)
    assert answer.code == "scaling_up"
    assert "asked for 3 (now 0)" in answer.reason
    assert answer.reason.endswith("It is next in line.")


def test_queued_when_scaled_to_zero() -> None:
    task = make_task(TaskState.QUEUED)
    answer = explain_task(task, now=NOW, workers=[], scaling=ScalingView("local", 0, 0))
    assert answer.code == "scaled_to_zero"


def test_queued_on_a_queue_no_worker_serves() -> None:
    task = make_task(TaskState.QUEUED, queue="gpu")
    workers = [make_worker("w1", queues=["default"]), make_worker("w2", queues=["io", "default"])]
    answer = explain_task(task, now=NOW, workers=workers)
    assert answer.code == "no_worker_for_queue"
    assert "(they serve: default, io)" in answer.reason
    assert "SHOAL_QUEUES=gpu" in answer.reason


def test_queued_when_only_draining_workers_serve_the_queue() -> None:
    task = make_task(TaskState.QUEUED)
    answer = explain_task(task, now=NOW, workers=[make_worker(state="draining")])
    assert answer.code == "workers_draining"
    assert answer.details["draining_workers"] == ["w1"]


def test_queued_when_no_worker_knows_the_task_name() -> None:
    task = make_task(TaskState.QUEUED, name="train_model")
    answer = explain_task(task, now=NOW, workers=[make_worker(), make_worker("w2")])
    assert answer.code == "no_worker_knows_name"
    assert "The 2 workers serving queue 'default' do not know the task 'train_model'" in answer.reason


def test_queued_when_every_slot_is_busy_counts_the_tasks_ahead() -> None:
    task = make_task(TaskState.QUEUED, priority=5)
    workers = [make_worker("w1", running=4), make_worker("w2", running=4, concurrency=4)]
    scaling = ScalingView(backend="kubernetes", current=2, desired=5)
    answer = explain_task(task, now=NOW, workers=workers, ahead=17, scaling=scaling)
    assert answer.code == "workers_busy"
    assert answer.reason == (
        "All 8 slots of the 2 workers that can run it are busy. 17 tasks of its priority or higher are "
        "ahead of it in queue 'default'. The autoscaler is adding workers (2 → 5)."
    )
    assert answer.details["free_slots"] == 0


def test_queued_with_free_slots_says_it_starts_soon() -> None:
    task = make_task(TaskState.QUEUED)
    answer = explain_task(task, now=NOW, workers=[make_worker(running=3)], ahead=0)
    assert answer.code == "queued"
    assert "1 worker slot is free" in answer.reason


def test_queued_without_worker_information_still_reports_its_place() -> None:
    answer = explain_task(make_task(TaskState.QUEUED), now=NOW, ahead=1)
    assert answer.code == "queued"
    assert "1 task of its priority or higher is ahead" in answer.reason


def test_a_worker_that_advertises_nothing_is_not_blamed() -> None:
    answer = explain_task(make_task(TaskState.QUEUED), now=NOW, workers=[make_worker(task_names=[])])
    assert answer.code == "queued"


def test_running_names_worker_time_and_attempt() -> None:
    task = make_task(TaskState.RUNNING, worker_id="w1", attempts=2, started_at=NOW - 75)
    answer = explain_task(task, now=NOW, workers=[make_worker()])
    assert answer.code == "running"
    assert answer.reason == "Running on worker w1 for 1 min 15 s (attempt 2 of 4, time limit 5 min)."


def test_running_on_a_lost_worker_says_it_will_be_requeued() -> None:
    task = make_task(TaskState.RUNNING, worker_id="w9", attempts=1, started_at=NOW - 5)
    answer = explain_task(task, now=NOW, workers=[make_worker("w1"), make_worker("w9", state="lost")])
    assert answer.code == "worker_lost"
    assert "no longer live" in answer.reason


@pytest.mark.parametrize(
    ("state", "code", "words"),
    [
        (TaskState.SUCCEEDED, "succeeded", "finished successfully 10 s ago after 1 attempt."),
        (TaskState.FAILED, "failed", "failed for good 10 s ago after 1 attempt: KeyError: x. Retry"),
        (TaskState.CANCELLED, "cancelled", "cancelled 10 s ago"),
    ],
)
def test_terminal_states(state: TaskState, code: str, words: str) -> None:
    task = make_task(state, attempts=1, finished_at=NOW - 10, error="KeyError: x")
    answer = explain_task(task, now=NOW)
    assert answer.code == code
    assert words in answer.reason


def test_as_dict_is_the_api_shape() -> None:
    answer = explain_task(make_task(TaskState.QUEUED), now=NOW, ahead=0).as_dict()
    assert set(answer) == {"state", "code", "reason", "details"}
    assert answer["state"] == "queued"
    assert answer["details"]["ahead"] == 0
