"""Progress reports of running attempts: one hash, task id -> JSON of the latest report.
Reached as `Store.progress`.

A report is written by the fenced `progress` script (only the current attempt of a running
task, on the worker that runs it) and published as a `progress` event. The report stays
with the task after the attempt ends (the last thing it reported) and goes with it when the
retention trim drops the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.core import jsonutil
from shoal.core.models import StoredProgress, Task
from shoal.core.progress import ProgressReport

if TYPE_CHECKING:
    from shoal.core.store import Store

EVENTS_STREAM_MAXLEN = 2000  # as the transition scripts cap it (_common.lua)


def parse(raw: str | None) -> StoredProgress | None:
    """A stored report from its JSON (None for none)."""
    if not raw:
        return None
    d = jsonutil.loads(raw)
    return StoredProgress(
        attempt=int(d.get("attempt") or 0),
        fraction=float(d.get("fraction") or 0.0),
        message=d.get("message") or None,
        at=int(d.get("at") or 0) / 1000,
    )


class ProgressStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    async def report(self, worker_id: str, task_id: str, attempt: int, report: ProgressReport) -> bool:
        """Store `report` as the progress of `attempt` of the task; False when that attempt is
        no longer running on `worker_id` (nothing stored then)."""
        scripts = self.store._scripts
        done = await scripts.progress(
            keys=self.store._k,
            args=[
                task_id,
                attempt,
                worker_id,
                repr(report.fraction),
                report.message or "",
                EVENTS_STREAM_MAXLEN,
            ],
        )
        return bool(done)

    async def of(self, task_ids: list[str]) -> list[StoredProgress | None]:
        """The latest report of each task, None for tasks that never reported one."""
        if not task_ids:
            return []
        raws = await self.redis.hmget(self.keys.progress, task_ids)
        return [parse(None if raw is None else str(raw)) for raw in raws]

    async def attach(self, tasks: list[Task]) -> None:
        """Fill in `progress` of each task (one round trip for a page of tasks)."""
        for task, found in zip(tasks, await self.of([t.id for t in tasks]), strict=True):
            task.progress = found
