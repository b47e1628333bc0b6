"""The synchronous HTTP transport: a pool of keep-alive connections (`http_wire`; HTTPS: `http.client`).

Chosen by measurement (bench/http_clients.py): one POST /api/v1/tasks costs the client
about 110 µs of CPU with `http.client`, 180 with urllib3, 200 with httpcore and 410 with
httpx, and a submit-heavy producer spends most of its time there. Of `http.client`'s
cost, half was parsing the answer's headers (through `email.feedparser`) and a quarter
building the request header by header: plain HTTP now goes over `http_wire`, which does
both itself (the same exceptions, keep-alive and body rules). What the libraries add
(pooling, retries) is the small part kept here: a thread-safe pool of idle connections
(dropped before the server's keep-alive timeout closes them), and retries of what is safe
to repeat.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

from shoal._version import __version__
from shoal.errors import RequestTimeout, ShoalError, Unavailable
from shoal.sdk import http_wire
from shoal.sdk.answers import UNAVAILABLE_STATUSES, decode, encode, error_for
from shoal.sdk.calls import Call

IDLE_KEEP_S = 4.0
"""Idle connections older than this are not reused: uvicorn closes them after 5 s."""
_BACKOFF_S = 0.05
_BACKOFF_MAX_S = 1.0


def backoff_s(attempt: int) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (0-based)."""
    return random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_S * 2**attempt))


ACTOR_HEADER = "X-Shoal-Actor"
"""Names the person a client's actions are for; the API takes it only from a token that may act
for people (the dashboard's), and answers 403 to any other."""


class Endpoint:
    """Where the API is: scheme, host, port, path prefix, and the headers of every request."""

    def __init__(self, url: str, token: str | None, actor: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the API URL must look like http://host:port, not {url!r}")
        self.url = url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": f"shoal-python/{__version__}"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if actor:
            self.headers[ACTOR_HEADER] = actor

    def target(self, path: str, query: Mapping[str, Any] | None) -> str:
        if not query:
            return self.prefix + path
        return f"{self.prefix}{path}?{urlencode(query)}"

    def unreachable(self, error: BaseException) -> Unavailable:
        return Unavailable(f"cannot reach the scheduler at {self.url}: {type(error).__name__}: {error}")


class _OneWrite:
    """`http.client` connections that send a request's headers and body in one write.

    http.client (which sets TCP_NODELAY itself) writes them apart: two segments, two
    wake-ups of the server for one request it can only answer once the second is in.
    """

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
        buffer.extend((b"", b""))
        request = b"\r\n".join(buffer) + message_body
        del buffer[:]
        self.send(request)  # type: ignore[attr-defined]


class HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    """A keep-alive HTTPS connection of the transport."""


AnyConnection = http_wire.Connection | http.client.HTTPConnection
"""Plain HTTP goes over `http_wire` (a lean parser); HTTPS over `http.client`."""


class _NotConnected(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class HttpTransport:
    """Sends `Call`s over a pool of keep-alive connections; safe to share between threads."""

    def __init__(self, endpoint: Endpoint, timeout_s: float, retries: int) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self._idle: list[tuple[AnyConnection, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def _connection(self, timeout_s: float) -> AnyConnection:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                conn, since = self._idle.pop()
                if now - since < IDLE_KEEP_S:
                    conn.timeout = timeout_s
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout_s)
                    return conn
                conn.close()
        if self.endpoint.https:
            return HTTPSConnection(self.endpoint.host, self.endpoint.port, timeout=timeout_s)
        return http_wire.Connection(self.endpoint.host, self.endpoint.port, timeout=timeout_s)

    def _connect(self, conn: AnyConnection) -> None:
        # A connection that could not be opened sent nothing: always safe to try again.
        try:
            conn.connect()
        except OSError as error:
            raise _NotConnected(error) from error

    def _release(self, conn: AnyConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def execute(self, call: Call) -> Any:
        """The decoded answer of `call` (its `unwrap` key if any), or the typed error."""
        body = None if call.body is None else encode(call.body)
        headers = self.endpoint.headers
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        target = self.endpoint.target(call.path, call.query)
        timeout_s = self.timeout_s + call.wait_s
        attempt = 0
        while True:
            conn = self._connection(timeout_s)
            sent = False
            try:
                if conn.sock is None:
                    self._connect(conn)
                conn.request(call.method, target, body, headers)
                sent = True
                response = conn.getresponse()
                data = response.read()
            except _NotConnected as failure:
                conn.close()
                if attempt < self.retries:
                    time.sleep(backoff_s(attempt))
                    attempt += 1
                    continue
                raise self.endpoint.unreachable(failure.error) from failure.error
            except TimeoutError as error:
                conn.close()
                raise RequestTimeout(
                    f"the Shoal API at {self.endpoint.url} did not answer within {timeout_s:g} s"
                ) from error
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                if (call.safe or not sent) and attempt < self.retries:
                    time.sleep(backoff_s(attempt))
                    attempt += 1
                    continue
                raise self.endpoint.unreachable(error) from error
            if response.will_close:
                conn.close()
            else:
                self._release(conn)
            status = response.status
            content_type = response.getheader("content-type", "")
            if status >= 400:
                if status in UNAVAILABLE_STATUSES and call.safe and attempt < self.retries:
                    time.sleep(backoff_s(attempt))
                    attempt += 1
                    continue
                raise error_for(status, content_type, data, response.reason)
            value = decode(content_type, data)
            return value[call.unwrap] if call.unwrap else value

    @contextmanager
    def stream(
        self,
        path: str,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        read_timeout_s: float | None,
    ) -> Iterator[Iterator[bytes]]:
        """A streamed GET on its own connection: yields an iterator of the answer's lines."""
        kind = http.client.HTTPSConnection if self.endpoint.https else http.client.HTTPConnection
        conn = kind(self.endpoint.host, self.endpoint.port, timeout=self.timeout_s)
        try:
            try:
                conn.request(
                    "GET", self.endpoint.target(path, query), headers={**self.endpoint.headers, **headers}
                )
                response = conn.getresponse()
                if response.status >= 400:
                    raise error_for(
                        response.status,
                        response.getheader("content-type", ""),
                        response.read(),
                        response.reason,
                    )
                if conn.sock is not None:
                    conn.sock.settimeout(read_timeout_s)
            except ShoalError:
                raise
            except (OSError, http.client.HTTPException) as error:
                raise self.endpoint.unreachable(error) from error
            yield _lines(response, self.endpoint)
        finally:
            conn.close()


def _lines(response: http.client.HTTPResponse, endpoint: Endpoint) -> Iterator[bytes]:
    try:
        while True:
            line = response.readline()
            if not line:
                return
            yield line
    except TimeoutError as error:
        raise RequestTimeout(f"the event stream from {endpoint.url} went silent") from error
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise endpoint.unreachable(error) from error
