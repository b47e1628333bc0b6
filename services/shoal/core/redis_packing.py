"""asyncio Redis connections that pack commands with hiredis, as redis-py's synchronous client does.

redis-py's asyncio `Connection` packs every command in Python, argument by argument: about
180 µs of CPU for the submit script's EVALSHA (47 arguments: the namespace's keys and the
task's fields), more than the rest of a single submit costs the scheduler. Its synchronous
client packs with hiredis when hiredis is installed (`HiredisRespSerializer`, about 20 µs
for the same call); these classes make the asyncio connections do the same, with the same
serializer, so the bytes on the wire are unchanged. Without hiredis they are redis-py's own.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from redis.connection import HIREDIS_AVAILABLE, HiredisRespSerializer


class _HiredisPacking:
    """Mixed in front of a redis-py asyncio connection class."""

    _packer = HiredisRespSerializer() if HIREDIS_AVAILABLE else None

    def pack_command(self, *args: Any) -> list[bytes]:
        if self._packer is None:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]
        return self._packer.pack(*args)  # type: ignore[no-any-return]


class Connection(_HiredisPacking, redis.asyncio.Connection):
    """TCP."""


class SSLConnection(_HiredisPacking, redis.asyncio.SSLConnection):
    """TLS."""


class UnixDomainSocketConnection(_HiredisPacking, redis.asyncio.UnixDomainSocketConnection):
    """A Unix socket."""
