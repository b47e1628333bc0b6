"""client.events(): typed events, resumed after a dropped connection with Last-Event-ID, and Gap.

The resume is shown against the real scheduler (stopped and started again on its port while
the iterator runs). The `gap` answer (issue 10's agreed format: the server's side is built
separately) is played by a scripted SSE server over real HTTP, so the SDK's side is pinned
whatever the server does today.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from shoal.sdk.events import SseParser, to_event


def _task_frame(event_id: str, task_id: str, state: str) -> bytes:
    data = orjson.dumps({"id": event_id, "kind": "task", "ts": 1.0, "changes": [[task_id, state]]})
    return b"id: " + event_id.encode() + b"\nevent: task\ndata: " + data + b"\n\n"


GAP = b'event: gap\ndata: {"last_event_id": "2-0", "oldest_retained_id": "5-0"}\n\n'


class ScriptedSse:
    """Serves one scripted answer per connection (then drops it), and records what was asked."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.asked: list[dict[str, str]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                script.asked.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                body = script.answers[min(len(script.asked), len(script.answers)) - 1]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"retry: 10\n\n" + body)  # then the connection closes: a drop

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedSse:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


SCRIPT = [
    _task_frame("1-0", "a", "queued") + _task_frame("2-0", "a", "running"),
    GAP + _task_frame("5-0", "b", "queued"),
    _task_frame("6-0", "b", "succeeded"),
]
EXPECTED = [
    shoal.TaskEvent("1-0", 1.0, [("a", "queued")]),
    shoal.TaskEvent("2-0", 1.0, [("a", "running")]),
    shoal.Gap(last_event_id="2-0", oldest_retained_id="5-0"),
    shoal.TaskEvent("5-0", 1.0, [("b", "queued")]),
    shoal.TaskEvent("6-0", 1.0, [("b", "succeeded")]),
]


def test_the_sync_iterator_resumes_after_each_drop_and_yields_the_gap() -> None:
    with ScriptedSse(SCRIPT) as sse, shoal.Client(sse.url, token="") as client:
        events = client.events()
        got = [next(events) for _ in range(len(EXPECTED))]
        events.close()
    assert got == EXPECTED
    assert sse.asked[0].get("last-event-id") is None
    assert [asked.get("last-event-id") for asked in sse.asked[1:3]] == ["2-0", "5-0"]
    assert "since=" in sse.asked[0]["path"] or sse.asked[0]["path"] == "/api/v1/events"


async def test_the_async_iterator_does_the_same() -> None:
    with ScriptedSse(SCRIPT) as sse:
        async with shoal.AsyncClient(sse.url, token="") as client:
            events = client.events()
            got = [await anext(events) for _ in range(len(EXPECTED))]
            await events.aclose()
    assert got == EXPECTED
    assert [asked.get("last-event-id") for asked in sse.asked[1:3]] == ["2-0", "5-0"]


def test_a_resume_is_where_the_caller_says() -> None:
    with ScriptedSse(SCRIPT[2:]) as sse, shoal.Client(sse.url, token="") as client:
        events = client.events(last_event_id="5-0")
        assert next(events) == EXPECTED[-1]
        events.close()
        assert sse.asked[0]["last-event-id"] == "5-0"


def _consume(events: Iterator[shoal.Event], into: queue.Queue[Any]) -> threading.Thread:
    def run() -> None:
        try:
            for event in events:
                into.put(event)
        except shoal.ShoalError as error:
            into.put(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _task_events(
    into: queue.Queue[Any], wanted: Callable[[list[shoal.TaskEvent]], bool]
) -> list[shoal.TaskEvent]:
    seen: list[shoal.TaskEvent] = []
    deadline = time.monotonic() + 20
    while not wanted(seen):
        event = into.get(timeout=max(0.01, deadline - time.monotonic()))
        assert not isinstance(event, Exception), event
        if isinstance(event, shoal.TaskEvent):
            seen.append(event)
    return seen


def test_a_scheduler_restart_loses_and_repeats_nothing(
    api_factory: Callable[..., ApiServer], namespace: str
) -> None:
    first = api_factory()
    events: queue.Queue[Any] = queue.Queue()
    watcher = shoal.Client(first.url, token="")
    _consume(watcher.events(since=time.time() - 1, read_timeout_s=5), events)
    with first.client() as client:
        before = client.submit("echo")
    _task_events(events, lambda seen: any(before.id in dict(e.changes) for e in seen))
    first.stop()  # the stream drops; the iterator reconnects to the port until it answers again
    with api_factory(port=first.port).client() as client:
        after = [client.submit("echo") for _ in range(3)]
    seen = _task_events(events, lambda seen: {h.id for h in after} <= {i for e in seen for i, _ in e.changes})
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert before.id not in {i for e in seen for i, _ in e.changes}  # not replayed after the resume
    watcher.close()


def test_the_client_gives_up_reconnecting_after_give_up_s() -> None:
    with ScriptedSse([b""]) as sse:
        url = sse.url
    started = time.monotonic()
    with shoal.Client(url, token="", retries=0) as client, pytest.raises(shoal.Unavailable):
        next(client.events(give_up_s=0.5))
    assert time.monotonic() - started < 10  # reconnections paced by the server's retry (2 s default)


def test_every_kind_of_event_is_typed() -> None:
    def parsed(kind: str, data: dict[str, Any]) -> shoal.Event:
        parser = SseParser()
        frame = f"id: 7-0\nevent: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n"
        for line in frame.splitlines(keepends=True):
            assert parser.feed(line) is None
        message = parser.feed(b"\n")
        assert message is not None
        return to_event(message)

    assert parsed(
        "worker", {"kind": "worker", "ts": 2.0, "worker_id": "w", "event": "lost"}
    ) == shoal.WorkerEvent("7-0", 2.0, "w", "lost")
    scaling = parsed("scaling", {"kind": "scaling", "ts": 3.0, "current": 1, "desired": 4, "reason": "busy"})
    assert isinstance(scaling, shoal.ScalingEvent) and (scaling.current, scaling.desired) == (1, 4)
    assert parsed("novel", {"kind": "novel", "x": 1}) == shoal.OtherEvent(
        "7-0", "novel", {"kind": "novel", "x": 1}
    )
