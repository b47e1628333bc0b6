"""A task's dependents, as GET /api/v1/tasks/{id} lists them: waiting, released, cascaded, or
submitted after it ended; bounded, with the count of all of them; null where not read."""

from __future__ import annotations

import httpx

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, work_once
from shoal import Client, task_request
from shoal.core.store import LISTED_DEPENDENTS, Store
from store_helpers import failed, ok, run_to_failure, run_to_success, spec, submit, submit_specs


async def dependents_of(store: Store, task_id: str) -> tuple[list[str] | None, int | None]:
    task = await store.get(task_id)
    assert task is not None
    return task.dependents, task.dependents_count


async def test_dependents_stay_listed_through_release_and_cascade(store: Store) -> None:
    top = spec()
    left, right = spec(depends_on=[top.id]), spec(depends_on=[top.id], max_retries=0)
    bottom = spec(depends_on=[left.id, right.id])
    t, lft, r, b = await submit_specs(store, [top, left, right, bottom])
    assert await dependents_of(store, t) == (sorted([lft, r]), 2)  # waiting on it
    await run_to_success(store, t)
    assert await dependents_of(store, t) == (sorted([lft, r]), 2)  # released
    assert await dependents_of(store, r) == ([b], 1)
    claimed = await store.claim("w1", ["default"], 2)
    await store.complete("w1", [ok(c) if c.id == lft else failed(c, retry=False) for c in claimed])
    assert (await store.get(b)).state == "upstream_failed"  # type: ignore[union-attr]
    assert await dependents_of(store, r) == ([b], 1)  # cascaded
    assert await dependents_of(store, lft) == ([b], 1)  # released, to a task that did not run
    assert await dependents_of(store, b) == ([], 0)


async def test_a_dependent_submitted_after_its_dependency_ended_is_listed(store: Store) -> None:
    done, dead = await submit(store), await submit(store, max_retries=0)
    await run_to_success(store, done)
    await run_to_failure(store, dead)
    (late,) = await store.submit([spec(depends_on=[done, dead])])
    assert await dependents_of(store, done) == ([late.id], 1)
    assert await dependents_of(store, dead) == ([late.id], 1)


async def test_dependents_follow_a_retry_with_dependents(store: Store) -> None:
    parent = await submit(store, max_retries=0)
    children = [(await store.submit([spec(depends_on=[parent])]))[0].id for _ in range(3)]
    await run_to_failure(store, parent)
    assert await dependents_of(store, parent) == (sorted(children), 3)
    await store.retry_with_dependents(parent, 100)
    assert await dependents_of(store, parent) == (sorted(children), 3)  # waiting again, once each


def test_the_api_lists_a_bounded_number_with_the_count(api: ApiServer, client: Client) -> None:
    n = LISTED_DEPENDENTS + 50
    parent, *children = client.submit_batch(
        [task_request("p", ref="p")] + [task_request("c", depends_on=["p"]) for _ in range(n)]
    )
    assert parent["dependents"] is None  # a submit answer does not read them
    got = httpx.get(f"{api.url}/api/v1/tasks/{parent['id']}").json()
    assert got["dependents_count"] == n
    assert got["dependents"] == sorted(c["id"] for c in children)[:LISTED_DEPENDENTS]
    listed = client.list_tasks(limit=5)["tasks"]
    assert {t["dependents"] for t in listed} == {None}  # listings do not read them either
    child = client.get(children[0]["id"])
    assert (child["depends_on"], child["dependents"], child["dependents_count"]) == ([parent["id"]], [], 0)


async def test_the_wait_answer_lists_them_too(api: ApiServer, client: Client, store: Store) -> None:
    parent, child = client.submit_batch([task_request("p", ref="p"), task_request("c", depends_on=["p"])])
    await work_once(store)
    assert client.wait(parent["id"], timeout_s=5)["dependents"] == [child["id"]]
