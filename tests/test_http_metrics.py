"""The scheduler counts and times its HTTP requests by route template and status, as /metrics shows."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api_fixtures import *  # noqa: F403 - the api / client fixtures
from api_fixtures import ApiServer
from shoal import task_request

METRIC = "shoal_http_request_duration_seconds"


def scrape(api: ApiServer) -> dict[tuple[str, str, str, str], float]:
    """Every sample of the histogram, by (sample name, method, route, status), read from /metrics."""
    text = httpx.get(f"{api.url}/metrics").text
    samples: dict[tuple[str, str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for s in family.samples:
            if s.name.endswith(("_count", "_sum")):
                samples[(s.name, s.labels["method"], s.labels["route"], s.labels["status"])] = s.value
    return samples


def delta(before: dict, after: dict, sample: str, method: str, route: str, status: str) -> float:
    key = (f"{METRIC}_{sample}", method, route, status)
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_requests_are_counted_by_route_template_and_status(api: ApiServer) -> None:
    before = scrape(api)
    with httpx.Client(base_url=api.url) as http:
        created = http.post("/api/v1/tasks", json={"name": "echo", "args": [1]})
        assert created.status_code == 201
        assert http.get(f"/api/v1/tasks/{created.json()['id']}").status_code == 200
        for missing in ("no-such-task-1", "no-such-task-2"):
            assert http.get(f"/api/v1/tasks/{missing}").status_code == 404
        assert http.post("/api/v1/tasks", json={"name": 7}).status_code == 422
        for path in ("/wp-admin", "/a/random/path/1", "/a/random/path/2"):
            assert http.get(path).status_code == 404
    after = scrape(api)

    by_id = "/api/v1/tasks/{task_id}"
    assert delta(before, after, "count", "POST", "/api/v1/tasks", "201") == 1
    assert delta(before, after, "count", "POST", "/api/v1/tasks", "422") == 1
    assert delta(before, after, "count", "GET", by_id, "200") == 1
    # Two ids, one series: the label is the route's template, never the id.
    assert delta(before, after, "count", "GET", by_id, "404") == 2
    assert delta(before, after, "count", "GET", "(unmatched)", "404") == 3
    assert not any("no-such-task" in route or "random" in route for _, _, route, _ in after)


def test_latency_is_the_time_until_the_answer(api: ApiServer) -> None:
    with api.client() as client:
        task = client.submit_request(task_request("echo", queue="nobody-serves-this"))
    before = scrape(api)
    # The scheduler holds a wait for its timeout when the task does not finish: a lower bound.
    answer = httpx.get(f"{api.url}/api/v1/tasks/{task['id']}/wait", params={"timeout_s": 0.5})
    assert answer.status_code == 200 and answer.json()["state"] == "queued"
    after = scrape(api)
    route = "/api/v1/tasks/{task_id}/wait"
    assert delta(before, after, "count", "GET", route, "200") == 1
    assert delta(before, after, "sum", "GET", route, "200") >= 0.5
