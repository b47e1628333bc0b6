"""The scheduler's FastAPI application: `python -m shoal.scheduler` (or `uvicorn shoal.scheduler.main:app`).

`python -m shoal.scheduler` serves it with the connection guards of `server.py`; bare
uvicorn (e.g. `--reload` while developing) serves it without them.

`create_app` wires the routers (every /api/v1 route behind the bearer-token check;
/healthz, /readyz and /metrics outside it), the error handlers, and a lifespan that
opens the Redis store, subscribes the waiters to live events, starts the leader-only
loops, and closes all of it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from redis.exceptions import RedisError

from shoal.core.admission import Submitter
from shoal.core.logging import configure_logging
from shoal.core.redis_client import RedisConnector, ready
from shoal.core.settings import Settings, SettingsError, get_settings
from shoal.core.store import Store
from shoal.scheduler.api import docs
from shoal.scheduler.api.deps import require_token
from shoal.scheduler.api.errors import install_error_handlers
from shoal.scheduler.api.fast_submit import FastSubmit
from shoal.scheduler.api.http_metrics import HttpMetrics
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.api.routes import (
    audit_log,
    bulk,
    event_history,
    events,
    health,
    limits,
    queues,
    scaling,
    schedules,
    stats,
    task_logs,
    tasks,
    workers,
)
from shoal.scheduler.api.tokens import TokenTable
from shoal.scheduler.bulk_schemas import BulkCreate
from shoal.scheduler.event_feed import BLOCK_MS, EventFeed
from shoal.scheduler.limit_schemas import LimitBody
from shoal.scheduler.metrics import count_submitted
from shoal.scheduler.operator import build_operator
from shoal.scheduler.schedule_schemas import ScheduleBody, ScheduleCreate
from shoal.scheduler.schemas import BatchCreate, ErrorPublic, TaskCreate, ValidationLimits
from shoal.scheduler.waiters import Waiters

log = logging.getLogger("shoal.scheduler")

API_PREFIX = "/api/v1"
READY_TIMEOUT_S = 5.0
DESCRIPTION = """\
Shoal's scheduler: submit tasks, follow them, inspect workers, queues and scaling.

When the scheduler has a token configured, every `/api/v1` route needs
`Authorization: Bearer <token>`; a read-only token may call the GET routes only (403 on any
other). Errors are JSON `{"detail": ...}`. A submit with an
`idempotency_key` already seen answers **200** with the first task instead of **201**.
"""


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    *,
    run_leader_loops: bool = True,
    fast_submit: bool = True,
) -> FastAPI:
    """The application. A `store` passed in is used as is and left open at shutdown.

    fast_submit=False leaves single submits to FastAPI's route (tests compare the two).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log.log_format, settings.log.log_level)
        for warning in settings.warnings:
            log.warning("configuration: %s", warning)
        own_store = store is None
        connector = RedisConnector(settings.redis)
        active = (
            store if store is not None else Store.from_settings(settings, purpose="api", lean_scripts=True)
        )
        # The event reader and the leader get clients of their own: API load cannot starve them.
        # The reader blocks in XREAD for up to BLOCK_MS: its replies may take that much longer.
        events_client = connector.client(
            "events",
            max_connections=2,
            socket_timeout_s=settings.redis.redis_socket_timeout_s + BLOCK_MS / 1000,
        )
        waiters = Waiters(active, EventFeed(active, events_client))
        operator = build_operator(active, settings, connector) if run_leader_loops else None
        app.state.store = active
        app.state.waiters = waiters
        app.state.submitter = Submitter(active, settings, on_created=count_submitted)
        app.state.loops = operator.loops if operator is not None else None
        # A cluster client loads its slot map now rather than inside the first request.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(ready(active.redis), READY_TIMEOUT_S)
        await waiters.start(getattr(app.state, "waiters_confirm_timeout_s", 5.0))
        if operator is not None:
            await operator.start()
        restore_signals = _on_exit_signal(waiters.end_streams)
        try:
            yield
        finally:
            restore_signals()
            if operator is not None:
                await operator.stop()
            await waiters.stop()
            await events_client.aclose()
            if own_store:
                await active.close()

    app = FastAPI(
        title="Shoal scheduler",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONBytesResponse,
        # /docs is served by shoal.scheduler.api.docs with local assets; ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.limits = ValidationLimits.from_settings(settings.api)
    app.state.tokens = TokenTable.from_settings(settings.api)  # a bad tokens file stops start-up here
    install_error_handlers(app)
    if fast_submit:  # inside the HTTP metrics, so they count what it answers
        app.add_middleware(FastSubmit)
    app.add_middleware(HttpMetrics)

    api = APIRouter(
        prefix=API_PREFIX,
        dependencies=[Depends(require_token)],
        responses={
            401: {"model": ErrorPublic, "description": "Bearer token missing or wrong."},
            403: {
                "model": ErrorPublic,
                "description": "A read-only token asked to change something, or a token that may not act "
                "for people sent X-Shoal-Actor.",
            },
            503: {"model": ErrorPublic, "description": "Redis is unreachable."},
        },
    )
    for module in (
        tasks, task_logs, workers, queues, limits, stats, event_history, events, scaling, schedules, bulk,
        audit_log,
    ):  # fmt: skip
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _on_exit_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Also call `callback` on SIGINT/SIGTERM, before the server's own handler; returns the undo.

    uvicorn waits for open responses before it shuts down, and an SSE stream never ends
    by itself: ending the streams on the signal lets the server stop at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if not callable(handler):
            continue

        def chained(signum: int, frame: FrameType | None, handler: Any = handler) -> None:
            callback()
            handler(signum, frame)

        previous[sig] = handler
        signal.signal(sig, chained)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request bodies the submit routes parse themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (TaskCreate, BatchCreate, ScheduleCreate, ScheduleBody, BulkCreate, LimitBody):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema


def _app_or_exit() -> FastAPI:
    """The app uvicorn serves; a configuration that cannot work ends the process with exit
    code 2 and a one-line message (no traceback), before uvicorn binds its port."""
    try:
        return create_app()
    except SettingsError as exc:
        print(f"shoal scheduler: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = _app_or_exit()
