"""What `SHOAL_REDIS_URL` names: one server, a Redis Cluster or a Sentinel-managed primary.

    redis://[user[:password]@]host[:port][/db]
        one server; rediss:// for TLS
    unix:///path/to/redis.sock[?db=n]
        one server on a Unix socket
    redis+cluster://[user[:password]@]host:port[,host:port...]
        seed nodes of a Redis Cluster; rediss+cluster:// for TLS
    redis+sentinel://[user[:password]@]host:port[,host:port...]/service[/db]
        sentinels and the name of the primary they watch; rediss+sentinel:// for TLS
        (to the sentinels and to the data nodes)

User name and password (Redis ACL) are those of the data nodes; percent-encode characters
such as `@`, `:` or `/` in them. Parsing is strict: anything this module cannot honour
(an unknown scheme or query parameter, a database other than 0 on a cluster) is refused
with a message naming it, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import parse_qs, unquote

Mode = Literal["single", "cluster", "sentinel"]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_MAX_DB = 15_999  # Redis allows up to `databases` (16 by default); refuse nonsense early


@dataclass(frozen=True)
class RedisTarget:
    """A parsed SHOAL_REDIS_URL. `hosts` are the server (single), the seed nodes (cluster) or
    the sentinels (sentinel)."""

    mode: Mode
    hosts: tuple[tuple[str, int], ...]
    tls: bool = False
    db: int = 0
    service: str | None = None
    unix_path: str | None = None
    username: str | None = None
    password: str | None = None

    def with_credentials(self, username: str | None, password: str | None) -> RedisTarget:
        return replace(self, username=username, password=password)

    def describe(self) -> str:
        """The URL without its password, for logs and error messages."""
        scheme = next(name for name, value in _SCHEMES.items() if value == (self.mode, self.tls))
        user = f"{self.username}:***@" if self.password else (f"{self.username}@" if self.username else "")
        if self.unix_path:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        if self.mode == "sentinel":
            return f"{scheme}://{user}{hosts}/{self.service}/{self.db}"
        return f"{scheme}://{user}{hosts}/{self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse SHOAL_REDIS_URL; ValueError with a message naming what is wrong."""
    if not url.isascii() or any(ch.isspace() for ch in url):
        raise ValueError("the Redis URL must be ASCII without spaces (percent-encode the password)")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ValueError(f"the Redis URL must start with one of {known}")
    mode, tls = _SCHEMES[scheme.lower()]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ValueError("the Redis URL must not have a #fragment")
    rest, _, query = rest.partition("?")
    params = _query(query)
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    if scheme.lower() == "unix":
        return _unix(netloc, path, params, username, password)
    if mode == "single":
        hosts = _hosts(hostlist, DEFAULT_PORT)
        if len(hosts) != 1:
            raise ValueError(
                "a redis:// URL names one server; for several use redis+cluster:// (seed nodes) "
                "or redis+sentinel:// (sentinels)"
            )
        db = _db(path, params)
        return RedisTarget("single", hosts, tls, db, None, None, username, password)
    if mode == "cluster":
        hosts = _hosts(hostlist, DEFAULT_PORT)
        db = _db(path, params)
        if db != 0:
            raise ValueError("a Redis Cluster has only database 0")
        return RedisTarget("cluster", hosts, tls, 0, None, None, username, password)
    hosts = _hosts(hostlist, DEFAULT_SENTINEL_PORT)
    service, _, db_part = path.partition("/")
    service = unquote(service)
    if not service:
        raise ValueError(
            "a redis+sentinel:// URL must name the primary after the hosts: "
            "redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster"
        )
    db = _db(db_part, params)
    return RedisTarget("sentinel", hosts, tls, db, service, None, username, password)


def _query(query: str) -> dict[str, str]:
    params = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(params) - {"db"})
    if unknown:
        raise ValueError(
            f"unknown Redis URL parameter(s) {', '.join(unknown)}: TLS files and timeouts are set with "
            "SHOAL_REDIS_TLS_* and SHOAL_REDIS_*_TIMEOUT_S"
        )
    return params


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, has_password, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if has_password else None)


def _hosts(hostlist: str, default_port: int) -> tuple[tuple[str, int], ...]:
    if not hostlist:
        raise ValueError("the Redis URL names no host")
    hosts = []
    for item in hostlist.split(","):
        if item.startswith("["):  # [ipv6]:port
            host, bracket, port_part = item[1:].partition("]")
            if not bracket or (port_part and not port_part.startswith(":")):
                raise ValueError(f"bad host {item!r} in the Redis URL")
            port_text = port_part[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"empty host in the Redis URL ({hostlist!r})")
        hosts.append((host, _port(port_text, default_port, item)))
    return tuple(hosts)


def _port(text: str, default: int, item: str) -> int:
    if text == "":
        return default
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {item!r}: must be 1-65535")
    return int(text)


def _db(path: str, params: dict[str, str]) -> int:
    path = path.strip("/")
    if path and "db" in params:
        raise ValueError("give the Redis database once: in the path or as ?db=, not both")
    text = path or params.get("db", "0") or "0"
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_DB:
        raise ValueError(f"bad Redis database {text!r}: must be a number such as 0")
    return int(text)


def _unix(
    netloc: str, path: str, params: dict[str, str], username: str | None, password: str | None
) -> RedisTarget:
    hostlist = netloc.rpartition("@")[2]
    if hostlist:
        raise ValueError("a unix:// URL has no host: unix:///path/to/redis.sock")
    socket_path = "/" + path
    if socket_path == "/":
        raise ValueError("a unix:// URL needs the socket's path: unix:///path/to/redis.sock")
    db = _db("", params)
    return RedisTarget("single", (), False, db, None, socket_path, username, password)
