"""The SDK's lean HTTP/1.1 connection (shoal.sdk.http_wire) against a raw socket server that answers
what each test scripts, byte for byte, and records what the client sent."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from shoal.sdk.http_wire import Connection, header_block

EOF = b"<EOF>"  # an answer ending so is sent, then the connection closed


class RawServer:
    """Accepts one connection at a time; for each request read, sends the next scripted answer."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while self.answers:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.requests.append(data)
                    answer = self.answers.pop(0)
                    if answer == b"CLOSE":
                        break  # close the kept connection without answering
                    if answer.endswith(EOF):
                        conn.sendall(answer.removesuffix(EOF))
                        break  # and close it
                    conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for server in servers:
        server.close()


def start(servers: list[RawServer], *answers: bytes) -> Connection:
    server = RawServer(list(answers))
    servers.append(server)
    return Connection("127.0.0.1", server.port, timeout=10)


def test_sends_one_request_head_and_body_and_reads_a_json_answer(serve: list[RawServer]) -> None:
    body = b'{"id": "x"}'
    conn = start(
        serve, b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n" + body
    )
    conn.request("POST", "/api/v1/tasks?wait_s=1", b'{"name":"n"}', {"Accept": "application/json"})
    answer = conn.getresponse()
    assert (answer.status, answer.reason, answer.read(), answer.will_close) == (201, "Created", body, False)
    assert answer.getheader("content-type") == answer.getheader("Content-Type") == "application/json"
    assert answer.getheader("x-missing", "none") == "none"
    [sent] = serve[0].requests
    assert (
        sent
        == (
            f"POST /api/v1/tasks?wait_s=1 HTTP/1.1\r\nHost: 127.0.0.1:{serve[0].port}\r\n"
            "Accept-Encoding: identity\r\nAccept: application/json\r\nContent-Length: 12\r\n\r\n"
            '{"name":"n"}'
        ).encode()
    )
    conn.close()


def test_keeps_the_connection_for_the_next_request(serve: list[RawServer]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    conn = start(serve, ok, ok)
    for _ in range(2):
        conn.request("GET", "/a", None, {})
        assert conn.getresponse().read() == b"ok"
    assert len(serve[0].requests) == 2  # both on the one connection the server accepted
    assert b"Content-Length" not in serve[0].requests[0]  # a GET without a body says nothing of one
    conn.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "body", "will_close"),
    [
        (CHUNKED, b"abcde", False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz", b"z", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nz", b"z", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nz", b"z", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", False),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", b"z", False),
    ],
)
def test_bodies_and_connection_ends(
    serve: list[RawServer], answer: bytes, body: bytes, will_close: bool
) -> None:
    conn = start(serve, answer)
    conn.request("GET", "/", None, {})
    response = conn.getresponse()
    assert (response.read(), response.will_close) == (body, will_close)
    assert response.status == (204 if b" 204 " in answer else 200)
    conn.close()


def test_a_body_until_the_end_of_the_connection(serve: list[RawServer]) -> None:
    conn = start(serve, b"HTTP/1.1 200 OK\r\n\r\nall of it" + EOF)
    conn.request("GET", "/", None, {})
    response = conn.getresponse()
    assert (response.read(), response.will_close) == (b"all of it", True)
    conn.close()


def test_repeated_and_folded_headers(serve: list[RawServer]) -> None:
    conn = start(
        serve, b"HTTP/1.1 200 OK\r\nVary: a\r\nVARY: b\r\nX-Long: one\r\n two\r\nContent-Length: 0\r\n\r\n"
    )
    conn.request("GET", "/", None, {})
    response = conn.getresponse()
    assert (response.getheader("vary"), response.getheader("x-long")) == ("a, b", "one two")
    conn.close()


def test_a_kept_connection_the_server_closed_is_remote_disconnected(serve: list[RawServer]) -> None:
    conn = start(serve, b"CLOSE")
    conn.request("POST", "/", b"{}", {})
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    conn.close()


def test_what_is_not_http_is_refused(serve: list[RawServer]) -> None:
    conn = start(serve, b"SSH-2.0-OpenSSH\r\n\r\n")
    conn.request("GET", "/", None, {})
    with pytest.raises(http.client.BadStatusLine):
        conn.getresponse()
    conn.close()


def test_a_short_body_is_an_incomplete_read(serve: list[RawServer]) -> None:
    conn = start(serve, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" + EOF)
    conn.request("GET", "/", None, {})
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse()
    conn.close()


def test_nothing_that_would_split_the_request_is_sent() -> None:
    conn = Connection("127.0.0.1", 9, timeout=1)  # never connects: refused before anything is sent
    with pytest.raises(http.client.InvalidURL):
        conn.request("GET", "/a b", None, {})
    with pytest.raises(http.client.InvalidURL):
        conn.request("GET", "/a\r\nX: y", None, {})
    with pytest.raises(ValueError, match="header value"):
        header_block({"Authorization": "Bearer x\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="header name"):
        header_block({"Bad Name": "v"})
    assert conn.sock is None
