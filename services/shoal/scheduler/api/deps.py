"""Dependency aliases of the API routes: settings, store, waiters, submitter, bearer auth.

Every dependency here is `async def`: FastAPI runs plain `def` dependencies in a thread
pool, a hop the hot submit/wait path cannot afford. The objects live on `app.state`,
created by the lifespan in `shoal.scheduler.main`. Tests pick the settings by passing
them to `create_app(settings)` or by overriding `app_settings`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoal.core.settings import Settings, get_settings
from shoal.core.store import Store
from shoal.scheduler.schemas import ValidationLimits
from shoal.scheduler.submission import Submitter
from shoal.scheduler.waiters import Waiters

_bearer = HTTPBearer(
    auto_error=False,
    description="Required on /api/v1 when the scheduler runs with SHOAL_API_TOKEN set.",
)


async def app_settings(request: Request) -> Settings:
    """The app's settings (`get_settings()` unless `create_app` was given others)."""
    settings = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


SettingsDep = Annotated[Settings, Depends(app_settings)]


async def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


async def _waiters(request: Request) -> Waiters:
    return request.app.state.waiters  # type: ignore[no-any-return]


async def _submitter(request: Request) -> Submitter:
    return request.app.state.submitter  # type: ignore[no-any-return]


async def _limits(request: Request) -> ValidationLimits:
    return request.app.state.limits  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(_store)]
WaitersDep = Annotated[Waiters, Depends(_waiters)]
SubmitterDep = Annotated[Submitter, Depends(_submitter)]
LimitsDep = Annotated[ValidationLimits, Depends(_limits)]


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """401 unless the request carries `Authorization: Bearer <SHOAL_API_TOKEN>` (when one is set)."""
    expected = settings.api.api_token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token" if given else "this API requires a bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="shoal"'},
        )
