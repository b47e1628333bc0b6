"""Every Redis client Shoal opens is made here: one server, Redis Cluster or Sentinel, TLS, ACL.

`RedisConnector` turns the settings (`SHOAL_REDIS_URL` and the other `SHOAL_REDIS_*`) into
clients. Each purpose gets its own client and so its own connections: the main pool of a
process (the store's reads and transitions), the leader's lock and loops, the scheduler's
event reader, a worker's wake-up subscription. Load on the main pool can never starve the
leader's lock renewals, and a subscription never takes a pooled connection away. The API's
store also runs its transition scripts over `lean_redis`: a small pool of its own on the
same server, database and credentials as its main client (on one server only).

Pools queue instead of failing: when every connection of a client is busy, a command waits
for one, up to `SHOAL_REDIS_POOL_TIMEOUT_S`, then fails with a `ConnectionError` (the API
answers 503). redis-py's `BlockingConnectionPool` does this for one server and for Sentinel;
its cluster client has no blocking pool (a full node pool raises at once), so
`QueueingRedisCluster` puts a wait of its own in front of every command and pipeline.

On a cluster, pub/sub is sharded (SSUBSCRIBE/SPUBLISH): a namespace's channels hash to its
slot, so its events stay on its shard instead of being broadcast to every node. The slot
map is loaded before the first subscription (`ready`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.cluster
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from shoal.core import redis_packing
from shoal.core.redis_url import RedisTarget
from shoal.core.sentinel_epoch import NewestEpochSentinel, NewestEpochSyncSentinel
from shoal.core.settings import RedisSettings

log = logging.getLogger(__name__)

AnyRedis = Redis | RedisCluster
"""An asyncio client of one server (or a Sentinel-managed primary), or of a cluster."""
SyncRedis = redis.Redis | redis.cluster.RedisCluster

_CLUSTER_HEADROOM = 4  # connections a cluster node pool keeps beyond the queue's size
_CLUSTER_READY_ATTEMPTS = 5


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (connects to whichever node the sentinels name the primary) that waits
    for a free connection like `BlockingConnectionPool` instead of raising when all are busy."""


