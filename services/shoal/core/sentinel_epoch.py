"""Sentinel clients that follow the newest configuration, not the first sentinel that answers.

redis-py connects to the primary named by the first sentinel that answers. A sentinel that has
not heard of a failover yet (sentinels learn a new configuration from each other's hello
messages, every 2 s) still names the old primary; restarted on its own data, that server is a
primary again until the sentinels demote it, and the writes it takes meanwhile are lost when it
resyncs (seen in the Sentinel chaos case at load 7). Here every sentinel is asked and the answer
with the highest configuration epoch wins, as the sentinels themselves settle it: each failover
increments the epoch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis.sentinel
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

log = logging.getLogger(__name__)


def _flags(state: Mapping[str, Any]) -> set[str]:
    flags = state.get("flags", "")
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


def _rank(state: Mapping[str, Any]) -> tuple[int, bool]:
    # The sentinel leading a failover keeps naming the old primary until the failover ends,
    # while its peers already name the promoted replica at the same epoch (seen in the chaos
    # case: about a second in which the restarted old primary was named): settled answers win.
    return int(state.get("config-epoch", 0)), "failover_in_progress" not in _flags(state)


def newest_primary(service: str, states: Sequence[Mapping[str, Any]]) -> tuple[str, int] | None:
    """The address in the state with the highest `config-epoch` (among equals, one whose
    failover has ended); None when there is no state.

    Disagreeing sentinels are logged: it is normal for a few seconds after a failover, and a
    sign of a split configuration when it lasts.
    """
    if not states:
        return None
    newest = max(states, key=_rank)
    named = {(str(s["ip"]), int(s["port"]), int(s.get("config-epoch", 0))) for s in states}
    if len(named) > 1:
        log.warning(
            "sentinels disagree on the primary of %s; following the newest configuration",
            service,
            extra={"answers": sorted(named), "epoch": int(newest.get("config-epoch", 0))},
        )
    return str(newest["ip"]), int(newest["port"])


def _primary_from(
    service: str,
    answers: Iterable[tuple[object, object]],
    usable: Callable[[Any, str], bool],
) -> tuple[str, int]:
    """The newest primary among the sentinels' `SENTINEL MASTERS` answers (or the connection
    errors that stood for them); `MasterNotFoundError` naming the errors when none is usable."""
    states: list[Mapping[str, Any]] = []
    errors: list[str] = []
    for sentinel, answer in answers:
        if isinstance(answer, RedisConnectionError | RedisTimeoutError):
            errors.append(f"{sentinel} - {answer!r}")
            continue
        if isinstance(answer, BaseException):
            raise answer
        state = answer.get(service) if isinstance(answer, Mapping) else None
        if state and usable(state, service):
            states.append(state)
    found = newest_primary(service, states)
    if found is None:
        info = f" : {', '.join(errors)}" if errors else ""
        raise MasterNotFoundError(f"No master found for {service!r}{info}")
    return found


class NewestEpochSentinel(Sentinel):
    """redis-py's asyncio `Sentinel`, asking every sentinel at once and taking the newest answer."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = await asyncio.gather(
            *(sentinel.sentinel_masters() for sentinel in self.sentinels), return_exceptions=True
        )
        ip, port = _primary_from(
            service_name, zip(self.sentinels, answers, strict=True), self.check_master_state
        )
        return (self._force_master_ip or ip), port


class NewestEpochSyncSentinel(redis.sentinel.Sentinel):
    """The synchronous twin of `NewestEpochSentinel` (the sentinels are asked in turn)."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        ip, port = _primary_from(
            service_name, ((s, _masters_or_error(s)) for s in self.sentinels), self.check_master_state
        )
        return (self._force_master_ip or ip), port


def _masters_or_error(sentinel: redis.Redis) -> object:
    try:
        return sentinel.sentinel_masters()
    except (RedisConnectionError, RedisTimeoutError) as e:
        return e
