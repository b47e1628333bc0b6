"""bench/run.py's one keep-alive connection survives the server closing it while it idles (a
drain keeps the client idle far longer than uvicorn's keep-alive timeout)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from api_fixtures import ApiServer, make_settings
from bench.run import Api
from shoal.core.http_settings import HttpSettings
from shoal.scheduler.main import create_app

KEEP_ALIVE_S = 1


@pytest.fixture
def server(namespace: str, redis_url: str) -> Iterator[ApiServer]:
    settings = make_settings(namespace, redis_url)
    app = create_app(settings, run_leader_loops=False)
    api = ApiServer(app, settings, HttpSettings(http_keep_alive_s=KEEP_ALIVE_S)).start()
    yield api
    api.stop()


@pytest.fixture
def client(server: ApiServer) -> Iterator[Api]:
    api = Api(server.port)
    yield api
    api.close()


def test_a_request_after_the_server_closed_the_idle_connection_goes_through(client: Api) -> None:
    assert client.request("GET", "/healthz")[0] == 200
    time.sleep(KEEP_ALIVE_S * 2.5)  # the server closes the idle connection after KEEP_ALIVE_S
    assert client.request("POST", "/api/v1/tasks", b'{"name": "noop"}')[0] == 201
    assert client.reconnects == 1
    assert client.request("GET", "/healthz")[0] == 200  # and keeps the new connection
    assert client.reconnects == 1
