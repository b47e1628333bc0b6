"""Bulk jobs in Redis: their records, and one chunk of work at a time.

Reached as `Store.bulk`. The leader's bulk runner calls `step` until the job is finished;
every step saves the job's progress and its position in each index it walks.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from shoal.core import jsonutil
from shoal.core.bulk import FILTER_FIELDS, BulkFilter, BulkJob
from shoal.core.errors import Conflict, NotFound

if TYPE_CHECKING:
    from shoal.core.store import Store

_MS = 1000.0
KEEP_JOBS = 200  # finished jobs kept for the listing
JOB_TTL_S = 7 * 86400
PREVIEW_BUDGET = 20_000  # candidates a preview reads at most
FAILURE_SCAN = 10_000  # newest failed tasks grouped by error
SIGNATURE_CHARS = 300


def error_signature(error: str | None) -> str:
    """What failures are grouped by: the error's first line, bounded."""
    if not error:
        return "(no error message)"
    return error.strip().splitlines()[0][:SIGNATURE_CHARS] if error.strip() else "(no error message)"


def _now_ms() -> int:
    return int(time.time() * _MS)


def _opt_s(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value) / _MS


def job_from_hash(h: dict[str, str]) -> BulkJob:
    raw_filter = jsonutil.loads(h.get("filter") or "{}")
    return BulkJob(
        id=h["id"],
        action=h["action"],  # type: ignore[arg-type]
        filter=BulkFilter(**raw_filter),
        state=h["state"],
        created_at=float(h["created_at"]) / _MS,
        updated_at=float(h.get("updated_at") or h["created_at"]) / _MS,
        started_at=_opt_s(h.get("started_at")),
        finished_at=_opt_s(h.get("finished_at")),
        scanned=int(h.get("scanned") or 0),
        matched=int(h.get("matched") or 0),
        changed=int(h.get("changed") or 0),
        skipped=int(h.get("skipped") or 0),
        estimate=int(h.get("estimate") or 0),
        error=h.get("error") or None,
        cursors=jsonutil.loads(h.get("cursors") or "{}"),
        created_by=h.get("created_by") or "",
    )


class BulkStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    async def create(self, action: str, bulk_filter: BulkFilter, created_by: str = "") -> BulkJob:
        """Record a job; the leader's runner starts it within a moment. `created_by`: the actor
        the audit records on each task the job changes."""
        states = bulk_filter.resolved_states(action)  # ValueError names a state the action cannot take
        job_id = os.urandom(8).hex()
        now = _now_ms()
        sizes = [await self.store.count_in_state(state, now) for state in states]
        key = self.keys.bulk_job(job_id)
        mapping: dict[Any, Any] = {
            "id": job_id,
            "action": action,
            "filter": jsonutil.dumps({**bulk_filter.as_dict(), "states": states}),
            "state": "queued",
            "created_at": now,
            "updated_at": now,
            "estimate": sum(int(n) for n in sizes),
            "cursors": "{}",
            "created_by": created_by,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.zadd(self.keys.bulk_jobs, {job_id: now})
            pipe.zadd(self.keys.bulk_active, {job_id: now})
            await pipe.execute()
        await self._forget_old()
        job = await self.get(job_id)
        assert job is not None
        return job

    async def get(self, job_id: str) -> BulkJob | None:
        h: dict[str, str] = await self.redis.hgetall(self.keys.bulk_job(job_id))  # type: ignore[assignment]
        return job_from_hash(h) if h else None

    async def recent(self, limit: int = 50) -> list[BulkJob]:
        ids = [str(i) for i in await self.redis.zrevrange(self.keys.bulk_jobs, 0, limit - 1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.bulk_job(job_id))
            rows = await pipe.execute()
        return [job_from_hash(h) for h in rows if h]

    async def active(self) -> list[str]:
        """Ids of unfinished jobs, oldest first."""
        return [str(i) for i in await self.redis.zrange(self.keys.bulk_active, 0, -1)]

    async def stop(self, job_id: str) -> BulkJob:
        """Stop a job that has not finished; what it already did stays done."""
        job = await self.get(job_id)
        if job is None:
            raise NotFound(f"bulk job {job_id} not found")
        if job.finished:
            raise Conflict(f"bulk job {job_id} is already {job.state}")
        await self._finish(job_id, "stopped")
        stopped = await self.get(job_id)
        assert stopped is not None
        return stopped

    async def step(self, job: BulkJob, chunk: int) -> BulkJob:
        """Do one chunk of `job` (at most `chunk` candidates, plus the rest of a run of equal
        scores); returns the job as saved afterwards."""
        if job.state == "queued":
            job.state = "running"
            job.started_at = time.time()
            await self.redis.hset(
                self.keys.bulk_job(job.id), mapping={"state": "running", "started_at": _now_ms()}
            )
        states = job.filter.states
        upper = int(job.created_at * _MS)
        ids: list[str] = []
        for state in states:  # the first state with candidates left; walked ones are marked 'end'
            if job.cursors.get(state) == "end":
                continue
            ids, cursor = await self.store.state_index_page(state, job.cursors.get(state), upper, chunk)
            job.cursors[state] = cursor
            if ids:
                break
        if not ids:
            await self.redis.hset(self.keys.bulk_job(job.id), "cursors", jsonutil.dumps(job.cursors))
            await self._finish(job.id, "done")
            return await self._reread(job.id)
        rows = await self._fields(ids)
        chosen = [i for i, row in zip(ids, rows, strict=True) if job.filter.matches(row)]
        scanned, matched = len(ids), len(chosen)
        if job.action == "cancel":
            outcomes = await self.store.cancel_many(chosen, states)
        else:
            outcomes = await self.store.retry_many(chosen)
        changed = sum(1 for o in outcomes if o == "ok")
        skipped = matched - changed
        key = self.keys.bulk_job(job.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "scanned", scanned)
            pipe.hincrby(key, "matched", matched)
            pipe.hincrby(key, "changed", changed)
            pipe.hincrby(key, "skipped", skipped)
            pipe.hset(key, mapping={"cursors": jsonutil.dumps(job.cursors), "updated_at": _now_ms()})
            await pipe.execute()
        done = [task_id for task_id, o in zip(chosen, outcomes, strict=True) if o == "ok"]
        if done:  # after the counts: a Redis error here loses this chunk's entries, loudly (runner log)
            await self.store.audit(job.created_by or "unknown", f"bulk_{job.action}", done, f"job {job.id}")
        return await self._reread(job.id)

    async def preview(
        self, action: str, bulk_filter: BulkFilter, budget: int = PREVIEW_BUDGET
    ) -> dict[str, Any]:
        """How many tasks a job with this filter would act on now, reading at most `budget`
        candidates: {"matched", "scanned", "complete", "sample": first ids}."""
        states = bulk_filter.resolved_states(action)
        checked = BulkFilter(**{**bulk_filter.as_dict(), "states": states})
        upper = _now_ms()
        matched, scanned = 0, 0
        sample: list[str] = []
        for state in states:
            cursor: str | None = None
            while scanned < budget:
                ids, cursor = await self.store.state_index_page(
                    state, cursor, upper, min(1000, budget - scanned)
                )
                if ids:
                    rows = await self._fields(ids)
                    hits = [i for i, row in zip(ids, rows, strict=True) if checked.matches(row)]
                    matched += len(hits)
                    scanned += len(ids)
                    sample += hits[: max(0, 20 - len(sample))]
                if cursor == "end":
                    break
            else:
                return {"matched": matched, "scanned": scanned, "complete": False, "sample": sample}
        return {"matched": matched, "scanned": scanned, "complete": True, "sample": sample}

    async def failure_groups(self, budget: int = FAILURE_SCAN) -> dict[str, Any]:
        """Failed tasks grouped by error (the first line of it), most frequent first; reads
        the newest `budget` failed tasks."""
        ids = await self.store.newest_in_state("failed", budget)
        groups: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            rows = await self.store.task_fields(part, ("error", "name", "queue", "finished_at", "state"))
            for task_id, (error, name, queue, finished, state) in zip(part, rows, strict=True):
                if state != "failed":
                    continue
                signature = error_signature(error)
                g = groups.get(signature)
                if g is None:
                    g = groups[signature] = {
                        "error": signature, "count": 0, "names": {}, "queues": {}, "latest_at": None,
                        "sample_ids": [],
                    }  # fmt: skip
                g["count"] += 1
                g["names"][name] = g["names"].get(name, 0) + 1
                g["queues"][queue] = g["queues"].get(queue, 0) + 1
                at = _opt_s(finished)
                if at is not None and (g["latest_at"] is None or at > g["latest_at"]):
                    g["latest_at"] = at
                if len(g["sample_ids"]) < 5:
                    g["sample_ids"].append(task_id)
        total = await self.store.count_in_state("failed", _now_ms())
        ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["error"]))
        return {"groups": ordered, "scanned": len(ids), "failed_total": total, "complete": len(ids) >= total}

    async def _fields(self, ids: list[str]) -> list[list[str | None]]:
        return await self.store.task_fields(ids, FILTER_FIELDS)

    async def _reread(self, job_id: str) -> BulkJob:
        job = await self.get(job_id)
        if job is None:
            raise NotFound(f"bulk job {job_id} not found")
        return job

    async def _finish(self, job_id: str, state: str, error: str | None = None) -> None:
        now = _now_ms()
        key = self.keys.bulk_job(job_id)
        mapping: dict[Any, Any] = {"state": state, "finished_at": now, "updated_at": now}
        if error:
            mapping["error"] = error
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, JOB_TTL_S)
            pipe.zrem(self.keys.bulk_active, job_id)
            await pipe.execute()

    async def fail(self, job_id: str, error: str) -> None:
        await self._finish(job_id, "failed", error)

    async def _forget_old(self) -> None:
        old = [str(i) for i in await self.redis.zrange(self.keys.bulk_jobs, 0, -KEEP_JOBS - 1)]
        if old:
            active = set(await self.active())
            drop = [i for i in old if i not in active]
            if drop:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zrem(self.keys.bulk_jobs, *drop)
                    for job_id in drop:
                        pipe.delete(self.keys.bulk_job(job_id))
                    await pipe.execute()
