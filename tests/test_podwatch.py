"""PodWatcher (services/scheduler/podwatch.py) against the API emulator over real HTTP.

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

from services.scheduler.kube import KubeClient
from services.scheduler.podwatch import PodWatcher
from tests.k8s_fixture import PODS, KubeApi, KubeApiEmulator, pod, running_kube_api

SELECTOR = "app.kubernetes.io/component=worker"


class Gone:
    """The on_worker_gone callback: records (worker_id, reason) in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._arrived: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.fail_first = False

    async def __call__(self, worker_id: str, reason: str) -> None:
        self.calls.append((worker_id, reason))
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
) -> None:
    """Write a pod's container status as kubelet does (the whole list is replaced)."""
    status: dict[str, Any] = {
        "name": "worker",
        "image": "shoal:test",
        "imageID": "",
        "ready": terminated is None,
        "restartCount": restarts,
        "state": {"terminated": {"reason": terminated, "exitCode": exit_code}}
        if terminated
        else {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
    }
    if last:
        status["lastState"] = {"terminated": {"reason": last, "exitCode": exit_code}}
    emu.patch(PODS, name, {"status": {"containerStatuses": [status]}}, subresource="status")


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
    await asyncio.wait_for(r.task, 2)
    assert asyncio.get_running_loop().time() - started < 1.0
    await r.until(lambda: r.emu.open_watches == 0)
