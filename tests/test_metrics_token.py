"""/metrics behind its own bearer token (SHOAL_METRICS_TOKEN), on the scheduler and on a worker.

Real HTTP to the scheduler under uvicorn, and to the worker's own probe server on a free port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from api_fixtures import *  # noqa: F403
from api_fixtures import ApiServer
from shoal.worker.probes import TEXT, ProbeServer

METRICS_TOKEN = "metrics-token-0123456789"
API_TOKEN = "api-token-0123456789"


def test_scheduler_metrics_need_the_metrics_token_when_one_is_set(
    api_factory: Callable[..., ApiServer],
) -> None:
    api = api_factory(api_token=API_TOKEN, metrics_token=METRICS_TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-xyz"},
        {"Authorization": f"Bearer {API_TOKEN}"},
    ):
        refused = httpx.get(f"{api.url}/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "/metrics requires the metrics bearer token"}
        assert "shoal_tasks_submitted_total" not in refused.text
    ok = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and "shoal_tasks_submitted_total" in ok.text
    assert httpx.get(f"{api.url}/healthz").status_code == 200  # probes stay open
    assert (
        httpx.get(f"{api.url}/api/v1/tasks", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code
        == 401
    )


def test_scheduler_metrics_are_open_without_the_setting(api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/metrics").status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nope-nope-nope"}, 401),
        ({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200),
    ],
)
async def test_worker_metrics_need_the_metrics_token(headers: dict[str, str], status: int) -> None:
    routes = {
        "/metrics": lambda: (200, TEXT, b"shoal_worker_slots 4\n"),
        "/healthz": lambda: (200, TEXT, b"ok\n"),
    }
    server = ProbeServer("127.0.0.1", 0, routes, tokens={"/metrics": METRICS_TOKEN})
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            answer = await http.get("/metrics", headers=headers)
            assert answer.status_code == status
            assert ("shoal_worker_slots" in answer.text) == (status == 200)
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.close()
        await asyncio.sleep(0)
