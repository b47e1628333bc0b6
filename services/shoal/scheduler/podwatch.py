"""The worker pod watcher: notices at once when a worker pod dies, so its tasks need not wait
for their leases to run out.

It lists the worker pods by label, then watches them from the list's resourceVersion. An
incident -- the pod was deleted, went Failed/Succeeded, or a container terminated or
restarted -- calls `on_worker_gone(pod_name, reason, started_before)` once (the worker id is
the pod name); the leader wires it to `Store.release_worker`. A restarted container keeps its
pod name, so its new run may register and claim before the watcher hears of the crash: for a
container incident `started_before` is when the dead run ended or the new one started, and only
a registered run that started earlier is released (None, for a pod that is gone: any run).

A watch that ends or drops is resumed from the last resourceVersion seen; when that is too old
(410 Gone) the pods are listed again and compared with what was known, so a pod that vanished
meanwhile is still reported.

A pod that is being deleted (deletionTimestamp set) is draining: its worker hands its tasks
back itself within the grace period, so only its final disappearance counts. Restarts that
happened before the watcher first saw a pod are history, not incidents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.scheduler.kube import K8sError, K8sGone, KubeClient, PodEvent, PodInfo

log = logging.getLogger(__name__)

WorkerGone = Callable[[str, str, float | None], Awaitable[Any]]


@dataclass
class _Known:
    """What was seen of one pod, so that each incident is reported once."""

    uid: str
    crashes: dict[str, int] = field(default_factory=dict)
    """Per container: crashes accounted for (restarts, plus one while it lies terminated)."""
    finished: bool = False
    """The pod's end (Failed/Succeeded) was reported; nothing more is reported until it is gone."""


class PodWatcher:
    """Watches worker pods by label and reports each one that dies."""

    def __init__(
        self,
        kube: KubeClient,
        selector: str,
        on_worker_gone: WorkerGone,
        *,
        watch_timeout_s: float = 300.0,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.kube = kube
        self.selector = selector
        self.on_worker_gone = on_worker_gone
        self.watch_timeout_s = watch_timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._known: dict[str, _Known] = {}
        self.resource_version: str | None = None
        """Where the next watch starts; None means list first."""

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until `stop` is set."""
        stopping = asyncio.create_task(stop.wait())
        failures = 0
        try:
            while not stop.is_set():
                watching = asyncio.create_task(self._list_and_watch())
                await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not watching.done():
                    watching.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watching
                    return
                try:
                    watching.result()
                    failures = 0  # the watch ended normally (server timeout or a dropped connection)
                    continue
                except K8sGone:
                    log.info("pod watch expired (410 Gone); listing the pods again")
                    self.resource_version = None
                    continue
                except K8sError as e:
                    failures += 1
                    log.warning("pod watch failed", extra={"error": str(e), "failures": failures})
                delay = min(self.max_backoff_s, self.min_backoff_s * 2 ** (failures - 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), timeout=delay * random.uniform(0.5, 1.0))
        finally:
            stopping.cancel()

    async def _list_and_watch(self) -> None:
        if self.resource_version is None:
            listing = await self.kube.list_pods(self.selector)
            await self._sync(listing.pods)
            self.resource_version = listing.resource_version
        events = self.kube.watch_pods(self.selector, self.resource_version, timeout_s=self.watch_timeout_s)
        async with contextlib.aclosing(events):
            async for event in events:
                await self._on_event(event)
                if event.resource_version:
                    self.resource_version = event.resource_version

    async def _sync(self, pods: list[PodInfo]) -> None:
        """Compare a fresh list with what was known: vanished pods were deleted meanwhile."""
        present = {p.name for p in pods}
        for name in [n for n in self._known if n not in present]:
            known = self._known.pop(name)
            if not known.finished:
                await self._report(name, "pod deleted")
        for pod in pods:
            await self._on_pod(pod)

    async def _on_event(self, event: PodEvent) -> None:
        if event.pod is None:
            return  # a bookmark: only its resourceVersion matters
        if event.type == "DELETED":
            known = self._known.pop(event.pod.name, None)
            if known is None or not known.finished:
                await self._report(event.pod.name, "pod deleted")
            return
        await self._on_pod(event.pod)

    async def _on_pod(self, pod: PodInfo) -> None:
        known = self._known.get(pod.name)
        if known is not None and known.uid != pod.uid and not known.finished:
            await self._report(pod.name, "pod deleted")  # replaced by a namesake while we were not looking
        if known is None or known.uid != pod.uid:
            # First sight: restarts so far are history; a container lying terminated right now is not.
            known = _Known(uid=pod.uid, crashes={c.name: c.restart_count for c in pod.containers})
            self._known[pod.name] = known
        if known.finished:
            return
        draining = pod.deletion_timestamp is not None
        reasons = []
        pod_ended = pod.phase in ("Failed", "Succeeded") and not draining
        if pod_ended:
            known.finished = True
            reasons.append(f"pod {pod.phase}" + (f" ({pod.status_reason})" if pod.status_reason else ""))
        boundaries: list[float | None] = []
        for c in pod.containers:
            crashes = c.restart_count + (1 if c.terminated_reason else 0)
            if crashes <= known.crashes.get(c.name, 0):
                continue
            known.crashes[c.name] = crashes
            if draining or known.finished:
                continue  # containers stop as part of the pod's end, already accounted for
            if c.terminated_reason:
                reasons.append(
                    f"container {c.name} terminated ({c.terminated_reason}, exit code {c.exit_code})"
                )
                boundaries.append(c.finished_at)
            else:
                reasons.append(
                    f"container {c.name} restarted (after {c.last_terminated_reason or 'a crash'})"
                )
                boundaries.append(c.started_at if c.started_at is not None else c.finished_at)
        if reasons:
            # The earliest boundary errs towards sparing a run: a spared dead run's tasks still
            # come back, when its lease runs out or its next run registers.
            known_bounds = [b for b in boundaries if b is not None]
            bounded = not pod_ended and known_bounds and len(known_bounds) == len(boundaries)
            started_before = min(known_bounds) if bounded else None
            await self._report(pod.name, "; ".join(reasons), started_before)

    async def _report(self, worker_id: str, reason: str, started_before: float | None = None) -> None:
        log.warning(
            "worker pod gone",
            extra={"worker_id": worker_id, "reason": reason, "started_before": started_before},
        )
        try:
            await self.on_worker_gone(worker_id, reason, started_before)
        except Exception:
            # The task leases expire anyway; one failed release must not stop the watch.
            log.exception("releasing the tasks of a gone worker failed", extra={"worker_id": worker_id})
