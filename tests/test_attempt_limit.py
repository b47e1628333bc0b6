"""After a manual retry a task has a fresh budget: the API, explain and the dashboard say
"attempt 2 of 2", never "attempt 2 of 1"."""

from __future__ import annotations

import time

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer, work_once
from dashboard_support import no_exceptions, open_page
from shoal.core.public import task_public
from shoal.core.store import Store
from shoal.scheduler.explain import explain_task
from store_helpers import claim_one, must_get, submit


async def test_a_manual_retry_raises_the_attempts_allowed(store: Store) -> None:
    task_id = await submit(store, max_retries=0)
    await work_once(store, ok=False)
    failed = await must_get(store, task_id)
    assert (failed.state.value, task_public(failed)["attempt_limit"]) == ("failed", 1)
    await store.retry(task_id)
    await claim_one(store)
    running = await must_get(store, task_id)
    assert (running.attempts, task_public(running)["attempt_limit"]) == (2, 2)
    reason = explain_task(running, now=time.time()).reason
    assert "attempt 2 of 2" in reason


def test_the_api_and_the_dashboard_show_the_raised_budget(
    api: ApiServer, redis_url: str, namespace: str, monkeypatch
) -> None:
    import asyncio

    from redis.asyncio import Redis

    from conftest import make_task_settings
    from shoal import task_request

    monkeypatch.setenv("SHOAL_DASHBOARD_AUTH", "none")
    monkeypatch.setenv("SHOAL_API_URL", api.url)
    with api.client() as client:
        task = client.submit_request(task_request("echo", max_retries=0))

    async def fail_retry_claim() -> None:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, make_task_settings())
        try:
            await work_once(store, ok=False)
            await store.retry(task["id"])
            await claim_one(store)
        finally:
            await store.close()

    asyncio.run(fail_retry_claim())
    with api.client() as client:
        shown = client.get(task["id"])
    assert (shown["attempts"], shown["attempt_limit"]) == (2, 2)
    at = open_page("tasks", {"task": task["id"]})
    no_exceptions(at)
    assert any(m.value == ":gray-badge[attempt 2 of 2]" for m in at.markdown)
