"""Dependency aliases of the API routes: settings, store, waiters, submitter, bearer auth.

Every dependency here is `async def`: FastAPI runs plain `def` dependencies in a thread
pool, a hop the hot submit/wait path cannot afford. The objects live on `app.state`,
created by the lifespan in `shoal.scheduler.main`. Tests pick the settings by passing
them to `create_app(settings)` or by overriding `app_settings`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoal.core.admission import Submitter
from shoal.core.settings import Settings, get_settings
from shoal.core.store import Store
from shoal.scheduler.api.tokens import ACTOR_HEADER, ACTOR_PATTERN, ANONYMOUS, Actor, TokenTable, actor_for
from shoal.scheduler.schemas import ValidationLimits
from shoal.scheduler.waiters import Waiters

_bearer = HTTPBearer(
    auto_error=False,
    description="Required on /api/v1 when the scheduler has any token configured (SHOAL_API_TOKEN, "
    "SHOAL_API_READ_TOKEN, SHOAL_API_DASHBOARD_TOKEN, SHOAL_API_TOKENS_FILE); read tokens may only GET.",
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
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    actor_header: Annotated[
        str | None,
        Header(
            alias=ACTOR_HEADER,
            min_length=1,
            max_length=128,
            pattern=ACTOR_PATTERN,
            description="The person an action is for; only the dashboard's token may send it "
            "(403 otherwise).",
        ),
    ] = None,
) -> None:
    """401 without a configured token (when any is set); 403 when a read-only token asks to change
    something, or a token that may not act for people names one. Leaves the actor on request.state."""
    authorize(request, credentials.credentials if credentials is not None else "", actor_header)


def authorize(request: Request, given: str, actor_header: str | None) -> None:
    """`require_token`'s checks on a bearer token already read from the request ("" for none).

    Also used as is by the single-submit fast path (`api.fast_submit`), so both answer alike.
    """
    tokens: TokenTable = request.app.state.tokens
    principal = ANONYMOUS
    if tokens.required:
        found = tokens.authenticate(given)
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token" if given else "this API requires a bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="shoal"'},
            )
        principal = found
    if not principal.may(request.method):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"the token {principal.name!r} is read-only: it may not {request.method} {request.url.path}",
        )
    try:
        request.state.actor = actor_for(principal, actor_header)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except PermissionError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None


async def _actor(request: Request) -> Actor:
    return getattr(request.state, "actor", None) or Actor(ANONYMOUS.name)


ActorDep = Annotated[Actor, Depends(_actor)]
"""Who the action of this request is recorded for (set by `require_token`)."""
