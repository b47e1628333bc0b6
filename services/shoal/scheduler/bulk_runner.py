"""The bulk runner: the leader works through bulk cancel/retry jobs, one chunk at a time.

Jobs are records in Redis (`Store.bulk`), so a job a leader leaves unfinished when it
dies is resumed by the next one from the position saved after its last chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from shoal.core.store import Store
from shoal.scheduler import metrics

log = logging.getLogger(__name__)

CHUNK = 500  # tasks read, matched and acted on per step
POLL_S = 0.2  # how soon a new job starts
YIELD_S = 0.0  # between chunks: let the API and the other leader loops run


class BulkRunner:
    def __init__(self, store: Store, chunk: int = CHUNK) -> None:
        self.store = store
        self.chunk = chunk

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            busy = False
            try:
                busy = await self.step_all()
            except RedisError as exc:
                metrics.BULK_ERRORS.inc()
                log.warning("bulk runner round failed", extra={"error": str(exc)})
            except Exception:
                metrics.BULK_ERRORS.inc()
                log.exception("bulk runner round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=YIELD_S if busy else POLL_S)

    async def step_all(self) -> bool:
        """One chunk of every unfinished job; True if any job has more to do."""
        busy = False
        for job_id in await self.store.bulk.active():
            job = await self.store.bulk.get(job_id)
            if job is None or job.finished:
                continue
            try:
                after = await self.store.bulk.step(job, self.chunk)
            except RedisError:
                raise
            except Exception as exc:  # a bug or bad data: the job fails loudly, the runner goes on
                log.exception("bulk job %s failed", job_id)
                await self.store.bulk.fail(job_id, f"{type(exc).__name__}: {exc}")
                continue
            metrics.BULK_TASKS.labels(job.action).inc(after.changed - job.changed)
            if after.finished:
                log.info(
                    "bulk %s job %s %s: %d changed, %d skipped of %d matched (%d scanned)",
                    after.action, after.id, after.state,
                    after.changed, after.skipped, after.matched, after.scanned,
                )  # fmt: skip
            else:
                busy = True
        return busy
