"""A listing page's documents built straight from the records (`Store.list_public`, what GET
/api/v1/tasks answers) are the documents `task_public` makes of the same tasks read as `Task`s:
in every state, with results, errors, tracebacks, progress, dependencies and odd JSON."""

from __future__ import annotations

from typing import Any

import orjson

from shoal.core.models import Outcome
from shoal.core.progress import ProgressReport
from shoal.core.public import task_public
from shoal.core.states import TaskState
from shoal.core.store import Store
from store_helpers import claim_one, failed, ok, spec, submit, submit_specs

ODD_ARGS: list[Any] = [1.5e300, -0.0, 'é ✓ \u2028 \x00 "q"', {"n": [None, True, {"d": []}]}, 2**63 - 1]


async def _every_state(store: Store) -> dict[str, str]:
    """One task in each state, each with what that state carries; returns state -> id."""
    ids: dict[str, str] = {}
    ids["queued"] = await submit(store, args=ODD_ARGS, kwargs={"k": "v", "ü": 0.1}, priority=-3)
    ids["scheduled"] = await submit(store, delay_s=3600, idempotency_key="idem-1", flow_key="acct-9")
    parent = spec(queue="work")
    child = spec(depends_on=[parent.id or ""], results_to="parents")
    await submit_specs(store, [parent, child])
    ids["pending"] = child.id or ""
    running = await claim_one(store, queues=["work"])  # the parent
    assert running.id == parent.id
    assert await store.progress.report("w1", running.id, running.attempt, ProgressReport(0.25, "a quarter"))
    ids["running"] = running.id
    done_id = await submit(store, queue="done")
    done = await claim_one(store, queues=["done"])
    await store.complete("w1", [ok(done, result={"rows": [1, 2.5, "x"], "ok": True})])
    ids["succeeded"] = done_id
    retried_id = await submit(store, queue="retry", max_retries=2)
    first = await claim_one(store, queues=["retry"])
    await store.complete("w1", [failed(first, error="first try")])  # queued again, with its error
    ids["retried"] = retried_id
    bad_parent = spec(queue="bad", max_retries=0)
    orphan = spec(depends_on=[bad_parent.id or ""])
    await submit_specs(store, [bad_parent, orphan])
    bad = await claim_one(store, queues=["bad"])
    await store.complete(
        "w1", [Outcome(task_id=bad.id, attempt=bad.attempt, ok=False, error="boom", traceback="Traceback: x")]
    )
    ids["failed"], ids["upstream_failed"] = bad_parent.id or "", orphan.id or ""
    ids["cancelled"] = await submit(store, queue="gone")
    await store.cancel(ids["cancelled"])
    return ids


def _json(value: Any) -> Any:
    """What a client reads of an answer: the value rendered by orjson and parsed back."""
    return orjson.loads(orjson.dumps(value))


async def test_documents_from_records_equal_documents_from_tasks(store: Store) -> None:
    ids = await _every_state(store)
    for state in [None, *TaskState]:
        public, public_cursor = await store.list_public(state=state, limit=100)
        tasks, cursor = await store.list_tasks(state=state, limit=100)
        assert public_cursor == cursor
        assert [d["id"] for d in public] == [t.id for t in tasks]
        assert _json(public) == _json([task_public(t) for t in tasks])
    everything, _ = await store.list_public(limit=100)
    seen = {d["id"]: d for d in _json(everything)}
    assert set(seen) == set(ids.values())
    assert {d["state"] for d in seen.values()} == {s for s in ids if s != "retried"} | {"queued"}
    # What each state carries is in the documents (not only equal on both sides).
    assert seen[ids["queued"]]["args"] == _json(ODD_ARGS)
    assert seen[ids["queued"]]["kwargs"] == {"k": "v", "ü": 0.1}
    assert seen[ids["succeeded"]]["result"] == {"rows": [1, 2.5, "x"], "ok": True}
    assert seen[ids["running"]]["progress"]["message"] == "a quarter"
    assert seen[ids["failed"]]["traceback"] == "Traceback: x"
    assert seen[ids["retried"]]["error"] == "first try"
    assert seen[ids["pending"]]["depends_on"] and seen[ids["pending"]]["results_to"] == "parents"
    assert seen[ids["scheduled"]]["idempotency_key"] == "idem-1"
    assert seen[ids["scheduled"]]["scheduled_for"] is not None


async def test_pages_of_documents_follow_the_cursor_as_tasks_do(store: Store) -> None:
    await submit_specs(store, [spec(queue=f"q{i % 3}", name=f"n{i % 2}") for i in range(25)])
    for filters in ({}, {"queue": "q1"}, {"name": "n0"}, {"state": TaskState.QUEUED, "queue": "q2"}):
        cursor: str | None = None
        pages = 0
        while True:
            public, next_public = await store.list_public(limit=4, cursor=cursor, **filters)  # type: ignore[arg-type]
            tasks, next_cursor = await store.list_tasks(limit=4, cursor=cursor, **filters)  # type: ignore[arg-type]
            assert _json(public) == _json([task_public(t) for t in tasks])
            assert next_public == next_cursor
            pages += 1
            if next_cursor is None:
                break
            cursor = next_cursor
        assert pages > 1, f"the filter {filters} gave one page only: nothing was paged"
