"""What the autoscaler changes: the worker Deployment, worker processes on this host, or nothing.

Every backend answers how many workers it is set to (`current`), how many exist (`actual`),
and sets the count (`apply`). Scale-in is drain-aware: the autoscaler passes a `ScaleInPlan`
with each worker's running tasks, and the backend removes idle workers before busy ones. A
removed worker gets SIGTERM, stops claiming, finishes what it can within its grace period and
hands the rest back at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from shoal.core.errors import ShoalError
from shoal.core.kube_settings import KubeSettings
from shoal.scheduler.kube import POD_DELETION_COST, KubeClient

log = logging.getLogger(__name__)

# The directory that holds the `shoal` package: spawned workers must import it from anywhere.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[3])


class ScalingBackendError(ShoalError):
    """The backend could not set the worker count (spawn failed, bad count ...)."""


@dataclass(frozen=True, slots=True)
class ScaleInPlan:
    """What the backend needs to pick workers to remove: each worker's running tasks now."""

    running_by_worker: Mapping[str, int] = field(default_factory=dict)

    def cost(self, worker_id: str) -> int:
        """Tasks a worker would have to hand back if removed; unknown workers count as idle."""
        return max(0, self.running_by_worker.get(worker_id, 0))


@runtime_checkable
class ScalingBackend(Protocol):
    name: str
    """`none`, `local` or `kubernetes`: shown in the scaling history and GET /scaling."""
    applies_decisions: bool
    """False for a backend that only observes: its count is never compared with what was applied."""

    async def current(self) -> int:
        """The worker count the backend is set to (a Deployment's spec.replicas)."""
        ...

    async def actual(self) -> int:
        """Workers that exist now (started and not yet stopped)."""
        ...

    async def apply(self, desired: int, plan: ScaleInPlan | None) -> None:
        """Set the worker count; `plan` tells which workers are cheapest to remove when it shrinks."""
        ...

    async def close(self) -> None: ...


def _check_count(desired: int) -> None:
    if isinstance(desired, bool) or not isinstance(desired, int) or desired < 0:
        raise ScalingBackendError(f"replica count must be a non-negative integer, not {desired!r}")


