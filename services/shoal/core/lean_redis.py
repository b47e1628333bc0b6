"""A lean asyncio path for the one script call of a single submit: RESP over a bare asyncio protocol.

redis-py's asyncio client costs about 160-230 µs of CPU per command (its pool's lock and
condition, a timeout context per read, the retry wrapper, the observability hooks), more
than everything else a single POST /api/v1/tasks does. `LeanScripts` sends an `EVALSHA`
of the same registered script, packed by hiredis (as `redis_packing` packs it) and parsed
by hiredis's reader (as redis-py parses it), over a small pool of connections of its own:
one call costs about a fifth.

It is used only where it is the same call: one Redis server over TCP or a Unix socket, no
TLS, RESP2, no credential provider; Sentinel, Cluster and everything else keep redis-py
(`lean_scripts_for` answers None). Errors are redis-py's: a Redis error reply raises the
exception class redis-py raises for it (`NoScriptError` makes it load the script and send
it again, as redis-py's `Script` does), a broken or silent connection raises redis-py's
`ConnectionError` / `TimeoutError`, so callers handle both paths alike. A connection that
failed, or whose reply did not come in time, is closed, never reused.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from redis._parsers.base import BaseParser as _Errors  # redis-py's error reply -> exception map
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisPyConnection
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis

    _HIREDIS = True
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency; without it, redis-py only
    _HIREDIS = False

log = logging.getLogger(__name__)


def _error_of(message: str) -> Exception:
    return _Errors.parse_error(message)  # type: ignore[no-any-return]


class _Resp(asyncio.Protocol):
    """One connection: writes a packed command, resolves a future with its reply."""

    def __init__(self, encoding: str | None) -> None:
        options: dict[str, Any] = {"protocolError": InvalidResponse, "replyError": _error_of}
        if encoding:
            options["encoding"] = encoding
        self._reader = hiredis.Reader(**options)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.broken: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._reader.feed(data)
            while self._waiting:
                reply = self._reader.gets()
                if reply is False:
                    return
                future = self._waiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except InvalidResponse as error:
            self._fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or RedisConnectionError("Redis closed the connection"))

    def _fail(self, error: BaseException) -> None:
        if self.broken is None:
            self.broken = error
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(f"Redis connection lost: {error}"))
        if self.transport is not None:
            self.transport.close()

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.broken is not None or self.transport is None or self.transport.is_closing():
            future.set_exception(RedisConnectionError("Redis connection closed"))
            return future
        self._waiting.append(future)
        self.transport.write(packed)
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LeanScripts:
    """Runs registered scripts by EVALSHA over a pool of at most `max_connections` connections."""

    def __init__(
        self,
        *,
        host: str | None,
        port: int | None,
        path: str | None,
        db: int,
        username: str | None,
        password: str | None,
        client_name: str | None,
        encoding: str | None,
        socket_timeout_s: float | None,
        connect_timeout_s: float | None,
        max_connections: int,
        pool_timeout_s: float | None,
    ) -> None:
        self._address = (host, port, path)
        self._db = db
        self._username = username
        self._password = password
        self._client_name = client_name
        self._encoding = encoding
        self._timeout_s = socket_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pool_timeout_s = pool_timeout_s
        self._max_connections = max_connections
        self._idle: list[_Resp] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: set[_Resp] = set()

    @property
    def connections(self) -> int:
        """Connections open now (idle or in use)."""
        return len(self._open)

    def _for_this_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            # Connections belong to the loop that made them: a store used from another loop
            # (a test's, a private one) starts a pool of its own there.
            self._drop_all()
            self._loop = loop
            self._slots = asyncio.Semaphore(self._max_connections)
        return self._slots

    async def _connect(self) -> _Resp:
        loop = asyncio.get_running_loop()
        host, port, path = self._address
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Resp(self._encoding), path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Resp(self._encoding), host or "localhost", port or 6379
                    )
        except TimeoutError as error:
            raise RedisTimeoutError(f"connecting to Redis at {self._where()} timed out") from error
        except OSError as error:
            raise RedisConnectionError(f"cannot connect to Redis at {self._where()}: {error}") from error
        self._open.add(conn)
        try:
            setup: list[tuple[Any, ...]] = []
            if self._password is not None:
                auth = (self._username, self._password) if self._username else (self._password,)
                setup.append(("AUTH", *auth))
            if self._client_name:
                setup.append(("CLIENT", "SETNAME", self._client_name))
            if self._db:
                setup.append(("SELECT", self._db))
            if setup:
                packed = b"".join(hiredis.pack_command(command) for command in setup)
                futures = [conn.send(packed)] + [self._follow(conn) for _ in setup[1:]]
                for reply in await self._await_all(futures):
                    if isinstance(reply, Exception):
                        raise reply
        except BaseException:
            self._discard(conn)
            raise
        return conn

    def _follow(self, conn: _Resp) -> asyncio.Future[Any]:
        """A future for the next reply of a command already written (pipelined set-up)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn._waiting.append(future)
        return future

    async def _reply(self, future: asyncio.Future[Any]) -> Any:
        """The reply `future` resolves to, or redis-py's TimeoutError after the socket timeout
        (a timer on the future: cheaper than a timeout context per call)."""
        if self._timeout_s is None:
            return await future
        timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            future.set_exception(RedisTimeoutError(f"Redis at {self._where()} did not answer in time"))

    async def _await_all(self, futures: list[asyncio.Future[Any]]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                return [await future for future in futures]
        except TimeoutError as error:
            raise RedisTimeoutError(f"Redis at {self._where()} did not answer in time") from error

    def _where(self) -> str:
        host, port, path = self._address
        return path if path is not None else f"{host}:{port}"

    def _discard(self, conn: _Resp) -> None:
        self._open.discard(conn)
        conn.close()

    def _drop_all(self) -> None:
        for conn in list(self._open):
            try:
                self._discard(conn)
            except RuntimeError:  # its loop is closed: the transport went with it
                self._open.discard(conn)
        self._idle.clear()

    async def call(self, *args: Any) -> Any:
        """One command's reply (an error reply raised as redis-py raises it).

        A connection that broke while it sat idle (Redis restarted, or closed it) fails the
        call it was reused for; that call is sent once more on a new connection, as redis-py's
        retry does. A new connection that fails, or one that stays silent, is not retried.
        """
        try:
            return await self._call_once(args, reuse=True)
        except RedisConnectionError as error:
            if not getattr(error, "reused", False):
                raise
            return await self._call_once(args, reuse=False)

    async def _call_once(self, args: tuple[Any, ...], reuse: bool) -> Any:
        slots = self._for_this_loop()
        try:
            if slots.locked():  # every connection busy: wait for one, as redis-py's pool does
                async with asyncio.timeout(self._pool_timeout_s):
                    await slots.acquire()
            else:
                await slots.acquire()  # returns at once
        except TimeoutError as error:
            raise RedisConnectionError(
                f"no Redis connection free within {self._pool_timeout_s:g}s "
                f"(all {self._max_connections} in use; SHOAL_REDIS_MAX_CONNECTIONS)"
            ) from error
        try:
            conn = self._idle.pop() if reuse and self._idle else None
            while conn is not None and conn.broken is not None:  # closed by Redis while idle
                self._discard(conn)
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                reply = await self._reply(conn.send(hiredis.pack_command(args)))
            except RedisConnectionError as error:
                self._discard(conn)
                error.reused = reused  # type: ignore[attr-defined]
                raise
            except BaseException:
                self._discard(conn)  # a reply may still come: the connection is out of step
                raise
            if conn.broken is None:
                self._idle.append(conn)
            else:
                self._discard(conn)
        finally:
            slots.release()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """`script(keys=keys, args=args)`, as redis-py's Script runs it (loads it on NOSCRIPT)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", script.script)
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        self._drop_all()


def lean_scripts_for(client: Any) -> LeanScripts | None:
    """A `LeanScripts` on the same server, database and credentials as `client`, or None where the
    lean path would not be the same call (Sentinel, Cluster, TLS, RESP3, credential providers)."""
    if not isinstance(client, Redis):
        return None
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return None
    kw = pool.connection_kwargs
    kind = pool.connection_class
    unix = issubclass(kind, UnixDomainSocketConnection)
    if hiredis is None or (
        not unix and (not issubclass(kind, RedisPyConnection) or issubclass(kind, SSLConnection))
    ):
        return None
    if kw.get("credential_provider") is not None or kw.get("protocol") not in (None, 2, "2"):
        return None
    timeout_s = pool.timeout if isinstance(pool, BlockingConnectionPool) else None
    return LeanScripts(
        host=None if unix else kw.get("host", "localhost"),
        port=None if unix else int(kw.get("port", 6379)),
        path=kw.get("path") if unix else None,
        db=int(kw.get("db") or 0),
        username=kw.get("username"),
        password=kw.get("password"),
        client_name=kw.get("client_name"),
        encoding=kw.get("encoding", "utf-8") if kw.get("decode_responses") else None,
        socket_timeout_s=kw.get("socket_timeout"),
        connect_timeout_s=kw.get("socket_connect_timeout"),
        max_connections=pool.max_connections,
        pool_timeout_s=timeout_s,
    )
