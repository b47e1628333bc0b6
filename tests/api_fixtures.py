"""Fixtures of the API tests: the real app served by uvicorn on a free port, over real HTTP.

The server runs in a thread with its own event loop, on the test's private Redis
namespace (the `namespace` fixture of conftest.py wipes it afterwards). Tests import
these fixtures with `from api_fixtures import *`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from shoal import Client
from shoal.core.http_settings import HttpSettings
from shoal.core.models import Outcome
from shoal.core.settings import ApiSettings, RedisSettings, Settings
from shoal.core.store import Store
from shoal.scheduler.main import create_app
from shoal.scheduler.server import server_config

__all__ = ["ApiServer", "api", "api_factory", "client", "make_settings", "work_once"]

TOKEN = "test-token-0123456789"


def make_settings(namespace: str, redis_url: str, **api: Any) -> Settings:
    """Settings of this test's scheduler; `api` overrides ApiSettings fields (api_token=...)."""
    settings = Settings()
    settings.redis = RedisSettings(redis_url=redis_url, namespace=namespace)
    settings.api = ApiSettings(**{"api_token": None, "validate_task_names": False, **api})
    return settings


class ApiServer:
    """uvicorn serving `app` in a thread on 127.0.0.1 and a free port."""

    def __init__(
        self, app: FastAPI, settings: Settings, http: HttpSettings | None = None, port: int = 0
    ) -> None:
        self.app = app
        self.settings = settings
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The production server's config (shoal.scheduler.server), so every API test runs behind
        # the same connection guards.
        config = server_config(
            app, http or settings.http, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="api-server", daemon=True
        )

    # Waits, not bounds: generous so that a loaded machine only makes a test slower.
    def start(self, timeout_s: float = 60.0) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the API server failed to start (see the captured log)")
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        waiters = getattr(self.app.state, "waiters", None)
        if waiters is not None:  # what the scheduler does on SIGTERM (signals reach only the main thread)
            waiters.end_streams()
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()

    def client(self, token: str | None = "", timeout: float = 30.0) -> Client:
        """A client of this server; `token=""` means the server's own token (if any)."""
        if token == "":
            token = self.settings.api.api_token
        return Client(self.url, token=token or "", timeout_s=timeout)


@pytest.fixture
def api_factory(
    request: pytest.FixtureRequest, namespace: str, redis_url: str
) -> Iterator[Callable[..., ApiServer]]:
    """Start schedulers on this test's namespace: `api_factory(api_token=..., max_batch=...)`.

    `port` picks the port (default: any free one), e.g. to restart a scheduler where it was.
    `leader=True` (the default of tests marked `@pytest.mark.leader`) runs the leader's loops
    too (election, reaper, promoter, retention, ticker, bulk jobs, autoscaler), as every
    replica does in production. Without it the server is a replica that serves the API and
    never leads: all most API tests need, at a quarter of the CPU (the election runs in a
    process of its own, 0.7 CPU-s per start).
    """
    servers: list[ApiServer] = []
    marked = request.node.get_closest_marker("leader") is not None

    def start(port: int = 0, leader: bool | None = None, **api: Any) -> ApiServer:
        leader = marked if leader is None else leader
        settings = make_settings(namespace, redis_url, **api)
        server = ApiServer(create_app(settings, run_leader_loops=leader), settings, port=port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api(api_factory: Callable[..., ApiServer]) -> ApiServer:
    return api_factory()


@pytest.fixture
def client(api: ApiServer) -> Iterator[Client]:
    with api.client() as shoal:
        yield shoal


@dataclass
class Worked:
    ids: list[str]
    accepted: list[bool]


async def work_once(
    store: Store,
    n: int = 100,
    *,
    ok: bool = True,
    result: Any = "done",
    retry: bool = True,
    queues: tuple[str, ...] = ("default",),
    worker_id: str = "test-worker",
) -> Worked:
    """Play one worker round through the real store: claim up to `n` tasks and finish them."""
    claimed = await store.claim(worker_id, list(queues), n)
    now = time.time()
    outcomes = [
        Outcome(
            task_id=task.id,
            attempt=task.attempt,
            ok=ok,
            result=result if ok else None,
            error=None if ok else "boom",
            retry=retry,
            started_at=now,
            finished_at=now,
        )
        for task in claimed
    ]
    accepted = await store.complete(worker_id, outcomes)
    return Worked(ids=[task.id for task in claimed], accepted=accepted)
