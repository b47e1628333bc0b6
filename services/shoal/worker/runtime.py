"""The worker: registers, claims tasks in batches up to its free slots, runs them, reports.

Moving parts, all on one event loop:

- the claim loop (here): claims `free slots` tasks in one call; when nothing is ready it
  blocks on the wake-up subscription (with a short safety timeout);
- the executor: runs each attempt (loop / thread / process) and builds its Outcome;
- the completion flusher: reports outcomes in natural batches, overlapping the next claim;
- the heartbeat: renews every lease in one call, reports tasks taken away and drains;
- the probe server: /healthz, /readyz, /metrics.

Stopping (`request_stop`, wired to SIGTERM/SIGINT): no more claims; running tasks get
SHOAL_GRACE_S to finish; what is left is cancelled and handed back at once, outcomes are
flushed and the worker deregisters. A second stop request skips the rest of the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import shoal.worker.builtins  # noqa: F401 - the built-in tasks are always registered
from shoal._version import __version__
from shoal.core.aiotools import cancel_and_wait
from shoal.core.errors import ShoalError
from shoal.core.logging import log_context
from shoal.core.models import ClaimedTask, HeartbeatReply, WorkerInfo
from shoal.core.redis_client import RedisConnector
from shoal.core.registry import TaskRegistry, default_registry
from shoal.core.settings import Settings
from shoal.core.stopping import EarlyStop
from shoal.core.store import Store, backoff_delay_ms
from shoal.worker import metrics
from shoal.worker.bounds import OutcomeBounds
from shoal.worker.claim_order import ClaimOrder
from shoal.worker.executor import Executor
from shoal.worker.flusher import CompletionFlusher
from shoal.worker.heartbeat import Heartbeat
from shoal.worker.probes import Liveness, ProbeServer, Response, verdict
from shoal.worker.progress import ProgressWriter
from shoal.worker.wake import WakeSignal

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0  # safety net if a wake-up signal is ever missed
# The parts of the worker that liveness watches (`Liveness.watch`).
STARTING, CLAIM_LOOP, HEARTBEAT, STOPPING = "start-up", "claim loop", "heartbeat", "shutdown"
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 5.0
_SHUTDOWN_STEP_TIMEOUT_S = 5.0
WAKE_CONNECTIONS = 2


class WorkerCrashed(Exception):
    """A part of the worker failed in a way it cannot recover from; the process should restart."""


class WorkerStartupError(ShoalError):
    """The worker cannot start (its probe port is taken, ...); the message says why."""


class Worker:
    def __init__(self, settings: Settings, store: Store, registry: TaskRegistry | None = None) -> None:
        ws = settings.worker
        self.settings = settings
        self.store = store
        metrics.bind_flow_held(store.flow_held)  # the store counts what its claims held back
        self.id = ws.worker_id
        self.queues = ws.queue_list
        self._claim_order = ClaimOrder(ws.queue_weights)
        self.concurrency = ws.concurrency
        self.registry = registry if registry is not None else default_registry
        self.progress = ProgressWriter(store, self.id, ws.progress_interval_s)
        self.executor = Executor(
            self.registry,
            threads=ws.concurrency,
            processes=ws.process_pool_size,
            worker_id=self.id,
            bounds=OutcomeBounds.from_settings(ws),
            log=settings.log,
            progress=self.progress.sink,
            backoff=lambda attempt: (
                backoff_delay_ms(
                    attempt, settings.tasks.backoff_base_s, settings.tasks.backoff_max_s, random.random()
                )
                / 1000
            ),
        )
        # Silent past the lease length, the worker's leases may be lost anyway: a restart is the
        # better cure. Redis counts as unreachable (not ready) after three missed heartbeats.
        self.liveness = Liveness(settings.tasks.lease_s, max(1.0, 3 * settings.tasks.heartbeat_s), STARTING)
        self.flusher = CompletionFlusher(store, self.id, self.liveness.redis_ok)
        # The wake-up subscription holds a connection for the worker's life: a client of its own.
        connector = RedisConnector(settings.redis)
        self._wake_client = connector.client("wake", WAKE_CONNECTIONS)
        self.wake = WakeSignal(
            connector.subscription(self._wake_client, [store.keys.wake(q) for q in self.queues]),
            self.liveness.redis_ok,
            on_retry=lambda delay_s: self.liveness.progressed(STARTING, pause_s=delay_s),
        )
        self.heartbeat = Heartbeat(
            store,
            self.id,
            settings.tasks.heartbeat_s,
            self._held,
            self._on_heartbeat,
            self.liveness.redis_ok,
            on_progress=lambda: self.liveness.progressed(HEARTBEAT),
        )
        self.probes = ProbeServer(
            "0.0.0.0",  # probes and scrapes come from outside the pod
            ws.worker_port,
            {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics},
            tokens={"/metrics": settings.api.metrics_token} if settings.api.metrics_token else None,
        )
        self.metrics_url: str | None = None
        self.started_at = time.time()
        self.registered = False
        self._registering = False  # a registration was sent (it may have committed)
        self.draining = False
        self.processed = 0
        self.failed = 0
        self._running: dict[str, tuple[asyncio.Task[None], ClaimedTask]] = {}
        self._beat_runs: dict[str, ClaimedTask] = {}  # what the heartbeat in flight asked about
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """First call: stop claiming and finish within the grace. Second: hand back now."""
        if not self._stopping.is_set():
            log.info(
                "stopping: no more claims; %d running tasks get %gs to finish",
                len(self._running),
                self.settings.worker.grace_s,
                extra={"worker_id": self.id},
            )
            self._stopping.set()
        elif not self._hurry.is_set():
            log.warning("second stop request: handing back running tasks now", extra={"worker_id": self.id})
            self._hurry.set()
        self.wake.set()
        self._slot_freed.set()

    async def run(self) -> None:
        """Serve until `request_stop()`, then shut down gracefully; returns when fully stopped."""
        # Bound here, inherited by every task the worker starts: all its lines carry worker_id.
        with log_context(worker_id=self.id):
            await self._run()

    async def _run(self) -> None:
        if self._stopping.is_set():
            log.info(
                "stop requested before start-up: exiting before registering", extra={"worker_id": self.id}
            )
            return
        try:
            port = await self.probes.start()
        except OSError as exc:
            raise WorkerStartupError(
                f"cannot serve probes on port {self.probes.port} ({exc.strerror or exc}); "
                "set SHOAL_WORKER_PORT to a free port, or 0 for any"
            ) from exc
        self.metrics_url = f"http://{_advertised_host()}:{port}/metrics"
        log.info("probes and metrics on port %d", port, extra={"worker_id": self.id})
        try:
            if not await self._start_up():
                return
            self.liveness.watch(CLAIM_LOOP, HEARTBEAT)
            claim_loop = asyncio.create_task(self._claim_loop(), name="shoal-claim-loop")
            components = {claim_loop, self.flusher.start(), self.heartbeat.start()}
            done, _ = await asyncio.wait(components, return_when=asyncio.FIRST_COMPLETED)
            if done == {claim_loop} and claim_loop.exception() is None:
                await self._shutdown()
                return
            # A component died of a bug: without it the worker cannot keep its promises
            # (report results, renew leases). Give the tasks back and let the process restart.
            crashed = next(t for t in done if t.exception() is not None)
            log.critical("worker component %s crashed", crashed.get_name(), exc_info=crashed.exception())
            claim_loop.cancel()
            self._stopping.set()
            await self._hand_back_running()
            with contextlib.suppress(Exception):
                await self.store.deregister_worker(self.id, "crashed")
            raise WorkerCrashed(f"worker component {crashed.get_name()} crashed") from crashed.exception()
        finally:
            await self._close()

    async def _start_up(self) -> bool:
        """Subscribe to wake-ups, then register (retrying while Redis is down). False if stopped."""
        steps = asyncio.create_task(self._subscribe_and_register())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({steps, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if steps.done():
            steps.result()
            if not self._stopping.is_set():
                return True
        else:
            await cancel_and_wait(steps)
        log.info("stop requested during start-up: exiting without claiming", extra={"worker_id": self.id})
        if self._registering:
            # The registration may have reached Redis before the stop cancelled it: undo it.
            try:
                async with asyncio.timeout(_SHUTDOWN_STEP_TIMEOUT_S):
                    await self.store.deregister_worker(self.id, "stopped")
            except Exception as exc:
                log.warning("could not deregister (%s); the scheduler will see this worker as lost", exc)
        return False

    async def _subscribe_and_register(self) -> None:
        await self.wake.start()
        delay = _BACKOFF_START_S
        while True:
            try:
                await self._register()
                return
            except _TRANSIENT as exc:
                log.warning(
                    "cannot register (%s); retrying in %.2fs", exc, delay, extra={"worker_id": self.id}
                )
                self.liveness.progressed(STARTING, pause_s=delay)  # waiting for Redis; readiness says why
                await asyncio.sleep(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)

    async def _register(self) -> None:
        self._registering = True
        info = WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            queues=self.queues,
            concurrency=self.concurrency,
            task_names=self.registry.names(),
            version=__version__,
            pid=os.getpid(),
            started_at=self.started_at,
            processed=self.processed,
            failed=self.failed,
            metrics_url=self.metrics_url,
        )
        leftovers = await self.store.register_worker(info)
        declared = self.registry.schedules()
        if declared:
            changed = {k: v for k, v in (await self.store.schedules.declare(declared)).items() if v != "same"}
            if changed:
                log.info(
                    "schedules declared in code: %s",
                    ", ".join(f"{k} {v}" for k, v in sorted(changed.items())),
                )
        if leftovers:
            log.warning("queued again %d tasks an earlier run of this worker left unfinished", len(leftovers))
        self.liveness.redis_ok()
        if not self.registered:
            log.info(
                "registered: queues=%s concurrency=%d tasks=%s",
                ",".join(self.queues),
                self.concurrency,
                ",".join(info.task_names),
                extra={"worker_id": self.id},
            )
        self.registered = True

    # ------------------------------------------------------------------ claiming and running

    async def _claim_loop(self) -> None:
        delay = _BACKOFF_START_S
        backlog_limit = max(4 * self.concurrency, 1000)
        healthy = True  # the last round worked, or failed only because Redis was unreachable
        while not self._stopping.is_set():
            if healthy:
                self.liveness.progressed(CLAIM_LOOP)
            free = self.concurrency - len(self._running) - self.executor.overrunning_threads
            if free <= 0 or self.draining or self.flusher.backlog >= backlog_limit:
                self._slot_freed.clear()
                await _wait(self._slot_freed, IDLE_WAIT_S)
                continue
            self.wake.clear()
            try:
                claimed = await self.store.claim(self.id, self._claim_order.next(), free)
            except _TRANSIENT as exc:
                log.warning("claim failed (%s); retrying in %.2fs", exc, delay, extra={"worker_id": self.id})
                # Waiting out Redis is progress (readiness reports the outage).
                self.liveness.progressed(CLAIM_LOOP, pause_s=delay)
                healthy = True
                await _wait(self._stopping, delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
                continue
            except Exception:
                # Not an outage: a restart may cure it, so this round does not count as progress.
                log.exception("claim failed; retrying in %.2fs", delay, extra={"worker_id": self.id})
                healthy = False
                await _wait(self._stopping, delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
                continue
            healthy = True
            delay = _BACKOFF_START_S
            self.liveness.redis_ok()
            if not claimed:
                await self.wake.wait(IDLE_WAIT_S)
                continue
            for task in claimed:
                self._start(task)

    def _start(self, claimed: ClaimedTask) -> None:
        earlier = self._running.get(claimed.id)
        if earlier is not None:
            # Our lease on an earlier attempt ran out and we claimed the task again.
            earlier[0].cancel()
        self._running[claimed.id] = (asyncio.create_task(self._run_one(claimed)), claimed)

    async def _run_one(self, claimed: ClaimedTask) -> None:
        try:
            outcome = await self.executor.run(claimed)
        finally:
            entry = self._running.get(claimed.id)
            if entry is not None and entry[1] is claimed:
                del self._running[claimed.id]
            self._slot_freed.set()
        self.flusher.add(outcome)
        self.processed += 1
        if not outcome.ok:
            self.failed += 1

    # ------------------------------------------------------------------ heartbeat

    def _held(self) -> tuple[list[str], int, int]:
        """Ids whose leases the heartbeat renews: running ones and those not yet reported."""
        self._beat_runs = {task_id: claimed for task_id, (_, claimed) in self._running.items()}
        return [*self._running, *self.flusher.pending_ids()], self.processed, self.failed

    async def _on_heartbeat(self, reply: HeartbeatReply) -> None:
        for task_id in reply.lost_task_ids:
            entry = self._running.get(task_id)
            # Only the run the heartbeat asked about: while it was in flight, that attempt may have
            # been reported and the task claimed again by us; the new attempt is ours.
            if entry is not None and entry[1] is self._beat_runs.get(task_id):
                entry[0].cancel()
                log.warning(
                    "task %s (attempt %d) is no longer this worker's (cancelled, reaped or reassigned); "
                    "stopped running it",
                    task_id,
                    entry[1].attempt,
                    extra={"task_id": task_id, "attempt": entry[1].attempt, "worker_id": self.id},
                )
        if reply.drain_requested and not self.draining:
            self.draining = True
            log.info("drain requested: no more claims", extra={"worker_id": self.id})
        if not reply.registered and not self._stopping.is_set():
            log.warning(
                "the scheduler declared this worker lost; registering again", extra={"worker_id": self.id}
            )
            await self._register()

    # ------------------------------------------------------------------ stopping

    async def _shutdown(self) -> None:
        self.liveness.watch(STOPPING)
        grace_s = self.settings.worker.grace_s
        deadline = time.monotonic() + grace_s
        while self._running and not self._hurry.is_set():
            self.liveness.progressed(STOPPING)  # a liveness probe must not kill us inside the grace
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._slot_freed.clear()
            await _wait(self._slot_freed, min(remaining, IDLE_WAIT_S))
        await self._hand_back_running()
        if not await self.flusher.drain(_SHUTDOWN_STEP_TIMEOUT_S):
            log.warning("could not report every outcome before stopping", extra={"worker_id": self.id})
        await self.heartbeat.close()
        try:
            async with asyncio.timeout(_SHUTDOWN_STEP_TIMEOUT_S):
                await self.store.deregister_worker(self.id, "stopped")
        except Exception as exc:
            log.warning("could not deregister (%s); the scheduler will see this worker as lost", exc)
        self.registered = False
        log.info("stopped: %d attempts processed", self.processed, extra={"worker_id": self.id})

    async def _hand_back_running(self) -> None:
        runs = list(self._running.values())
        if not runs:
            return
        stopped = [claimed for task, claimed in runs if task.cancel()]
        await asyncio.wait([task for task, _ in runs], timeout=_SHUTDOWN_STEP_TIMEOUT_S)
        if not stopped:
            return
        ids = [claimed.id for claimed in stopped]
        try:
            async with asyncio.timeout(_SHUTDOWN_STEP_TIMEOUT_S):
                released = await self.store.hand_back(self.id, ids, "handed back: worker shutting down")
        except Exception as exc:
            log.warning(
                "could not hand back %d tasks (%s); they run again when their leases expire",
                len(ids),
                exc,
                extra={"worker_id": self.id},
            )
            return
        log.info("handed back %d unfinished tasks", len(released), extra={"worker_id": self.id})

    async def _close(self) -> None:
        for task, _ in list(self._running.values()):
            task.cancel()
        await self.heartbeat.close()
        await self.flusher.close()
        await self.progress.close()
        await self.wake.close()
        await self._wake_client.aclose()
        await self.executor.close()
        await self.probes.close()

    # ------------------------------------------------------------------ probes

    @property
    def running(self) -> int:
        return len(self._running)

    def _healthz(self) -> Response:
        return verdict(*self.liveness.check())

    def _readyz(self) -> Response:
        if self._stopping.is_set():
            return verdict(False, "stopping")
        if self.draining:
            return verdict(False, "draining")
        if not self.registered:
            return verdict(False, "not registered yet")
        redis_ok, why = self.liveness.redis_check()
        if not redis_ok:
            return verdict(False, why)
        return verdict(True, "ready")

    def _metrics(self) -> Response:
        return 200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(self.running, self.concurrency)


async def serve(settings: Settings, early_stop: EarlyStop) -> Worker:
    """Run a worker until a stop signal (also one that came during start-up); returns it stopped."""
    # claims and completions: shoal.core.lean_redis; the scripts' library is the scheduler's to load
    store = Store.from_settings(settings, lean_scripts=True, load_library=False)
    worker = Worker(settings, store)
    early_stop.hand_over(asyncio.get_running_loop(), worker.request_stop)
    try:
        await worker.run()
    finally:
        await store.close()
    return worker


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    if event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def _advertised_host() -> str:
    """The address others reach this worker on: the pod IP in a cluster, else loopback."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return "127.0.0.1" if address.startswith("127.") else address
