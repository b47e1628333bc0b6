"""PodWatcher (services/shoal/scheduler/podwatch.py) against the API emulator over real HTTP.

The test plays kubelet and kubectl on the emulator (deleting pods, writing pod status) while
the watcher lists and watches through the official client. No duplicate callbacks is checked
by order: the watch delivers events in order, so once a later "sentinel" incident has been
reported, everything before it has been handled and the list of calls is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.core.models import WorkerInfo
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.scheduler.kube import KubeClient
from shoal.scheduler.podwatch import PodWatcher, WorkerGone
from store_helpers import submit
from tests.k8s_fixture import PODS, KubeApi, KubeApiEmulator, pod, running_kube_api

SELECTOR = "app.kubernetes.io/component=worker"


class Gone:
    """The on_worker_gone callback: records (worker_id, reason) in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.started_before: dict[str, float | None] = {}
        """The last `started_before` bound reported per worker."""
        self._arrived: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.fail_first = False
        self.forward: WorkerGone | None = None
        """Also pass each report on (to the real `Store.release_worker`) before it counts as arrived."""
        self.released: dict[str, Any] = {}

    async def __call__(self, worker_id: str, reason: str, started_before: float | None) -> None:
        self.calls.append((worker_id, reason))
        self.started_before[worker_id] = started_before
        if self.forward is not None:
            self.released[worker_id] = await self.forward(worker_id, reason, started_before)
        self._arrived.put_nowait((worker_id, reason))
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("Redis is down")

    async def next(self, within_s: float = 3.0) -> tuple[str, str]:
        return await asyncio.wait_for(self._arrived.get(), within_s)


class Running:
    def __init__(
        self, api: KubeApi, watcher: PodWatcher, gone: Gone, task: asyncio.Task[None], stop: asyncio.Event
    ):
        self.api, self.emu, self.watcher, self.gone, self.task, self.stop = (
            api,
            api.emu,
            watcher,
            gone,
            task,
            stop,
        )

    async def sentinel(self) -> None:
        """Report one more incident and wait for it: everything before it has been handled."""
        self.emu.create(PODS, pod("sentinel"))
        await self.until(lambda: "sentinel" in self.watcher._known)
        self.emu.delete(PODS, "sentinel")
        assert await self.gone.next() == ("sentinel", "pod deleted")
        self.gone.calls.remove(("sentinel", "pod deleted"))

    async def until(self, condition: Callable[[], bool], within_s: float = 3.0) -> None:
        async with asyncio.timeout(within_s):
            while not condition():  # noqa: ASYNC110 -- polls the watcher's state, there is no event
                await asyncio.sleep(0.005)

    def requests(self, *, watch: bool) -> list[Any]:
        return [
            r
            for r in self.emu.request_log
            if r.method.value == "GET" and r.name is None and (r.params.get("watch") == "true") == watch
        ]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[Running, KubeClient]] = []
    with running_kube_api(tmp_path) as api:

        async def start(*pods: dict[str, Any], gone: Gone | None = None) -> Running:
            for body in pods:
                api.emu.create(PODS, body)
            kube = api.client()
            gone = gone or Gone()
            watcher = PodWatcher(
                kube, SELECTOR, gone, watch_timeout_s=30, min_backoff_s=0.05, max_backoff_s=0.2
            )
            stop = asyncio.Event()
            run = Running(api, watcher, gone, asyncio.create_task(watcher.run(stop)), stop)
            started.append((run, kube))
            await api.emu.wait_for_watches(1)
            return run

        yield start
        for run, kube in started:
            run.stop.set()
            await asyncio.wait_for(run.task, 5)
            kube.close()


def _set_container(
    emu: KubeApiEmulator,
    name: str,
    restarts: int,
    *,
    terminated: str | None = None,
    last: str | None = None,
    exit_code: int = 1,
    started: str = "2025-01-01T00:00:10Z",
    finished: str = "2025-01-01T00:00:07Z",
) -> None:
    """Write a pod's container status as kubelet does (the whole list is replaced)."""
    ended = {"reason": terminated or last, "exitCode": exit_code, "finishedAt": finished}
    status: dict[str, Any] = {
        "name": "worker",
        "image": "shoal:test",
        "imageID": "",
        "ready": terminated is None,
        "restartCount": restarts,
        "state": {"terminated": ended} if terminated else {"running": {"startedAt": started}},
    }
    if last:
        status["lastState"] = {"terminated": ended}
    emu.patch(PODS, name, {"status": {"containerStatuses": [status]}}, subresource="status")


