"""A lean HTTP/1.1 keep-alive connection for the synchronous transport's plain-HTTP requests.

Measured under cProfile on one submit, `http.client` spends half of the client's CPU
parsing the answer's headers (it runs them through `email.feedparser`) and a quarter
building the request a header at a time. `Connection` writes a request's head from a block
built once per endpoint, and reads the answer's status line and headers itself: a status,
a reason, the headers as a dict (names lower-cased, repeated ones joined by ", "), and a
body of `Content-Length` bytes, chunked, or up to the end of the connection.

It keeps `http.client`'s contract where the transport relies on it: the same exception
types (`RemoteDisconnected` when the server closed a kept connection, `BadStatusLine`,
`LineTooLong`, `IncompleteRead`, `InvalidURL`, ValueError on a header value that would
split the request), `will_close` after `Connection: close` or an HTTP/1.0 answer, no body
for HEAD, 1xx, 204 and 304. HTTPS keeps `http.client` (its TLS handling is not redone here).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
from collections.abc import Mapping
from typing import IO

MAX_LINE = 65536
MAX_HEADERS = 100
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_BAD_VALUE = re.compile(r"\n(?![ \t])|\r(?![ \t\n])|[\x00\x0b\x0c]")
_NO_BODY_STATUSES = frozenset({204, 304})


def header_block(headers: Mapping[str, str]) -> bytes:
    """`Name: value\\r\\n` lines of `headers`; ValueError for a name or value that would split the request."""
    lines = []
    for name, value in headers.items():
        if not name or _BAD_TARGET.search(name) or ":" in name:
            raise ValueError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"invalid header value {value!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class Response:
    """The answer to one request, read whole by `Connection.getresponse`."""

    def __init__(
        self, status: int, reason: str, headers: dict[str, str], body: bytes, will_close: bool
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.will_close = will_close

    def getheader(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def read(self) -> bytes:
        return self.body


class Connection:
    """One keep-alive HTTP/1.1 connection to `host:port` (sends a request, reads its answer)."""

    def __init__(self, host: str, port: int, timeout: float | None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._file: IO[bytes] | None = None
        self._method = ""
        host_header = host if port == 80 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" if port == 80 else f"[{host}]:{port}"
        self._host_line = f"Host: {host_header}\r\nAccept-Encoding: identity\r\n".encode("latin-1")
        self._blocks: dict[tuple[tuple[str, str], ...], bytes] = {}

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        with contextlib.suppress(OSError):  # not TCP (a proxy's socket family): keep the default
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        file, sock = self._file, self.sock
        self._file = self.sock = None
        if file is not None:
            file.close()
        if sock is not None:
            sock.close()

    def request(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]) -> None:
        """Send the request in one write (connecting first if needed)."""
        if _BAD_TARGET.search(target) or _BAD_TARGET.search(method):
            raise http.client.InvalidURL(f"URL can't contain control characters. {target!r}")
        key = tuple(headers.items())
        block = self._blocks.get(key)
        if block is None:
            block = self._host_line + header_block(headers)
            if len(self._blocks) < 16:  # a transport sends a few header sets, for its whole life
                self._blocks[key] = block
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        if body is None and method not in ("POST", "PUT", "PATCH"):
            length = b""
        else:
            length = b"Content-Length: %d\r\n" % (len(body) if body is not None else 0)
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + block + length + b"\r\n"
        self._method = method
        self.sock.sendall(head + body if body else head)

    def getresponse(self) -> Response:
        file = self._file
        if file is None:
            raise http.client.ResponseNotReady("no request sent")
        while True:
            version, status, reason = self._status_line(file)
            headers = self._headers(file)
            if status >= 200 or status == 101:
                break  # 100 Continue and other interim answers carry nothing for us
        if version == "HTTP/1.1":
            will_close = "close" in headers.get("connection", "").lower()
        else:  # HTTP/1.0 closes unless asked to keep alive
            will_close = "keep-alive" not in headers.get("connection", "").lower()
        if self._method == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked(file)
        elif (length := headers.get("content-length")) is not None:
            body = self._exactly(file, self._length(length))
        else:
            body, will_close = file.read(), True
        return Response(status, reason, headers, body, will_close)

    @staticmethod
    def _line(file: IO[bytes]) -> bytes:
        line = file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        return line

    def _status_line(self, file: IO[bytes]) -> tuple[str, int, str]:
        raw = self._line(file)
        if not raw:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        line = raw.decode("iso-8859-1")
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            self.close()
            raise http.client.BadStatusLine(line)
        return version, int(code), reason.strip()

    def _headers(self, file: IO[bytes]) -> dict[str, str]:
        headers: dict[str, str] = {}
        name = ""
        for _ in range(MAX_HEADERS + 1):
            raw = self._line(file)
            if raw in (b"\r\n", b"\n", b""):
                return headers
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation
                headers[name] += " " + line.strip()
                continue
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")

    @staticmethod
    def _length(text: str) -> int:
        if not text.strip().isdigit():
            raise http.client.HTTPException(f"invalid Content-Length {text!r}")
        return int(text)

    @staticmethod
    def _exactly(file: IO[bytes], n: int) -> bytes:
        data = file.read(n)
        if len(data) < n:
            raise http.client.IncompleteRead(data, n - len(data))
        return data

    def _chunked(self, file: IO[bytes]) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self._line(file).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(parts)) from None
            if size == 0:
                while self._line(file) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self._exactly(file, size))
            self._exactly(file, 2)  # the chunk's CRLF
