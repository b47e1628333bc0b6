"""The autoscaler loop: observe the queues, decide with the policy, apply through a backend.

Runs only in the elected leader. Each step reads the load from the Store, asks the pure policy
for a replica count, applies it, and makes the decision visible: a log line, Prometheus
metrics, a `scaling` event and an entry in the scaling history (GET /api/v1/scaling).

Manual scaling: when the backend's count differs from what this autoscaler last applied,
someone else changed it (`kubectl scale`). That count is then kept for
SHOAL_SCALER_MANUAL_HOLD_S, logged and recorded with its reason; afterwards the autoscaler
resumes from whatever count it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter, Gauge

from shoal.core.kube_settings import KubeSettings
from shoal.core.scaling_settings import ScalingSettings
from shoal.core.settings import WorkerSettings
from shoal.core.store import Store
from shoal.scheduler.kube import K8sError
from shoal.scheduler.scaling.backends import (
    ScaleInPlan,
    ScalingBackend,
    ScalingBackendError,
    backend_from_settings,
)
from shoal.scheduler.scaling.policy import Recommendation, ScalingDecision, ScalingInput, decide

log = logging.getLogger(__name__)

DECISIONS = Counter("shoal_scaling_decisions", "Autoscaler decisions by direction", ["direction"])
REPLICAS_DESIRED = Gauge("shoal_worker_replicas_desired", "Worker replicas the autoscaler asks for")
REPLICAS_ACTUAL = Gauge("shoal_worker_replicas_actual", "Worker replicas that exist")
BACKEND_ERRORS = Counter(
    "shoal_scaling_errors", "Autoscaler steps that failed: the backend could not be reached"
)

RATE_WINDOW_S = 60
"""Arrival rate and run time are averaged over about this many seconds."""

_SERVING_STATES = frozenset({"active", "draining"})


@dataclass(frozen=True, slots=True)
class Load:
    """The load the policy sees, as read from the Store."""

    ready_by_queue: dict[str, int]
    running: int
    arrival_rate_per_s: float
    mean_run_time_s: float


class Autoscaler:
    def __init__(
        self,
        store: Store,
        backend: ScalingBackend,
        settings: ScalingSettings,
        worker_concurrency: int,
        *,
        queues: Collection[str] | None = None,
        record_every_s: float = 60.0,
    ) -> None:
        """`queues`: the queues the scaled workers serve (None: all); `record_every_s`: an
        unchanged decision is recorded again after this long, so the history stays current."""
        if worker_concurrency < 1:
            raise ValueError("worker_concurrency must be >= 1")
        self.store = store
        self.backend = backend
        self.settings = settings
        self.worker_concurrency = worker_concurrency
        self.queues = frozenset(queues) if queues is not None else None
        self.record_every_s = record_every_s
        self.last_decision: ScalingDecision | None = None
        self._recent: tuple[Recommendation, ...] = ()
        self._last_applied: int | None = None
        self._manual_at: float | None = None
        self._last_recorded: tuple[tuple[Any, ...], float] | None = None

    @classmethod
    def from_settings(
        cls,
        store: Store,
        settings: ScalingSettings,
        worker: WorkerSettings,
        kube: KubeSettings | None = None,
    ) -> Autoscaler:
        """The autoscaler and backend the settings name, sized by the workers' concurrency and queues.

        The `none` backend reports the live registered workers as its count. The caller owns
        the result: `await autoscaler.close()` at shutdown (the local backend stops its workers).
        """

        async def live_workers() -> int:
            return sum(1 for w in await store.list_workers() if w.state in _SERVING_STATES)

        backend = backend_from_settings(
            settings.scaler_backend, count_workers=live_workers, kube_settings=kube
        )
        return cls(store, backend, settings, worker.concurrency, queues=worker.queue_list)

    # ---- one decision -------------------------------------------------------------------------

    async def step(self, now: float) -> ScalingDecision:
        """Observe, decide and apply once; `now` is seconds since the epoch."""
        load = await self.observe()
        current = await self.backend.current()
        notes = self._notice_manual_change(current, now)
        s = self.settings
        decision = decide(
            ScalingInput(
                ready_by_queue=load.ready_by_queue,
                running=load.running,
                current=current,
                concurrency=self.worker_concurrency,
                min_replicas=s.scaler_min_replicas,
                max_replicas=s.scaler_max_replicas,
                arrival_rate_per_s=load.arrival_rate_per_s,
                mean_run_time_s=load.mean_run_time_s,
                max_step_up=s.scaler_max_step_up,
                max_step_down=s.scaler_max_step_down,
                scale_down_window_s=s.scaler_scale_down_window_s,
                recent=self._recent,
                manual_change_at=self._manual_at,
                manual_hold_s=s.scaler_manual_hold_s,
            ),
            now,
        )
        self._recent = decision.recent
        if not decision.manual_hold and self._manual_at is not None:
            notes.append(f"manual hold of {s.scaler_manual_hold_s:g}s over: autoscaling resumed")
            log.info("manual replica hold over, autoscaling resumed", extra={"replicas": current})
            self._manual_at = None
        if notes:
            decision = replace(decision, reason="; ".join([decision.reason, *notes]))
        decision, applied = await self._apply(decision)
        await self._report(decision, applied)
        self.last_decision = decision
        return decision

    async def observe(self) -> Load:
        """The load on the queues the workers serve, from the Store."""
        served = [
            q for q in await self.store.queue_stats() if self.queues is None or q["name"] in self.queues
        ]
        series = await self.store.throughput(RATE_WINDOW_S)
        _, run_ms = await self.store.samples()
        finished = sum(n for row in series for key, n in row.items() if key != "ts")
        # Finished per second stands in for arrivals: equal under a steady load, and a growing
        # backlog shows up in `ready` anyway.
        # A paused queue's backlog waits for a person, not for workers: it does not count.
        return Load(
            ready_by_queue={q["name"]: 0 if q.get("paused") else int(q["ready"]) for q in served},
            running=sum(int(q["running"]) for q in served),
            arrival_rate_per_s=finished / RATE_WINDOW_S,
            mean_run_time_s=(sum(run_ms) / len(run_ms) / 1000.0) if run_ms else 0.0,
        )

    def _notice_manual_change(self, current: int, now: float) -> list[str]:
        notes: list[str] = []
        if not self.backend.applies_decisions:
            return notes
        if self._last_applied is not None and current != self._last_applied:
            self._manual_at = now
            notes.append(
                f"replicas changed from {self._last_applied} to {current} outside Shoal (kubectl scale?):"
                f" kept for {self.settings.scaler_manual_hold_s:g}s"
            )
            log.warning(
                "worker replicas changed outside Shoal; respecting it for the manual hold",
                extra={
                    "applied": self._last_applied,
                    "found": current,
                    "hold_s": self.settings.scaler_manual_hold_s,
                },
            )
        self._last_applied = current
        return notes

    async def _apply(self, decision: ScalingDecision) -> tuple[ScalingDecision, bool]:
        """Apply a change of count; False (and the error in the reason) when the backend failed."""
        if not self.backend.applies_decisions or decision.desired == decision.current:
            return decision, True
        plan = await self.scale_in_plan() if decision.desired < decision.current else None
        try:
            await self.backend.apply(decision.desired, plan)
        except Exception as e:
            # The count is unknown now: do not mistake our own half-done change for a manual one.
            self._last_applied = None
            log.error(
                "scaling decision could not be applied",
                extra={"desired": decision.desired, "backend": self.backend.name, "error": str(e)},
            )
            return replace(decision, reason=f"{decision.reason}; NOT applied: {e}"), False
        self._last_applied = decision.desired
        return decision, True

    async def scale_in_plan(self) -> ScaleInPlan:
        """Each serving worker's running tasks, so the backend removes idle workers first."""
        workers = await self.store.list_workers()
        return ScaleInPlan({w.id: w.running for w in workers if w.state in _SERVING_STATES})

    async def _report(self, decision: ScalingDecision, applied: bool) -> None:
        DECISIONS.labels(decision.direction).inc()
        REPLICAS_DESIRED.set(decision.desired)
        REPLICAS_ACTUAL.set(await self.backend.actual())
        record = self.record_of(decision, applied)
        signature = (decision.desired, decision.current, decision.manual_hold, applied)
        changed = self._last_recorded is None or self._last_recorded[0] != signature
        due = self._last_recorded is not None and decision.at - self._last_recorded[1] >= self.record_every_s
        if decision.direction == "hold" and not changed and not due:
            log.debug("scaling decision: %s", decision.reason)
            return
        # `ts` and `reason` would clash with the log line's own time and message.
        log.info(
            "scaling decision: %s",
            decision.reason,
            extra={k: v for k, v in record.items() if k not in ("ts", "reason")},
        )
        await self.store.publish_event({"kind": "scaling", **record})
        await self.store.record_scaling(record)
        self._last_recorded = (signature, decision.at)

    def record_of(self, decision: ScalingDecision, applied: bool = True) -> dict[str, Any]:
        """The history entry and event body of a decision."""
        s = self.settings
        return {
            **decision.to_dict(),
            "applied": applied,
            "backend": self.backend.name,
            "min": s.scaler_min_replicas,
            "max": s.scaler_max_replicas,
        }

    # ---- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Decide every SHOAL_SCALER_INTERVAL_S until `stop` is set.

        A backend that cannot be reached (the Kubernetes API, a worker process that does not
        start) is logged and tried again next interval; any other error propagates to the loop
        supervisor (`shoal.scheduler.supervisor`), which counts it and restarts this loop.
        """
        interval = self.settings.scaler_interval_s
        # Another leader may have scaled while this one was not leading: what it finds now is
        # the starting point, not a manual change.
        self._last_applied = None
        log.info("autoscaler started", extra={"backend": self.backend.name, "interval_s": interval})
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.step(time.time())
            except (K8sError, ScalingBackendError) as e:
                BACKEND_ERRORS.inc()
                log.error("autoscaler step failed; trying again next interval", extra={"error": str(e)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, interval - (time.monotonic() - started)))
        log.info("autoscaler stopped", extra={"backend": self.backend.name})

    async def close(self) -> None:
        """Release the backend (the local backend stops its worker processes)."""
        await self.backend.close()