def worker_info(worker_id: str, *, started_at: float) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id, host=worker_id, queues=["default"], concurrency=4, task_names=["noop"],
        version="test", pid=1, started_at=started_at,
    )  # fmt: skip


# ---- incidents ---------------------------------------------------------------------------------


async def test_deleted_pod_is_reported_once(running: Any) -> None:
    r = await running(pod("w-1"), pod("w-2"))
    r.emu.delete(PODS, "w-1")
    assert await r.gone.next() == ("w-1", "pod deleted")
    await r.sentinel()
    assert r.gone.calls == [("w-1", "pod deleted")]


async def test_failed_pod_is_reported_once_then_its_deletion_is_not(running: Any) -> None:
    r = await running(pod("w-1"))
    r.emu.patch(PODS, "w-1", {"status": {"phase": "Failed", "reason": "Evicted"}}, subresource="status")
    assert await r.gone.next() == ("w-1", "pod Failed (Evicted)")
    r.emu.patch(PODS, "w-1", {"metadata": {"annotations": {"seen": "again"}}})
    r.emu.patch(PODS, "w-1", {"status": {"message": "The node was low on resource"}}, subresource="status")
    r.emu.delete(PODS, "w-1")
    await r.sentinel()
    assert r.gone.calls == [("w-1", "pod Failed (Evicted)")]


async def test_succeeded_pod_is_reported(running: Any) -> None:
    r = await running(pod("w-1"))
    r.emu.patch(PODS, "w-1", {"status": {"phase": "Succeeded"}}, subresource="status")
    assert await r.gone.next() == ("w-1", "pod Succeeded")


async def test_container_restart_is_reported_once(running: Any) -> None:
    r = await running(pod("w-1"))
    _set_container(r.emu, "w-1", 1, last="Error")
    assert await r.gone.next() == ("w-1", "container worker restarted (after Error)")
    r.emu.patch(PODS, "w-1", {"metadata": {"labels": {"extra": "x"}}})  # still selected: MODIFIED
    _set_container(r.emu, "w-1", 1, last="Error")  # the same status again
    await r.sentinel()
    assert r.gone.calls == [("w-1", "container worker restarted (after Error)")]


async def test_a_crash_seen_terminated_then_restarted_is_one_incident(running: Any) -> None:
    r = await running(pod("w-1"))
    _set_container(r.emu, "w-1", 0, terminated="OOMKilled", exit_code=137)
    assert await r.gone.next() == ("w-1", "container worker terminated (OOMKilled, exit code 137)")
    _set_container(r.emu, "w-1", 1, last="OOMKilled", exit_code=137)  # kubelet restarted it
    _set_container(r.emu, "w-1", 2, last="Error")  # and it crashed again: a new incident
    assert await r.gone.next() == ("w-1", "container worker restarted (after Error)")
    await r.sentinel()
    assert len(r.gone.calls) == 2


async def test_restarts_before_the_first_sight_are_history(running: Any) -> None:
    r = await running(pod("w-1", restarts=3), pod("w-2"))
    await r.sentinel()
    assert r.gone.calls == []


async def test_a_pod_that_failed_before_the_watcher_started_is_reported(running: Any) -> None:
    r = await running(pod("w-1", phase="Failed"), pod("w-2"))
    assert await r.gone.next() == ("w-1", "pod Failed")


