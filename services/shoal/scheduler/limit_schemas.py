"""Bodies and answers of /api/v1/limits: flow rules (concurrency, rate, weight) and their use."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shoal.core.flow import MAX_CONCURRENCY, MAX_PERIOD_S, MAX_RATE, MAX_WEIGHT, MIN_PERIOD_S, Rate, Rule
from shoal.core.flow_store import LimitUse


class RateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int = Field(ge=1, le=MAX_RATE, description="Starts allowed in any window of `period_s`.")
    period_s: float = Field(ge=MIN_PERIOD_S, le=MAX_PERIOD_S, description="The window, in seconds.")


class LimitBody(BaseModel):
    """The limits of one scope; omitted: no limit of that kind."""

    model_config = ConfigDict(extra="forbid", strict=True)

    concurrency: int | None = Field(
        None, ge=0, le=MAX_CONCURRENCY, description="Tasks of the scope running at once (0 holds them all)."
    )
    rate: RateBody | None = Field(None, description="At most `limit` starts in any window of `period_s`.")
    weight: int = Field(
        1, ge=1, le=MAX_WEIGHT, description="A flow key's share in its queue's round robin (keys only)."
    )

    def to_rule(self, scope: str) -> Rule:
        rate = None if self.rate is None else Rate(self.rate.limit, self.rate.period_s)
        return Rule(scope, concurrency=self.concurrency, rate=rate, weight=self.weight)


class RateUsePublic(BaseModel):
    limit: int
    period_s: float
    started: int = Field(description="Starts in the window ending now.")
    limited_until: float | None = Field(description="When the next start is allowed, if not now (epoch s).")


class LimitPublic(BaseModel):
    scope: str = Field(description="queue:<queue>, name:<task name>, key:<flow key> or key:<prefix>:*")
    kind: str = Field(description="queue | name | key")
    target: str
    concurrency: int | None
    running: int = Field(description="Tasks of the scope running now (a prefix rule: of all its keys).")
    rate: RateUsePublic | None = Field(
        description="The rate and its current window; a prefix rule's rate applies to each key on its own, "
        "its windows are not listed (started and limited_until are then 0 and null)."
    )
    weight: int
    keys: dict[str, int] = Field(
        default_factory=dict,
        description="A prefix rule's keys that run tasks now -> running (the busiest 100).",
    )


class LimitList(BaseModel):
    limits: list[LimitPublic]


def limit_public(use: LimitUse) -> dict[str, Any]:
    rule = use.rule
    rate = None
    if rule.rate is not None:
        rate = {
            "limit": rule.rate.limit,
            "period_s": rule.rate.period_s,
            "started": use.rate.started if use.rate else 0,
            "limited_until": use.rate.limited_until if use.rate else None,
        }
    return {
        "scope": rule.scope,
        "kind": rule.kind,
        "target": rule.target,
        "concurrency": rule.concurrency,
        "running": use.running,
        "rate": rate,
        "weight": rule.weight,
        "keys": use.keys,
    }
