"""Flow rules in Redis and their use: reached as `Store.flow`.

A rule (`shoal.core.flow.Rule`) is one field of the `flow:rules` hash, scope ->
`concurrency,rate,period_ms,weight` (empty for "no limit of that kind"), which the claim
script reads. Every script keeps the running count of each queue:, name: and key: scope in
`flow:running`, and the claim script records each start of a rate-limited scope in
`flow:starts` (the sliding window), so the use of a limit is read here, not estimated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.core.flow import Rate, Rule, check_scope
from shoal.core.record import MEMBER_SEP

if TYPE_CHECKING:
    from shoal.core.store import Store

MAX_KEYS_SHOWN = 100  # keys listed under a prefix rule (`key:tenant:*`), the busiest first
_SCAN_COUNT = 1000


def encode_rule(rule: Rule) -> str:
    rate, period = ("", "") if rule.rate is None else (str(rule.rate.limit), str(rule.rate.period_ms))
    concurrency = "" if rule.concurrency is None else str(rule.concurrency)
    return f"{concurrency},{rate},{period},{rule.weight}"


def decode_rule(scope: str, raw: str) -> Rule:
    concurrency, rate, period_ms, weight = raw.split(",")
    return Rule(
        scope=scope,
        concurrency=int(concurrency) if concurrency else None,
        rate=Rate(int(rate), int(period_ms) / 1000) if rate else None,
        weight=int(weight or 1),
    )


def is_prefix_rule(scope: str) -> bool:
    """`key:tenant:*`: the rule of every key `tenant:...` without a rule of its own."""
    return scope.startswith("key:") and scope.endswith(":*")


@dataclass(slots=True)
class RateUse:
    started: int  # starts in the current window
    limited_until: float | None  # epoch seconds when the next start is allowed, if now it is not


@dataclass(slots=True)
class LimitUse:
    rule: Rule
    running: int  # of the scope; for a prefix rule, of all its keys
    rate: RateUse | None  # None without a rate, and for a prefix rule (one window per key)
    keys: dict[str, int]  # a prefix rule's keys that run tasks -> running (MAX_KEYS_SHOWN at most)


@dataclass(frozen=True, slots=True)
class Hold:
    """A limit that keeps a queued task from starting now."""

    scope: str  # the limited scope: queue:q, name:n or key:k
    rule_scope: str  # the rule's scope (key:tenant:* for key:tenant:42 under a prefix rule)
    reason: str  # concurrency | rate
    limit: int  # the concurrency limit, or the starts allowed per period
    used: int  # running tasks, or starts in the window
    period_s: float | None = None  # rate only
    until: float | None = None  # rate only: when the next start is allowed (epoch seconds)


class FlowStore:
    def __init__(self, store: Store) -> None:
        self.redis = store.redis
        self.keys = store.keys

    async def put(self, rule: Rule) -> None:
        """Create or replace the rule of `rule.scope`; the next claim applies it."""
        await self.redis.hset(self.keys.flow_rules, rule.scope, encode_rule(rule))
        if rule.kind == "queue":
            await self.redis.publish(self.keys.wake(rule.target), "1")  # a raised cap starts work at once

    async def delete(self, scope: str) -> bool:
        """Remove a rule (and its rate window); False if there was none."""
        check_scope(scope)
        lo, hi = _scope_range(scope)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.flow_rules, scope)
            pipe.zremrangebylex(self.keys.flow_starts, lo, hi)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def rules(self) -> list[Rule]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.flow_rules)  # type: ignore[assignment]
        return [decode_rule(scope, value) for scope, value in sorted(raw.items())]

    async def get(self, scope: str) -> Rule | None:
        raw = await self.redis.hget(self.keys.flow_rules, scope)
        return None if raw is None else decode_rule(scope, str(raw))

    async def running(self, scopes: list[str]) -> dict[str, int]:
        """Tasks running now in each scope (`queue:q`, `name:n`, `key:k`)."""
        if not scopes:
            return {}
        values = await self.redis.hmget(self.keys.flow_running, scopes)
        return {scope: int(v or 0) for scope, v in zip(scopes, values, strict=True)}

    async def rate_use(self, scope: str, rate: Rate, now_ms: int | None = None) -> RateUse:
        """Starts in the window now ending, and until when a full window refuses the next one."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        _, hi = _scope_range(scope)
        cut = "[" + scope + MEMBER_SEP + f"{now_ms - rate.period_ms + 1:012x}"
        members = await self.redis.zrangebylex(self.keys.flow_starts, cut, hi)
        started = len(members)
        if started < rate.limit:
            return RateUse(started, None)
        # The start that leaves the window first reopens it.
        oldest = members[started - rate.limit]
        oldest_ms = int(str(oldest).split(MEMBER_SEP)[-2], 16)
        return RateUse(started, (oldest_ms + rate.period_ms) / 1000)

    async def key_running(self, prefix: str) -> dict[str, int]:
        """The keys under `prefix` (`tenant:`) that run tasks now, the busiest first."""
        found: dict[str, int] = {}
        pattern = "key:" + _glob_escape(prefix) + "*"
        scan = self.redis.hscan_iter(self.keys.flow_running, match=pattern, count=_SCAN_COUNT)
        async for field, value in scan:
            found[str(field)[4:]] = int(value)
            if len(found) >= 10 * MAX_KEYS_SHOWN:
                break
        busiest = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_KEYS_SHOWN]
        return dict(busiest)

    async def rule_for(self, scope: str) -> Rule | None:
        """The rule that applies to a scope: its own, or for a key its prefix rule."""
        own = await self.get(scope)
        if own is not None or not scope.startswith("key:") or ":" not in scope[4:]:
            return own
        prefix = scope[4:].split(":", 1)[0]
        return await self.get(f"key:{prefix}:*")

    async def holds(self, queue: str, name: str, flow_key: str | None) -> list[Hold]:
        """The limits that keep a task of this queue, name and flow key from starting now."""
        scopes = [f"queue:{queue}", f"name:{name}"] + ([f"key:{flow_key}"] if flow_key else [])
        running = await self.running(scopes)
        out = []
        for scope in scopes:
            rule = await self.rule_for(scope)
            if rule is None:
                continue
            if rule.concurrency is not None and running[scope] >= rule.concurrency:
                out.append(Hold(scope, rule.scope, "concurrency", rule.concurrency, running[scope]))
            if rule.rate is not None:
                use = await self.rate_use(scope, rule.rate)
                if use.limited_until is not None:
                    out.append(
                        Hold(
                            scope,
                            rule.scope,
                            "rate",
                            rule.rate.limit,
                            use.started,
                            rule.rate.period_s,
                            use.limited_until,
                        )
                    )
        return out

    async def usage(self) -> list[LimitUse]:
        """Every rule with its use now."""
        rules = await self.rules()
        plain = [r.scope for r in rules if not is_prefix_rule(r.scope)]
        running = await self.running(plain)
        now_ms = int(time.time() * 1000)
        out = []
        for rule in rules:
            if is_prefix_rule(rule.scope):
                keys = await self.key_running(rule.target[:-1])
                out.append(LimitUse(rule, sum(keys.values()), None, keys))
                continue
            rate = None if rule.rate is None else await self.rate_use(rule.scope, rule.rate, now_ms)
            out.append(LimitUse(rule, running[rule.scope], rate, {}))
        return out


def _scope_range(scope: str) -> tuple[str, str]:
    return "[" + scope + MEMBER_SEP, "(" + scope + "\x01"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
