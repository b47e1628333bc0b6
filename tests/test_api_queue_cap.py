"""The live-queue cap seen through the API: a clear 422 past it, nothing written, and /queues
lists only queues that hold unfinished tasks (or that a worker serves)."""

from __future__ import annotations

import httpx

from api_fixtures import ApiServer, make_settings
from shoal.core.settings import TaskSettings
from shoal.scheduler.main import create_app


def test_a_submit_to_one_queue_too_many_is_a_422_that_names_the_cap(namespace: str, redis_url: str) -> None:
    settings = make_settings(namespace, redis_url)
    settings.tasks = TaskSettings(max_queues=2)
    server = ApiServer(create_app(settings), settings).start()
    try:
        url = f"{server.url}/api/v1"
        for queue in ("a", "b"):
            assert httpx.post(f"{url}/tasks", json={"name": "noop", "queue": queue}).status_code == 201
        refused = httpx.post(
            f"{url}/tasks/batch",
            json={"tasks": [{"name": "noop", "queue": "a"}, {"name": "noop", "queue": "c"}]},
        )
        assert refused.status_code == 422
        assert "too many queues: at most 2" in str(refused.json()["detail"])
        listed = httpx.get(f"{url}/tasks").json()["tasks"]
        assert sorted(t["queue"] for t in listed) == ["a", "b"]  # the refused batch wrote nothing
        assert [q["name"] for q in httpx.get(f"{url}/queues").json()["queues"]] == ["a", "b"]
        (a_task,) = [t for t in listed if t["queue"] == "a"]
        assert httpx.post(f"{url}/tasks/{a_task['id']}/cancel").status_code == 200
        assert [q["name"] for q in httpx.get(f"{url}/queues").json()["queues"]] == ["b"]
        assert httpx.post(f"{url}/tasks", json={"name": "noop", "queue": "c"}).status_code == 201
    finally:
        server.stop()
