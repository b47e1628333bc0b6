"""Recording who did an action (the audit), once the action itself has committed.

The action is done when this runs: a failure to record it does not undo it nor turn its
answer into an error (the caller would retry what already happened). It is logged and
counted (`shoal_audit_failures_total`) instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter
from redis.exceptions import RedisError
from starlette.requests import Request

from shoal.core.store import Store
from shoal.scheduler.api.tokens import ANONYMOUS, Actor

log = logging.getLogger(__name__)

AUDIT_FAILURES = Counter("shoal_audit_failures_total", "Actions done but not recorded in the audit")


def actor_of(request: Request) -> str:
    actor: Actor = getattr(request.state, "actor", None) or Actor(ANONYMOUS.name)
    return actor.describe()


async def record(
    request: Request, store: Store, action: str, task_ids: Sequence[str], detail: str = "", new: bool = False
) -> None:
    """Record `action` on these tasks for the request's actor; see the module docstring."""
    actor = actor_of(request)
    try:
        await store.audit(actor, action, task_ids, detail, new=new)
    except RedisError as exc:
        AUDIT_FAILURES.inc()
        log.error(
            "audit not recorded: %s by %s on %d task(s): %s",
            action, actor, len(task_ids), exc, extra={"action": action, "actor": actor},
        )  # fmt: skip