class SentinelManagedRedis(Redis):
    """A client of the primary the sentinels name; closing it also closes its connections to
    the sentinels (redis-py leaves those open)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


class _SyncSentinelManagedRedis(redis.Redis):
    def close(self) -> None:
        pool = self.connection_pool
        super().close()
        for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", ()):
            sentinel.close()


_holds_cluster_slot: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "shoal_holds_cluster_slot", default=False
)


class QueueingRedisCluster(RedisCluster):
    """A cluster client whose commands wait for one of `queue_size` slots (up to
    `queue_timeout_s`) instead of failing when a node's connections are all in use."""

    def __init__(self, *, queue_size: int, queue_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(max_connections=queue_size + _CLUSTER_HEADROOM, **kwargs)
        self._queue = asyncio.Semaphore(queue_size)
        self._queue_size = queue_size
        self._queue_timeout_s = queue_timeout_s
        self._first_load = asyncio.Lock()
        self._loaded = False

    async def _load_slot_map_first(self) -> None:
        """Nothing is sent before the slot map is loaded. redis-py loads it inside the first
        command; racing first commands then ran on seed-node connections that the load
        closes under them, and the client retried them: seen here as one submit of 200
        racing ones executed twice (`duplicate task id`), and as AttributeErrors."""
        if self._loaded:
            return
        async with self._first_load:
            if not self._loaded:
                await ready(self)
                self._loaded = True

    @contextlib.asynccontextmanager
    async def queued(self) -> AsyncIterator[None]:
        """Hold one slot while the block runs (re-entrant within a task: a pipeline that falls
        back to single commands does not wait for a second slot)."""
        if _holds_cluster_slot.get():
            yield
            return
        await self._load_slot_map_first()
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._queue.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError(
                f"no Redis connection free within {self._queue_timeout_s:g}s "
                f"(all {self._queue_size} in use; SHOAL_REDIS_MAX_CONNECTIONS)"
            ) from exc
        token = _holds_cluster_slot.set(True)
        try:
            yield
        finally:
            _holds_cluster_slot.reset(token)
            self._queue.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.queued():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint is not supported on a cluster")
        return _QueueingClusterPipeline(self, transaction)  # type: ignore[abstract]


class _QueueingClusterPipeline(ClusterPipeline):
    _client: QueueingRedisCluster

    def __init__(self, client: QueueingRedisCluster, transaction: Any = None) -> None:
        super().__init__(client, transaction=transaction)
        self._queueing_client = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self._queueing_client.queued():
            return await super().execute(raise_on_error=raise_on_error, allow_redirections=allow_redirections)


class RedisConnector:
    """Makes the clients of one deployment (see the module docstring)."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.target: RedisTarget = settings.redis_target

    @property
    def mode(self) -> str:
        return self.target.mode

    @property
    def sharded_pubsub(self) -> bool:
        """Channels are shard channels (SPUBLISH/SSUBSCRIBE): on a Redis Cluster."""
        return self.target.mode == "cluster"

    def describe(self) -> str:
        return self.target.describe()

    def client_name(self, purpose: str) -> str:
        """What CLIENT LIST shows for the connections of a client made for `purpose`."""
        return f"shoal-{self.settings.namespace}-{purpose}"

    # ------------------------------------------------------------------ asyncio clients

    def client(
        self,
        name: str,
        max_connections: int | None = None,
        *,
        socket_timeout_s: float | None = None,
        decode_responses: bool = True,
    ) -> AnyRedis:
        """A new client with its own connections, named `shoal-<namespace>-<name>` in CLIENT LIST.

        `max_connections` defaults to SHOAL_REDIS_MAX_CONNECTIONS; `socket_timeout_s` to
        SHOAL_REDIS_SOCKET_TIMEOUT_S (a client that blocks in XREAD needs more).
        """
        s = self.settings
        size = max_connections or s.redis_max_connections
        kwargs = self._connection_kwargs(name, socket_timeout_s, decode_responses)
        t = self.target
        if t.mode == "cluster":
            nodes = [ClusterNode(host, port) for host, port in t.hosts]
            return QueueingRedisCluster(
                startup_nodes=nodes, queue_size=size, queue_timeout_s=s.redis_pool_timeout_s, **kwargs
            )
        if t.mode == "sentinel":
            assert t.service is not None
            sentinel = NewestEpochSentinel(
                list(t.hosts), sentinel_kwargs=self._sentinel_kwargs(), db=t.db, **kwargs
            )
            return sentinel.master_for(  # type: ignore[no-any-return]
                t.service,
                redis_class=SentinelManagedRedis,
                connection_pool_class=BlockingSentinelConnectionPool,
                max_connections=size,
                timeout=s.redis_pool_timeout_s,
            )
        if t.unix_path is not None:
            kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ssl") and k != "socket_keepalive"}
            pool = BlockingConnectionPool(
                connection_class=redis_packing.UnixDomainSocketConnection,
                path=t.unix_path,
                db=t.db,
                max_connections=size,
                timeout=s.redis_pool_timeout_s,
                **kwargs,
            )
        else:
            host, port = t.hosts[0]
            connection_class = redis_packing.SSLConnection if t.tls else redis_packing.Connection
            # The connection class is what makes it TLS; the ssl_* options go to it.
            kwargs = {k: v for k, v in kwargs.items() if k != "ssl" and (t.tls or not k.startswith("ssl"))}
            pool = BlockingConnectionPool(
                connection_class=connection_class,
                host=host,
                port=port,
                db=t.db,
                max_connections=size,
                timeout=s.redis_pool_timeout_s,
                **kwargs,
            )
        return Redis.from_pool(pool)

    def _connection_kwargs(
        self, name: str, socket_timeout_s: float | None, decode_responses: bool
    ) -> dict[str, Any]:
        s, t = self.settings, self.target
        kwargs: dict[str, Any] = {
            "client_name": self.client_name(name),
            "username": t.username,
            "password": t.password,
            "decode_responses": decode_responses,
            "socket_timeout": socket_timeout_s or s.redis_socket_timeout_s,
            "socket_connect_timeout": s.redis_connect_timeout_s,
            "socket_keepalive": True,
            "health_check_interval": 30,
        }
        if t.tls:
            kwargs.update(self._tls_kwargs())
        return kwargs

    def _tls_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "ssl": True,
            "ssl_ca_certs": s.redis_tls_ca_file,
            "ssl_certfile": s.redis_tls_cert_file,
            "ssl_keyfile": s.redis_tls_key_file,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if s.redis_tls_verify else ssl.CERT_NONE,
            "ssl_check_hostname": s.redis_tls_verify,
        }

    def _sentinel_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "socket_timeout": s.redis_socket_timeout_s,
            "socket_connect_timeout": s.redis_connect_timeout_s,
            "username": s.redis_sentinel_username,
            "password": s.redis_sentinel_password.get_secret_value() if s.redis_sentinel_password else None,
        }
        if self.target.tls:
            kwargs.update(self._tls_kwargs())
        return kwargs

    # ------------------------------------------------------------------ synchronous clients

    def sync_client(self, name: str, *, decode_responses: bool = False) -> SyncRedis:
        """A synchronous client (for command-line tools and tests), with the same target and auth."""
        kwargs = self._connection_kwargs(name, None, decode_responses)
        kwargs.pop("health_check_interval")
        t = self.target
        if t.mode == "cluster":
            nodes = [redis.cluster.ClusterNode(host, port) for host, port in t.hosts]
            return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)
        if t.mode == "sentinel":
            assert t.service is not None
            sentinel = NewestEpochSyncSentinel(
                list(t.hosts), sentinel_kwargs=self._sentinel_kwargs(), db=t.db, **kwargs
            )
            return sentinel.master_for(t.service, redis_class=_SyncSentinelManagedRedis)  # type: ignore[no-any-return]
        if t.unix_path is not None:
            kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ssl") and k != "socket_keepalive"}
            return redis.Redis(unix_socket_path=t.unix_path, db=t.db, **kwargs)
        if not t.tls:
            kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ssl")}
        host, port = t.hosts[0]
        return redis.Redis(host=host, port=port, db=t.db, **kwargs)

    # ------------------------------------------------------------------ pub/sub

    def subscription(self, client: AnyRedis, channels: list[str]) -> Subscription:
        """A subscription to `channels` on `client` (give it a client of its own): shard channels
        on a cluster, plain channels otherwise."""
        return Subscription(client, channels, sharded=self.sharded_pubsub)


def is_cluster(client: AnyRedis) -> bool:
    """A Redis Cluster client: scripts publish with SPUBLISH, subscriptions use SSUBSCRIBE."""
    return isinstance(client, RedisCluster)


async def ready(client: AnyRedis) -> None:
    """Load a cluster client's slot map (retrying a cluster that is still forming); nothing to do
    for one server. Commands work without it (the client loads the map on first use), but a
    shard subscription needs the map first."""
    if not isinstance(client, RedisCluster):
        return
    delay = 0.05
    for attempt in range(_CLUSTER_READY_ATTEMPTS):
        try:
            await RedisCluster.initialize(client)
            return
        except (RedisConnectionError, redis.exceptions.RedisClusterException, OSError):
            if attempt == _CLUSTER_READY_ATTEMPTS - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 2


class Subscription:
    """SUBSCRIBE or SSUBSCRIBE to a fixed set of channels, with one message shape for both:
    `{"type": "subscribe" | "message", "channel": str, "data": ...}`."""

    def __init__(self, client: AnyRedis, channels: list[str], *, sharded: bool) -> None:
        self._client = client
        self.channels = list(channels)
        self.sharded = sharded
        self._pubsub: PubSub | ClusterPubSub | None = None

    async def subscribe(self) -> None:
        """Send the subscription (confirmations arrive as messages of type `subscribe`)."""
        if self._pubsub is not None:
            await self.aclose()
        if self.sharded:
            assert isinstance(self._client, RedisCluster)
            await ready(self._client)
            pubsub = self._client.pubsub()
            self._pubsub = pubsub
            await pubsub.ssubscribe(*self.channels)
        else:
            assert isinstance(self._client, Redis)
            plain = self._client.pubsub()
            self._pubsub = plain
            await plain.subscribe(*self.channels)

    async def get_message(self, timeout_s: float | None) -> dict[str, Any] | None:
        """The next message or confirmation, or None after `timeout_s` (None: wait for ever)."""
        pubsub = self._pubsub
        if pubsub is None:
            raise RedisConnectionError("not subscribed")
        if isinstance(pubsub, ClusterPubSub):
            # The cluster's reader takes no "for ever": poll in long steps instead.
            step = 1.0 if timeout_s is None else timeout_s
            while (message := await pubsub.get_sharded_message(timeout=step)) is None:
                if timeout_s is not None:
                    return None
        else:
            message = await pubsub.get_message(timeout=timeout_s)
        if message is None:
            return None
        kind = _text(message["type"])
        kind = {"ssubscribe": "subscribe", "smessage": "message"}.get(kind, kind)
        return {"type": kind, "channel": _text(message["channel"]), "data": message["data"]}

    async def aclose(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
