"""Live events: decoding and a subscriber to the namespace's event channel.

Every Lua transition publishes one JSON event per call; scaling and worker
registration publish theirs from Python. Recent history is kept in a capped stream
(`Store.recent_events`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.core import jsonutil
from shoal.core.keys import Keys
from shoal.core.redis_client import AnyRedis, Subscription, is_cluster

log = logging.getLogger(__name__)


def decode_event(data: str | bytes) -> dict[str, Any] | None:
    try:
        event = jsonutil.loads(data)
    except jsonutil.JSONDecodeError:
        log.warning("ignoring an event that is not JSON")
        return None
    return event if isinstance(event, dict) else None


class EventSubscriber:
    """Async iterator over live events; reconnects with backoff if Redis goes away."""

    def __init__(self, redis: AnyRedis, keys: Keys, idle_timeout_s: float = 1.0) -> None:
        """`redis` should be a client of the subscriber's own (a subscription holds a connection)."""
        self._redis = redis
        self._channel = keys.events_channel
        self._idle = idle_timeout_s
        self._closed = False

    def close(self) -> None:
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        delay = 0.1
        while not self._closed:
            subscription = Subscription(self._redis, [self._channel], sharded=is_cluster(self._redis))
            try:
                await subscription.subscribe()
                delay = 0.1
                while not self._closed:
                    msg = await subscription.get_message(self._idle)
                    if msg is None or msg["type"] != "message":
                        continue
                    event = decode_event(msg["data"])
                    if event is not None:
                        yield event
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("event subscription lost, reconnecting", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                await subscription.aclose()
