"""A lean asyncio path for the one script call of a single submit: RESP over a bare asyncio protocol.

redis-py's asyncio client costs about 160-230 µs of CPU per command (its pool's lock and
condition, a timeout context per read, the retry wrapper, the observability hooks), more
than everything else a single POST /api/v1/tasks does. `LeanScripts` sends the same
`FCALL` or `EVALSHA` as `shoal.core.scripts` does, packed by hiredis (as `redis_packing` packs it) and parsed
by hiredis's reader (as redis-py parses it), over a small pool of connections of its own:
one call costs about a fifth.

It is used only where it is the same call: one Redis server over TCP or a Unix socket, no
TLS, RESP2, no credential provider; Sentinel, Cluster and everything else keep redis-py
(`lean_scripts_for` answers None). Errors are redis-py's: a Redis error reply raises the
exception class redis-py raises for it (a missing script or function makes it load it and
send it again, as redis-py's `Script` does), a broken or silent connection raises redis-py's
`ConnectionError` / `TimeoutError`, so callers handle both paths alike. A connection that
failed, or whose reply did not come in time, is closed, never reused.

`LeanSyncScripts` is the same for synchronous code (the SDK's direct transport), over
blocking sockets. Both pack a script's fixed part (`FCALL` and its function or `EVALSHA` and
its SHA, and the namespace's keys) once, and only the arguments per call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.connection
import redis.sentinel
from redis._parsers.base import BaseParser as _Errors  # redis-py's error reply -> exception map
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisPyConnection
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript, Script
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


def _reader(encoding: str | None) -> Any:
    options: dict[str, Any] = {"protocolError": InvalidResponse, "replyError": _error_of}
    if encoding:
        options["encoding"] = encoding
    return hiredis.Reader(**options)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to connect: what a redis-py client's pool says, for the lean connections."""

    host: str
    port: int
    path: str | None  # a Unix socket instead of host and port
    db: int
    username: str | None
    password: str | None
    client_name: str | None
    encoding: str | None  # None: replies stay bytes (no decode_responses)
    socket_timeout_s: float | None
    connect_timeout_s: float | None
    keepalive: bool = False  # SO_KEEPALIVE, as redis-py's socket_keepalive

    def where(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    def setup(self) -> list[tuple[Any, ...]]:
        """The commands a new connection sends first (what redis-py sends, less CLIENT SETINFO)."""
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            commands.append(
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def target_of(pool: Any, unix: bool) -> Target | None:
    """The `Target` of a redis-py pool's connections, or None when they are not plain RESP2 ones."""
    kw = pool.connection_kwargs
    if kw.get("credential_provider") is not None or kw.get("protocol") not in (None, 2, "2"):
        return None
    return Target(
        host=str(kw.get("host") or "localhost"),
        port=int(kw.get("port") or 6379),
        path=str(kw["path"]) if unix else None,
        db=int(kw.get("db") or 0),
        username=kw.get("username"),
        password=kw.get("password"),
        client_name=kw.get("client_name"),
        encoding=str(kw.get("encoding") or "utf-8") if kw.get("decode_responses") else None,
        socket_timeout_s=kw.get("socket_timeout"),
        connect_timeout_s=kw.get("socket_connect_timeout"),
        keepalive=bool(kw.get("socket_keepalive")) and not unix,
    )


class AsyncCallable(Protocol):
    """What runs a script here (`shoal.core.scripts.TransitionScript`): its call's head (FCALL
    and a function, or EVALSHA and a SHA), and how to load it when the server lacks it."""

    async def ready(self) -> Any: ...
    def head(self) -> tuple[str, str]: ...
    def select(self, keys: list[Any]) -> list[Any]: ...
    def missing(self, exc: ResponseError) -> bool: ...
    async def reload(self) -> None: ...


class SyncCallable(Protocol):
    """`AsyncCallable` for synchronous code (`shoal.core.scripts.SyncTransitionScript`)."""

    def head(self) -> tuple[str, str]: ...
    def select(self, keys: list[Any]) -> list[Any]: ...
    def missing(self, exc: ResponseError) -> bool: ...
    def reload(self) -> None: ...


class _ScriptCalls:
    """A script call (FCALL or EVALSHA) packed per call from a prefix packed once per (head, keys)."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[tuple[str, str], tuple[Any, ...]], tuple[int, bytes]] = {}

    def pack(self, head: tuple[str, str], keys: list[Any], args: list[Any]) -> bytes:
        known = self._prefixes.get((head, tuple(keys)))
        if known is None:
            fixed = hiredis.pack_command((*head, len(keys), *keys))
            known = (3 + len(keys), fixed[fixed.index(b"\r\n") + 2 :])
            if len(self._prefixes) < 64:  # a store has a handful of (script, keys) pairs
                self._prefixes[(head, tuple(keys))] = known
        count, fixed = known
        if not args:
            return b"*%d\r\n%s" % (count, fixed)
        packed = hiredis.pack_command(tuple(args))
        return b"*%d\r\n%s%s" % (count + len(args), fixed, packed[packed.index(b"\r\n") + 2 :])


class _Resp(asyncio.Protocol):
    """One connection: writes a packed command, resolves a future with its reply."""

    def __init__(self, encoding: str | None) -> None:
        self._reader = _reader(encoding)
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

    def __init__(self, target: Target, max_connections: int, pool_timeout_s: float | None) -> None:
        self.target = target
        self._timeout_s = target.socket_timeout_s
        self._pool_timeout_s = pool_timeout_s
        self._max_connections = max_connections
        self._calls = _ScriptCalls()
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
        t = self.target
        try:
            async with asyncio.timeout(t.connect_timeout_s):
                if t.path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Resp(t.encoding), t.path)
                else:
                    transport, conn = await loop.create_connection(lambda: _Resp(t.encoding), t.host, t.port)
                    sock = transport.get_extra_info("socket")
                    if t.keepalive and sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except TimeoutError as error:
            raise RedisTimeoutError(f"connecting to Redis at {t.where()} timed out") from error
        except OSError as error:
            raise RedisConnectionError(f"cannot connect to Redis at {t.where()}: {error}") from error
        self._open.add(conn)
        try:
            setup = t.setup()
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
            future.set_exception(RedisTimeoutError(f"Redis at {self.target.where()} did not answer in time"))

    async def _await_all(self, futures: list[asyncio.Future[Any]]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                return [await future for future in futures]
        except TimeoutError as error:
            raise RedisTimeoutError(f"Redis at {self.target.where()} did not answer in time") from error

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
        """One command's reply (see `_send`)."""
        return await self._send(hiredis.pack_command(args))

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies of `commands`, sent in one write (the first error reply raised, as a
        redis-py pipeline raises it). For reads: sending them again after a broken idle
        connection is safe."""
        if not commands:
            return []
        packed = b"".join(hiredis.pack_command(command) for command in commands)
        replies: list[Any] = await self._send(packed, len(commands))
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def _send(self, packed: bytes, replies: int = 0) -> Any:
        """The reply to a packed command (an error reply raised as redis-py raises it); with
        `replies`, the list of that many replies to packed commands (errors in it, not raised).

        A connection that broke while it sat idle (Redis restarted, or closed it) fails the
        call it was reused for; that call is sent once more on a new connection, as redis-py's
        retry does. A new connection that fails, or one that stays silent, is not retried.
        """
        try:
            return await self._send_once(packed, reuse=True, replies=replies)
        except RedisConnectionError as error:
            if not getattr(error, "reused", False):
                raise
            return await self._send_once(packed, reuse=False, replies=replies)

    async def _send_once(self, packed: bytes, reuse: bool, replies: int) -> Any:
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
                if replies:
                    futures = [conn.send(packed)] + [self._follow(conn) for _ in range(replies - 1)]
                    reply: Any = await self._await_all(futures)
                else:
                    reply = await self._reply(conn.send(packed))
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

    async def run(self, script: AsyncCallable | AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """`script(keys=keys, args=args)`: loads it when the server does not have it, and again."""
        if isinstance(script, AsyncScript):  # registered with redis-py: as its Script runs it
            packed = self._calls.pack(("EVALSHA", script.sha), keys, args)
            try:
                return await self._send(packed)
            except NoScriptError:
                await self.call("SCRIPT", "LOAD", script.script)
                return await self._send(packed)
        await script.ready()
        try:
            return await self._send(self._calls.pack(script.head(), script.select(keys), args))
        except ResponseError as exc:
            if not script.missing(exc):
                raise
        await script.reload()  # the head may have turned from FCALL to EVALSHA
        return await self._send(self._calls.pack(script.head(), script.select(keys), args))

    async def aclose(self) -> None:
        self._drop_all()


def lean_scripts_for(client: Any) -> LeanScripts | None:
    """A `LeanScripts` on the same server, database and credentials as the asyncio `client`, or
    None where the lean path would not be the same call (Sentinel, Cluster, TLS, RESP3,
    credential providers)."""
    if not _HIREDIS or not isinstance(client, Redis):
        return None
    pool = client.connection_pool
    kind = pool.connection_class
    unix = issubclass(kind, UnixDomainSocketConnection)
    tcp = issubclass(kind, RedisPyConnection) and not issubclass(kind, SSLConnection)
    if isinstance(pool, SentinelConnectionPool) or not (unix or tcp):
        return None
    target = target_of(pool, unix)
    if target is None:
        return None
    timeout_s = pool.timeout if isinstance(pool, BlockingConnectionPool) else None
    return LeanScripts(target, pool.max_connections, timeout_s)


class _SyncConn:
    """One blocking connection: sends a packed command, reads its reply."""

    def __init__(self, target: Target) -> None:
        self._reader = _reader(target.encoding)
        try:
            if target.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(target.connect_timeout_s)
                sock.connect(target.path)
            else:
                sock = socket.create_connection((target.host, target.port), target.connect_timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if target.keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except TimeoutError as error:
            raise RedisTimeoutError(f"connecting to Redis at {target.where()} timed out") from error
        except OSError as error:
            raise RedisConnectionError(f"cannot connect to Redis at {target.where()}: {error}") from error
        sock.settimeout(target.socket_timeout_s)
        self.sock = sock
        self._where = target.where()
        try:
            for command in target.setup():  # few, once per connection
                reply = self.request(hiredis.pack_command(command))
                if isinstance(reply, Exception):
                    raise reply
        except BaseException:
            self.close()
            raise

    def request(self, packed: bytes) -> Any:
        try:
            self.sock.sendall(packed)
            while (reply := self._reader.gets()) is False:
                data = self.sock.recv(65536)
                if not data:
                    raise RedisConnectionError(f"Redis at {self._where} closed the connection")
                self._reader.feed(data)
        except TimeoutError as error:
            raise RedisTimeoutError(f"Redis at {self._where} did not answer in time") from error
        except OSError as error:
            raise RedisConnectionError(f"Redis connection to {self._where} lost: {error}") from error
        return reply

    def close(self) -> None:
        self.sock.close()


class LeanSyncScripts:
    """`LeanScripts` for synchronous code: blocking connections, one per thread at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._calls = _ScriptCalls()
        self._idle: list[_SyncConn] = []
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._idle) + self._busy

    def call(self, *args: Any) -> Any:
        """One command's reply (an error reply raised as redis-py raises it)."""
        return self._send(hiredis.pack_command(args))

    def _send(self, packed: bytes) -> Any:
        try:
            return self._send_once(packed, reuse=True)
        except RedisConnectionError as error:
            if not getattr(error, "reused", False):
                raise
            return self._send_once(packed, reuse=False)  # it broke while idle: once more, anew

    def _send_once(self, packed: bytes, reuse: bool) -> Any:
        with self._lock:
            conn = self._idle.pop() if reuse and self._idle else None
            self._busy += 1
        try:
            reused = conn is not None
            if conn is None:
                conn = _SyncConn(self.target)
            try:
                reply = conn.request(packed)
            except RedisConnectionError as error:
                conn.close()
                error.reused = reused  # type: ignore[attr-defined]
                raise
            except BaseException:
                conn.close()  # out of step, or timed out: never reused
                raise
            with self._lock:
                self._idle.append(conn)
        finally:
            with self._lock:
                self._busy -= 1
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def run(self, script: SyncCallable | Script, keys: list[Any], args: list[Any]) -> Any:
        """`script(keys=keys, args=args)`: loads it when the server does not have it, and again."""
        if isinstance(script, Script):  # registered with redis-py: as its Script runs it
            packed = self._calls.pack(("EVALSHA", script.sha), keys, args)
            try:
                return self._send(packed)
            except NoScriptError:
                self.call("SCRIPT", "LOAD", script.script)
                return self._send(packed)
        try:
            return self._send(self._calls.pack(script.head(), script.select(keys), args))
        except ResponseError as exc:
            if not script.missing(exc):
                raise
        script.reload()  # the head may have turned from FCALL to EVALSHA
        return self._send(self._calls.pack(script.head(), script.select(keys), args))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def lean_sync_scripts_for(client: Any) -> LeanSyncScripts | None:
    """`lean_scripts_for` for a synchronous redis-py client."""
    if not _HIREDIS or not isinstance(client, redis.Redis):
        return None
    pool = client.connection_pool
    kind = pool.connection_class
    unix = issubclass(kind, redis.connection.UnixDomainSocketConnection)
    tcp = issubclass(kind, redis.connection.Connection) and not issubclass(
        kind, redis.connection.SSLConnection
    )
    if isinstance(pool, redis.sentinel.SentinelConnectionPool) or not (unix or tcp):
        return None
    target = target_of(pool, unix)
    return None if target is None else LeanSyncScripts(target)
