"""The "work available" signal an idle worker blocks on: a Redis pub/sub subscription.

The store publishes on `keys.wake(queue)` whenever tasks become ready in that queue (shard
channels on a Redis Cluster, see `shoal.core.redis_client.Subscription`). The
subscription stays open for the worker's whole life and is confirmed before the first
claim, so no signal is lost between "the queue was empty" and "now I wait". A worker that
dies while waiting holds nothing: the signal carries no task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from shoal.core.aiotools import cancel_and_wait
from shoal.core.redis_client import Subscription

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 5.0


class WakeSignal:
    """An asyncio.Event-like flag set by every message on the wake channels."""

    def __init__(
        self,
        subscription: Subscription,
        on_redis_ok: Callable[[], None] | None = None,
        on_retry: Callable[[float], None] | None = None,
    ) -> None:
        """`subscription` (to the wake channels) should be on a client of its own."""
        self._subscription = subscription
        self._channels = subscription.channels
        self._on_redis_ok = on_redis_ok or (lambda: None)
        # Called with the delay before each reconnect while Redis is unreachable.
        self._on_retry = on_retry or (lambda delay_s: None)
        self._event = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.received = 0

    async def start(self) -> None:
        """Subscribe; returns once Redis confirmed every channel (retrying while it is down)."""
        self._reader = asyncio.create_task(self._read_forever(), name="shoal-wake-reader")
        waiter = asyncio.create_task(self._subscribed.wait())
        done, _ = await asyncio.wait({waiter, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        if self._reader in done:  # it can only end by raising: surface the bug
            waiter.cancel()
            self._reader.result()

    def set(self) -> None:
        """Wake the waiter without a message (used on shutdown)."""
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout_s: float) -> bool:
        """Block until a signal arrived since the last `clear()` or `timeout_s` passed."""
        if self._event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        return self._event.is_set()

    async def _read_forever(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._subscription.subscribe()
                confirmed: set[str] = set()
                while True:
                    message = await self._subscription.get_message(timeout_s=None)
                    if message is None:
                        continue
                    self._on_redis_ok()
                    if message["type"] == "subscribe":
                        confirmed.add(message["channel"])
                        if confirmed >= set(self._channels):
                            self._subscribed.set()
                            # Signals published while we were disconnected are gone: look again.
                            self._event.set()
                            delay = 0.05
                    elif message["type"] == "message":
                        self.received += 1
                        self._event.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("wake-up subscription lost (%s); reconnecting in %.2fs", exc, delay)
                await self._subscription.aclose()
                # While disconnected the claim loop must poll: keep it from blocking a full timeout.
                self._event.set()
                self._on_retry(delay)
                await asyncio.sleep(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)

    async def close(self) -> None:
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        await self._subscription.aclose()
