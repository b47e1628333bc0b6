"""The leader's campaign on a thread and an event loop of its own.

Connections of its own (`operator.py`) keep the API's Redis pool from delaying a renewal, but
not the API's event loop: with a thousand event streams and waits on the scheduler's one loop,
a renewal that is due waits behind every callback already queued, and under load it was late
by seconds (the lock was seen expired). `ElectorThread` runs the campaign, every renewal and its
client on a loop in a thread of its own; the interpreter switches threads every few
milliseconds whatever the main loop is doing, so a renewal is late by at most that.

The elector and its client are made inside that thread (`make`), because asyncio clients belong
to the loop that first used them. `is_leader` is read from any thread (a float comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from shoal.scheduler.leader import LeaderElector

log = logging.getLogger(__name__)

ElectorFactory = Callable[[], AbstractAsyncContextManager[LeaderElector]]
"""Makes an elector (and whatever client it needs) inside the election thread; closes it on exit."""

_JOIN_TIMEOUT_S = 30.0  # a hang guard: stepping down is one Redis or API call with its own timeout


class ElectorThread:
    """A `LeaderElector` whose campaign (`run`) runs in a thread of its own."""

    def __init__(
        self, identity: str, make: ElectorFactory, thread_name: str = "shoal-leader-election"
    ) -> None:
        self.identity = identity
        self._make = make
        self._thread_name = thread_name
        self._elector: LeaderElector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_leader(self) -> bool:
        elector = self._elector
        return elector is not None and elector.is_leader

    @property
    def thread_loop(self) -> asyncio.AbstractEventLoop | None:
        """The election thread's event loop while a campaign runs (tests look at it)."""
        return self._loop

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign in the thread until `stop` is set (then step down there); a campaign that
        fails raises here, so the replica's supervisor logs, counts and restarts it."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        thread = threading.Thread(target=self._serve, args=(loop,), name=self._thread_name, daemon=True)
        thread.start()
        thread_stop = asyncio.Event()  # set and awaited only on the thread's loop
        campaign = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._campaign(thread_stop), loop))
        stopping = asyncio.ensure_future(stop.wait())
        either: set[asyncio.Future[Any]] = {campaign, stopping}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            loop.call_soon_threadsafe(thread_stop.set)
            try:
                async with asyncio.timeout(_JOIN_TIMEOUT_S):
                    await asyncio.shield(campaign)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                await asyncio.to_thread(thread.join, _JOIN_TIMEOUT_S)
        campaign.result()  # a campaign that ended by itself: its error, if any, is raised here

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            self._loop = None
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _campaign(self, stop: asyncio.Event) -> None:
        async with self._make() as elector:
            self._elector = elector
            try:
                await elector.run(stop)
            finally:
                self._elector = None

    async def resign(self) -> None:
        """Resign in the thread (the elector's client lives there); nothing to do between campaigns."""
        loop, elector = self._loop, self._elector
        if loop is None or elector is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(elector.resign(), loop))
