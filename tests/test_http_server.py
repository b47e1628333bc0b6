"""The scheduler's HTTP server against slow and greedy clients, over real sockets to real uvicorn.

The server is the production configuration (`shoal.scheduler.server.server_config`) with
short deadlines so each case takes about a second. Every wait for the server to act is
bounded generously (it depends on the machine); what is asserted is what the server did
(the status it answered, that it closed the connection, what it logged and counted) and
that it never acted before its deadline, which no amount of machine load can make happen.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from api_fixtures import ApiServer, make_settings
from shoal.core.http_settings import HttpSettings
from shoal.scheduler.main import create_app
from shoal.scheduler.server import CONNECTIONS_CUT

HEADER_S = 0.6
BODY_S = 0.8
ACT_WITHIN_S = 20.0  # how long the server may take to act on a deadline on a loaded machine


@pytest.fixture
def serve(namespace: str, redis_url: str) -> Iterator[Callable[..., ApiServer]]:
    servers: list[ApiServer] = []

    def start(**http: object) -> ApiServer:
        values = {"http_header_timeout_s": HEADER_S, "http_body_timeout_s": BODY_S, **http}
        settings = make_settings(namespace, redis_url)
        server = ApiServer(create_app(settings, run_leader_loops=False), settings, HttpSettings(**values))
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


def connect(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ACT_WITHIN_S)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body): the server may send them in two
    writes, and one recv() can return only the first."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-body: {received!r}"
        body += chunk
    assert len(body) == length, "more than one response arrived"
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    received = b""
    deadline = time.monotonic() + ACT_WITHIN_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server did not close the connection within {ACT_WITHIN_S}s")


def cut_count(reason: str) -> float:
    return CONNECTIONS_CUT.labels(reason)._value.get()


def post_head(length: int) -> bytes:
    return (
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


@pytest.mark.parametrize("sent", [b"", b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Le"])
def test_headers_not_complete_in_time_get_a_408_and_the_connection_is_closed(
    serve: Callable[..., ApiServer], sent: bytes
) -> None:
    server = serve()
    before = cut_count("header_timeout")
    with connect(server) as sock:
        opened = time.monotonic()
        sock.sendall(sent)
        answer = read_until_closed(sock)
        waited = time.monotonic() - opened
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b'{"detail":"request headers too slow"}')
    assert waited >= HEADER_S
    assert cut_count("header_timeout") == before + 1


def test_a_keep_alive_connection_gets_a_fresh_header_deadline_after_each_response(
    serve: Callable[..., ApiServer],
) -> None:
    server = serve(http_keep_alive_s=60)  # uvicorn's idle timeout must not be what closes it
    with connect(server) as sock:
        for _ in range(2):  # two requests, each sent slowly but within its own deadline
            for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"):
                sock.sendall(part)
                time.sleep(HEADER_S / 4)
            assert read_response(sock).startswith(b"HTTP/1.1 200 OK")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the third never finishes its headers
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408")


def test_a_body_not_complete_in_time_closes_the_connection_without_a_500(
    serve: Callable[..., ApiServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    before = cut_count("body_timeout")
    caplog.set_level(logging.INFO)
    with connect(server) as sock:
        sock.sendall(post_head(100) + b'{"name": "')
        headers_sent = time.monotonic()
        answer = read_until_closed(sock)
        waited = time.monotonic() - headers_sent
    assert b"500" not in answer
    assert waited >= BODY_S
    assert cut_count("body_timeout") == before + 1
    assert any("body timeout" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert httpx.get(f"{server.url}/api/v1/tasks").json()["tasks"] == []  # nothing was written


def test_a_client_that_disconnects_mid_body_logs_no_500_or_traceback(
    serve: Callable[..., ApiServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    caplog.set_level(logging.INFO)
    with connect(server) as sock:
        sock.sendall(post_head(100) + b'{"name": "')
        time.sleep(0.2)  # the application is now reading the body
    with httpx.Client(base_url=server.url) as http:  # the server is fine and wrote nothing
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/v1/tasks").json()["tasks"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_slow_body_that_completes_in_time_is_served(serve: Callable[..., ApiServer]) -> None:
    server = serve()
    body = b'{"name": "echo", "args": ["slow"]}'
    with connect(server) as sock:
        sock.sendall(post_head(len(body)))
        for i in range(0, len(body), 12):
            sock.sendall(body[i : i + 12])
            time.sleep(BODY_S / 8)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201 Created")


def test_headers_at_and_over_the_size_bound(serve: Callable[..., ApiServer]) -> None:
    limit = 4096
    server = serve(http_max_header_bytes=limit)
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n"
    fixed = len(request % b"")
    with connect(server) as sock:
        sock.sendall(request % (b"p" * (limit - fixed)))  # exactly the bound
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    before = cut_count("header_size")
    with connect(server) as sock:
        sock.sendall(request % (b"p" * (limit - fixed + 1)))
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert cut_count("header_size") == before + 1


def test_past_the_concurrency_limit_requests_get_a_503_and_slow_clients_cannot_hold_it(
    serve: Callable[..., ApiServer],
) -> None:
    server = serve(http_limit_concurrency=4)
    holders = [connect(server) for _ in range(4)]
    try:
        for sock in holders:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # half-sent headers hold a connection each
        time.sleep(0.1)
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 503 Service Unavailable")
        for sock in holders:  # the header deadline frees their places
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408")
    finally:
        for sock in holders:
            sock.close()
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_long_answer_is_not_cut_by_the_deadlines(serve: Callable[..., ApiServer]) -> None:
    server = serve()
    with httpx.Client(base_url=server.url, timeout=ACT_WITHIN_S) as http:
        task = http.post("/api/v1/tasks", json={"name": "echo"}).json()
        wait_s = 3 * max(HEADER_S, BODY_S)
        started = time.monotonic()
        answer = http.get(f"/api/v1/tasks/{task['id']}/wait", params={"timeout_s": wait_s})
        assert answer.status_code == 200 and answer.json()["state"] == "queued"
        assert time.monotonic() - started >= wait_s
