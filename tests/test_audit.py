"""The audit over real HTTP and Redis: every action (submit, cancel, retry, retry with
dependents, drain, bulk) is recorded with who did it — the token's name, or the person the
dashboard's token names — on the task (`audit` in GET /tasks/{id}) and in GET /api/v1/audit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from api_fixtures import *  # noqa: F403 - the api_factory fixture
from api_fixtures import ApiServer, work_once
from shoal.core.store import Store
from store_helpers import register

ADMIN = "admin-token-0123456789"
DASHBOARD = "dashboard-token-0123456789"
OPS = "ops-bot-token-0123456789"


@pytest.fixture
def audited(api_factory, tmp_path: Path) -> ApiServer:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops-bot write {OPS}\n")
    return api_factory(api_token=ADMIN, api_dashboard_token=DASHBOARD, api_tokens_file=str(tokens))


def _http(api: ApiServer, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}", **headers}, timeout=10)


def _trail(http: httpx.Client, task_id: str) -> list[tuple[str, str]]:
    entries = http.get(f"/api/v1/tasks/{task_id}").json()["audit"]
    return [(e["actor"], e["action"]) for e in entries]


async def test_each_action_on_a_task_is_recorded_with_its_actor(audited: ApiServer, store: Store) -> None:
    before = time.time()
    with _http(audited, OPS) as bot, _http(audited, DASHBOARD, **{"X-Shoal-Actor": "alice"}) as alice:
        task = bot.post("/api/v1/tasks", json={"name": "fail", "max_retries": 0}).json()
        assert _trail(bot, task["id"]) == [("ops-bot", "submit")]
        await work_once(store, ok=False, retry=False)
        assert alice.post(f"/api/v1/tasks/{task['id']}/retry").status_code == 200
        assert alice.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 200
        assert bot.post(f"/api/v1/tasks/{task['id']}/retry", params={"dependents": "true"}).status_code == 200
        got = bot.get(f"/api/v1/tasks/{task['id']}").json()["audit"]
    assert [(e["actor"], e["action"]) for e in got] == [
        ("ops-bot", "submit"),
        ("alice (via dashboard)", "retry"),
        ("alice (via dashboard)", "cancel"),
        ("ops-bot", "retry_with_dependents"),
    ]
    assert got[-1]["detail"] == "0 dependents back to pending"
    assert all(before <= e["ts"] <= time.time() for e in got)
    assert [e["ts"] for e in got] == sorted(e["ts"] for e in got)


def test_a_refused_action_is_not_recorded(audited: ApiServer) -> None:
    with _http(audited, ADMIN) as admin:
        task = admin.post("/api/v1/tasks", json={"name": "echo", "queue": "nobody"}).json()
        assert admin.post(f"/api/v1/tasks/{task['id']}/retry").status_code == 409  # it is queued
        assert _trail(admin, task["id"]) == [("admin", "submit")]
        assert admin.post("/api/v1/tasks/no-such-task/cancel").status_code == 404
        assert all(e["action"] == "submit" for e in admin.get("/api/v1/audit").json()["entries"])


def test_a_batch_submit_is_one_entry_of_the_log_and_one_on_each_task(audited: ApiServer) -> None:
    items = [{"name": "echo", "queue": "nobody", "idempotency_key": f"k{i}"} for i in range(30)]
    with _http(audited, ADMIN) as admin:
        tasks = admin.post("/api/v1/tasks/batch", json={"tasks": items}).json()["tasks"]
        # The same batch again creates nothing, and records nothing.
        assert admin.post("/api/v1/tasks/batch", json={"tasks": items}).status_code == 200
        assert {tuple(_trail(admin, t["id"])) for t in tasks} == {(("admin", "submit"),)}
        (entry,) = admin.get("/api/v1/audit").json()["entries"]
    assert (entry["actor"], entry["action"], entry["tasks"]) == ("admin", "submit", 30)
    assert entry["task_ids"] == [t["id"] for t in tasks][:20]  # the first 20 ids, with the count of all


async def test_drain_and_bulk_jobs_are_in_the_log(audited: ApiServer, store: Store) -> None:
    await register(store, "worker-a")
    with _http(audited, DASHBOARD, **{"X-Shoal-Actor": "bob"}) as bob:
        assert bob.post("/api/v1/workers/worker-a/drain").status_code == 200
        job = bob.post("/api/v1/bulk", json={"action": "cancel", "filter": {"states": ["queued"]}}).json()
        entries = bob.get("/api/v1/audit", params={"limit": 10}).json()["entries"]
    assert [(e["actor"], e["action"], e.get("detail")) for e in entries] == [
        ("bob (via dashboard)", "bulk_cancel", f"job {job['id']}"),
        ("bob (via dashboard)", "drain", "worker worker-a"),
    ]


async def test_a_task_keeps_its_last_twenty_entries_and_the_trim_drops_them(
    audited: ApiServer, store: Store
) -> None:
    with _http(audited, ADMIN) as admin:
        task = admin.post("/api/v1/tasks", json={"name": "fail", "max_retries": 0}).json()
        for _ in range(12):
            await work_once(store, ok=False, retry=False)
            assert admin.post(f"/api/v1/tasks/{task['id']}/retry").status_code == 200
            assert admin.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 200
        trail = _trail(admin, task["id"])
    assert len(trail) == 20 and trail[-2:] == [("admin", "retry"), ("admin", "cancel")]
    assert ("admin", "submit") not in trail  # the oldest went first
    done = await store.get(task["id"])
    assert done is not None and done.finished_at is not None
    await store.trim_retention(now_s=done.finished_at + store.settings.retention_s + 10)
    assert await store.redis.hexists(store.keys.audit, task["id"]) == 0


async def test_a_bulk_job_records_its_starter_on_each_task_it_changes(
    audited: ApiServer, store: Store
) -> None:
    from shoal.scheduler.bulk_runner import BulkRunner

    with _http(audited, DASHBOARD, **{"X-Shoal-Actor": "carol"}) as carol:
        tasks = carol.post(
            "/api/v1/tasks/batch", json={"tasks": [{"name": "echo", "queue": "bulkq"}] * 3}
        ).json()
        body = {"action": "cancel", "filter": {"states": ["queued"], "queue": "bulkq"}}
        job = carol.post("/api/v1/bulk", json=body).json()
        while await BulkRunner(store).step_all():  # the leader's runner, one round at a time
            pass
        trails = [_trail(carol, t["id"]) for t in tasks["tasks"]]
    assert trails == [[("carol (via dashboard)", "submit"), ("carol (via dashboard)", "bulk_cancel")]] * 3
    entry = (await store.get(tasks["tasks"][0]["id"])).audit[-1]  # type: ignore[union-attr]
    assert entry["detail"] == f"job {job['id']}"