async def test_a_draining_pod_counts_only_when_it_is_gone(running: Any) -> None:
    r = await running(pod("w-1"))
    r.emu.patch(PODS, "w-1", {"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}})
    _set_container(r.emu, "w-1", 0, terminated="Completed", exit_code=0)  # SIGTERM, drained, exited
    r.emu.delete(PODS, "w-1")
    assert await r.gone.next() == ("w-1", "pod deleted")
    await r.sentinel()
    assert r.gone.calls == [("w-1", "pod deleted")]


async def test_pods_outside_the_selector_are_ignored(running: Any) -> None:
    r = await running(pod("w-1"), pod("api-1", {"app.kubernetes.io/component": "scheduler"}))
    r.emu.delete(PODS, "api-1")
    r.emu.patch(PODS, "w-1", {"metadata": {"labels": {"app.kubernetes.io/component": "retired"}}})
    # Leaving the selection shows as DELETED on the watch: the pod is no worker of ours any more.
    assert await r.gone.next() == ("w-1", "pod deleted")
    await r.sentinel()
    assert r.gone.calls == [("w-1", "pod deleted")]


# ---- a watch that drops, expires or fails ------------------------------------------------------


@pytest.mark.parametrize("abrupt", [False, True])
async def test_a_dropped_watch_resumes_from_the_last_resource_version(running: Any, abrupt: bool) -> None:
    r = await running(pod("w-1"), pod("w-2"))
    seen = r.emu.patch(PODS, "w-1", {"metadata": {"annotations": {"note": "x"}}})["metadata"][
        "resourceVersion"
    ]
    await r.until(lambda: r.watcher.resource_version == seen)
    with r.emu.paused():  # the watch drops, and a pod goes away before the watcher is back
        assert r.emu.drop_watches(abrupt=abrupt) == 1
        r.emu.delete(PODS, "w-2")
    assert await r.gone.next() == ("w-2", "pod deleted")
    watches = r.requests(watch=True)
    assert len(watches) == 2 and len(r.requests(watch=False)) == 1  # resumed, not listed again
    assert watches[1].params["resourceVersion"] == seen
    await r.sentinel()
    assert r.gone.calls == [("w-2", "pod deleted")]


async def test_410_gone_lists_again_and_reports_what_changed_meanwhile(running: Any) -> None:
    r = await running(pod("w-1"), pod("w-2"), pod("w-3"))
    with r.emu.paused():
        r.emu.drop_watches(abrupt=True)
        r.emu.delete(PODS, "w-2")
        r.emu.patch(PODS, "w-1", {"status": {"phase": "Failed"}}, subresource="status")
        r.emu.compact()  # the watcher's resourceVersion is now too old
    first, second = await r.gone.next(), await r.gone.next()
    assert [first, second] == [("w-2", "pod deleted"), ("w-1", "pod Failed")]
    assert len(r.requests(watch=False)) == 2  # the second list
    await r.sentinel()
    assert r.gone.calls == [("w-2", "pod deleted"), ("w-1", "pod Failed")]


async def test_failing_watch_requests_are_retried_with_backoff(running: Any) -> None:
    r = await running(pod("w-1"))
    with r.emu.paused():
        r.emu.inject_error(503, watch=True, times=2)
        r.emu.drop_watches()
        r.emu.delete(PODS, "w-1")
    assert await r.gone.next() == ("w-1", "pod deleted")
    assert len(r.requests(watch=True)) == 4  # the first, two refused, the one that worked


async def test_a_failing_callback_does_not_stop_the_watch(running: Any) -> None:
    gone = Gone()
    gone.fail_first = True
    r = await running(pod("w-1"), pod("w-2"), gone=gone)
    r.emu.delete(PODS, "w-1")
    assert await gone.next() == ("w-1", "pod deleted")
    r.emu.delete(PODS, "w-2")
    assert await gone.next() == ("w-2", "pod deleted")


async def test_stop_ends_the_watch_promptly(running: Any) -> None:
    r = await running(pod("w-1"))
    started = asyncio.get_running_loop().time()
    r.stop.set()
    await asyncio.wait_for(r.task, 20)
    # Promptly: not at the end of the open watch (30 s); generous for a loaded machine.
    assert asyncio.get_running_loop().time() - started < 10
    await r.until(lambda: r.emu.open_watches == 0)


async def test_stop_while_the_watch_request_is_in_flight_leaves_no_watch_open(running: Any) -> None:
    r = await running(pod("w-1"))
    r.emu.inject_delay(0.5, watch=True)  # the watcher's next watch is answered late
    r.emu.drop_watches()
    await r.until(lambda: len(r.requests(watch=True)) == 2)
    r.stop.set()
    await asyncio.wait_for(r.task, 2)
    # The server then answers the abandoned request; the watch it opens must close at once,
    # not linger until its next event or its timeout (30 s here).
    await asyncio.sleep(0.5)
    await r.until(lambda: r.emu.open_watches == 0, within_s=1.0)


# ---- which run of a worker died ----------------------------------------------------------------

STARTED_S = 1735689610.0  # 2025-01-01T00:00:10Z, the new run's start in _set_container
FINISHED_S = 1735689607.0  # 2025-01-01T00:00:07Z, the dead run's end


async def test_a_restart_is_bounded_by_the_new_runs_start(running: Any) -> None:
    r = await running(pod("w-1"))
    _set_container(r.emu, "w-1", 1, last="OOMKilled")
    assert await r.gone.next() == ("w-1", "container worker restarted (after OOMKilled)")
    assert r.gone.started_before["w-1"] == STARTED_S


async def test_a_termination_is_bounded_by_its_end(running: Any) -> None:
    r = await running(pod("w-1"))
    _set_container(r.emu, "w-1", 0, terminated="Error")
    assert await r.gone.next() == ("w-1", "container worker terminated (Error, exit code 1)")
    assert r.gone.started_before["w-1"] == FINISHED_S


async def test_a_pod_that_is_gone_releases_any_run(running: Any) -> None:
    r = await running(pod("w-1"), pod("w-2"))
    r.emu.delete(PODS, "w-1")
    assert await r.gone.next() == ("w-1", "pod deleted")
    r.emu.patch(PODS, "w-2", {"status": {"phase": "Failed"}}, subresource="status")
    assert await r.gone.next() == ("w-2", "pod Failed")
    assert r.gone.started_before == {"w-1": None, "w-2": None}


async def test_a_restart_spares_the_new_run_that_registered_first(running: Any, store: Store) -> None:
    """The race this bound exists for, on real Redis: kubelet restarts the container, the new run
    registers and claims under the pod name, and only then does the watcher hear of the crash."""
    old_task, new_task = await submit(store), await submit(store)
    await store.register_worker(worker_info("w-1", started_at=STARTED_S - 60))
    (held_by_dead_run,) = await store.claim("w-1", ["default"], 1)
    assert held_by_dead_run.id == old_task
    # The new run registers (handing back what the dead run held) and claims again.
    assert await store.register_worker(worker_info("w-1", started_at=STARTED_S + 2)) == [old_task]
    claims = await store.claim("w-1", ["default"], 2)
    assert {c.id for c in claims} == {old_task, new_task}

    gone = Gone()
    gone.forward = store.release_worker
    r = await running(pod("w-1"), gone=gone)
    _set_container(r.emu, "w-1", 1, last="Error")
    assert await gone.next() == ("w-1", "container worker restarted (after Error)")
    assert gone.released == {"w-1": []}

    for claim in claims:  # neither was taken from the new run
        task = await store.get(claim.id)
        assert task is not None and task.state is TaskState.RUNNING and task.attempts == claim.attempt
    assert (await store.heartbeat("w-1", [c.id for c in claims])).lost_task_ids == []


async def test_a_restart_releases_the_dead_run_that_had_not_registered_again(
    running: Any, store: Store
) -> None:
    task_id = await submit(store)
    await store.register_worker(worker_info("w-1", started_at=STARTED_S - 60))
    (claim,) = await store.claim("w-1", ["default"], 1)

    gone = Gone()
    gone.forward = store.release_worker
    r = await running(pod("w-1"), gone=gone)
    _set_container(r.emu, "w-1", 1, last="Error")
    assert await gone.next() == ("w-1", "container worker restarted (after Error)")

    assert gone.released == {"w-1": [task_id]}
    task = await store.get(task_id)
    assert task is not None and task.state is TaskState.QUEUED and task.attempts == claim.attempt
    assert task.history[-1].state == "released"