class NoneBackend:
    """Changes nothing: decisions are only advice. Reports the live workers as its count."""

    name = "none"
    applies_decisions = False

    def __init__(self, count_workers: Callable[[], Awaitable[int]] | None = None) -> None:
        self._count_workers = count_workers

    async def current(self) -> int:
        return await self._count_workers() if self._count_workers else 0

    async def actual(self) -> int:
        return await self.current()

    async def apply(self, desired: int, plan: ScaleInPlan | None) -> None:
        _check_count(desired)

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class LocalWorker:
    """One worker process started by the LocalBackend."""

    worker_id: str
    process: subprocess.Popen[bytes]
    seq: int
    """Start order: higher is newer."""
    stopping_since: float | None = None
    """Monotonic time SIGTERM was sent; None while the worker serves."""

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalBackend:
    """Starts and stops `python -m shoal.worker` processes on this host (`make up`, laptops).

    It behaves like a Deployment's controller: `apply` sets the target count, and every call of
    `current`, `actual` or `apply` first reaps exited processes and starts replacements for
    workers that died without being asked to. Stopping sends SIGTERM to the idlest, then newest,
    worker, which hands its tasks back; one that has not exited `stop_timeout_s` later is killed.
    `close()` stops every process it started, so it leaves no orphans behind.
    """

    name = "local"
    applies_decisions = True

    def __init__(
        self,
        *,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 30.0,
        id_prefix: str | None = None,
    ) -> None:
        if stop_timeout_s <= 0:
            raise ValueError("stop_timeout_s must be > 0")
        self.command = list(command or [sys.executable, "-m", "shoal.worker"])
        self._env = dict(os.environ if env is None else env)
        self.stop_timeout_s = stop_timeout_s
        self.id_prefix = id_prefix or f"local-{socket.gethostname()}-{uuid.uuid4().hex[:4]}"
        self._target = 0
        self._seq = 0
        self._workers: list[LocalWorker] = []
        self._closed = False

    @property
    def workers(self) -> list[LocalWorker]:
        """Every process not yet reaped, serving or stopping."""
        return list(self._workers)

    def serving(self) -> list[LocalWorker]:
        return [w for w in self._workers if w.stopping_since is None]

    async def current(self) -> int:
        self._reconcile()
        return self._target

    async def actual(self) -> int:
        self._reconcile()
        return len(self.serving())

    async def apply(self, desired: int, plan: ScaleInPlan | None) -> None:
        _check_count(desired)
        if self._closed:
            raise ScalingBackendError("the local backend is closed")
        self._target = desired
        self._reconcile(plan)

    async def close(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after `stop_timeout_s`; wait for all to exit."""
        self._closed = True
        self._target = 0
        for worker in self._workers:
            self._terminate(worker, "backend closing")
        deadline = time.monotonic() + self.stop_timeout_s
        # A Popen's exit has nothing to await; polling every 50 ms is cheap and bounded.
        while self._reap() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for worker in self._workers:
            log.warning("worker did not stop in time, killing it", extra={"worker_id": worker.worker_id})
            worker.process.kill()
        for worker in self._workers:
            await asyncio.to_thread(worker.process.wait)
        self._workers = []

    def _reconcile(self, plan: ScaleInPlan | None = None) -> None:
        self._reap()
        if self._closed:
            return
        serving = self.serving()
        for _ in range(self._target - len(serving)):
            self._spawn()
        surplus = len(serving) - self._target
        if surplus > 0:
            plan = plan or ScaleInPlan()
            # Idle before busy, newest before oldest: the newest has warmed up least.
            victims = sorted(serving, key=lambda w: (plan.cost(w.worker_id), -w.seq))[:surplus]
            for worker in victims:
                self._terminate(worker, f"scaling in (running {plan.cost(worker.worker_id)} tasks)")

    def _spawn(self) -> LocalWorker:
        self._seq += 1
        worker_id = f"{self.id_prefix}-{self._seq}"
        env = dict(self._env)
        env.pop("SHOAL_POD_NAME", None)  # it would override the worker id
        env["SHOAL_WORKER_ID"] = worker_id
        env["SHOAL_WORKER_PORT"] = "0"  # several workers on one host: any free port each
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH", "")) if p)
        try:
            process = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as e:
            raise ScalingBackendError(f"cannot start a worker with {self.command!r}: {e}") from e
        worker = LocalWorker(worker_id, process, self._seq)
        self._workers.append(worker)
        log.info("worker process started", extra={"worker_id": worker_id, "pid": process.pid})
        return worker

    def _terminate(self, worker: LocalWorker, why: str) -> None:
        if worker.stopping_since is not None or worker.process.poll() is not None:
            return
        worker.stopping_since = time.monotonic()
        log.info(
            "stopping worker process", extra={"worker_id": worker.worker_id, "pid": worker.pid, "why": why}
        )
        worker.process.send_signal(signal.SIGTERM)  # a no-op if it has exited meanwhile

    def _reap(self) -> bool:
        """Forget exited processes and kill stoppers past their deadline; True while any remain."""
        alive = []
        now = time.monotonic()
        for worker in self._workers:
            code = worker.process.poll()
            if code is None:
                if worker.stopping_since is not None and now - worker.stopping_since > self.stop_timeout_s:
                    log.warning("worker ignored SIGTERM, killing it", extra={"worker_id": worker.worker_id})
                    worker.process.kill()
                alive.append(worker)
            elif worker.stopping_since is None and not self._closed:
                log.warning(
                    "worker process exited unasked; it will be replaced",
                    extra={"worker_id": worker.worker_id, "exit_code": code},
                )
            else:
                log.info("worker process stopped", extra={"worker_id": worker.worker_id, "exit_code": code})
        self._workers = alive
        return bool(alive)


class KubernetesBackend:
    """Sets the worker Deployment's replicas through its `scale` subresource.

    Before lowering the count it gives every worker pod a `pod-deletion-cost` equal to the tasks
    it runs, so the ReplicaSet removes idle pods first and busy ones only when it must.
    """

    name = "kubernetes"
    applies_decisions = True

    def __init__(
        self, kube: KubeClient, deployment: str, pod_selector: str, *, owns_client: bool = False
    ) -> None:
        self.kube = kube
        self.deployment = deployment
        self.pod_selector = pod_selector
        self._owns_client = owns_client

    @classmethod
    def from_settings(cls, settings: KubeSettings) -> KubernetesBackend:
        kube = KubeClient.from_settings(settings)
        return cls(kube, settings.worker_deployment, settings.worker_pod_selector, owns_client=True)

    async def current(self) -> int:
        return await self.kube.get_replicas(self.deployment)

    async def actual(self) -> int:
        return (await self.kube.get_scale(self.deployment)).actual

    async def apply(self, desired: int, plan: ScaleInPlan | None) -> None:
        _check_count(desired)
        if plan is not None:
            await self.mark_for_scale_in(plan)
        await self.kube.set_replicas(self.deployment, desired)

    async def mark_for_scale_in(self, plan: ScaleInPlan) -> dict[str, int]:
        """Set each worker pod's deletion cost to its running tasks; returns the costs changed."""
        pods = (await self.kube.list_pods(self.pod_selector)).pods
        changed = {
            pod.name: plan.cost(pod.name)
            for pod in pods
            if pod.deletion_timestamp is None
            and pod.annotations.get(POD_DELETION_COST) != str(plan.cost(pod.name))
        }
        for name, cost in changed.items():
            await self.kube.set_pod_deletion_cost(name, cost)
        if changed:
            log.info("marked worker pods for scale-in", extra={"deletion_costs": changed})
        return changed

    async def close(self) -> None:
        if self._owns_client:
            self.kube.close()


def backend_from_settings(
    backend: str,
    *,
    count_workers: Callable[[], Awaitable[int]] | None = None,
    kube_settings: KubeSettings | None = None,
    local_env: Mapping[str, str] | None = None,
) -> ScalingBackend:
    """The backend named by SHOAL_SCALER_BACKEND; `count_workers` feeds the `none` backend's count."""
    if backend == "none":
        return NoneBackend(count_workers)
    if backend == "local":
        return LocalBackend(env=local_env)
    if backend == "kubernetes":
        if kube_settings is None:
            raise ScalingBackendError("the kubernetes scaling backend needs the Kubernetes settings")
        return KubernetesBackend.from_settings(kube_settings)
    raise ScalingBackendError(f"unknown scaling backend {backend!r}: expected none, local or kubernetes")
