"""/healthz, /readyz and /metrics: probes and Prometheus, outside /api/v1 and without the API token.

/metrics asks for its own bearer token when SHOAL_METRICS_TOKEN is set (Prometheus sends it;
the API token is a client's and is not accepted there).
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request, status
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError
from starlette.responses import Response

from shoal.core.tokens import bearer_matches
from shoal.scheduler.api.deps import SettingsDep, StoreDep, WaitersDep
from shoal.scheduler.api.errors import error_response
from shoal.scheduler.api.responses import JSONBytesResponse

router = APIRouter(tags=["health"])

READY_PING_TIMEOUT_S = 1.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return JSONBytesResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: Redis answers and live events are subscribed",
    responses={503: {"description": "Not ready; the body says what is missing."}},
)
async def readyz(request: Request, store: StoreDep, waiters: WaitersDep) -> Response:
    redis_ok = False
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        redis_ok = await asyncio.wait_for(store.ping(), READY_PING_TIMEOUT_S)
    loops = getattr(request.app.state, "loops", None)
    body = {
        "status": "ready" if redis_ok and waiters.subscribed else "not ready",
        "redis": redis_ok,
        "events": waiters.subscribed,
        "leader": bool(loops is not None and loops.is_leader),
        # Shown, not judged: a restarting leader loop does not stop this replica serving the API
        # (the supervisor restarts it, and the leader resigns if it keeps failing).
        "loops": loops.status() if loops is not None else {},
    }
    code = status.HTTP_200_OK if body["status"] == "ready" else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONBytesResponse(body, status_code=code)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={401: {"description": "SHOAL_METRICS_TOKEN is set and the request did not carry it."}},
)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    expected = settings.api.metrics_token
    if expected is not None and not bearer_matches(request.headers.get("authorization"), expected):
        return error_response(
            status.HTTP_401_UNAUTHORIZED,
            "/metrics requires the metrics bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="shoal-metrics"'},
        )
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
