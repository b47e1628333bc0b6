"""Typed events of the scheduler's Server-Sent Events stream, and resuming it after a drop.

`Client.events()` yields `TaskEvent`, `ProgressEvent`, `WorkerEvent`, `ScalingEvent`, `Gap` and, for kinds
this version does not know, `OtherEvent`. Every event but `Gap` carries its stream `id`;
after a dropped connection the client reconnects with `Last-Event-ID` set to the last id
it yielded, so nothing is missed or repeated while the server still holds the events. When
it no longer does, the server says so first and the iterator yields a `Gap` naming what
was lost (`last_event_id`, the id resumed from, and `oldest_retained_id`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

EVENTS_PATH = "/api/v1/events"
DEFAULT_RETRY_S = 2.0


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """Tasks moved to new states, in one atomic step: `changes` is `[(task_id, state), ...]`."""

    id: str
    ts: float
    changes: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A running attempt reported progress (`shoal.progress`): a fraction 0..1 and a message."""

    id: str
    ts: float
    task_id: str
    attempt: int
    fraction: float
    message: str | None


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A worker `registered`, was `lost`, `stopped` or started `draining`."""

    id: str
    ts: float
    worker_id: str
    event: str


@dataclass(frozen=True, slots=True)
class ScalingEvent:
    """The autoscaler decided on a replica count; `data` holds the whole decision."""

    id: str
    ts: float
    current: int | None
    desired: int | None
    reason: str
    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Gap:
    """Events were lost: the stream no longer holds those after `last_event_id`.

    What follows starts at `oldest_retained_id`. Anything that depends on every event
    (a mirror, a counter) should read the current state again.
    """

    last_event_id: str
    oldest_retained_id: str


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event of a kind this version of the SDK does not know."""

    id: str | None
    kind: str
    data: Any


Event = TaskEvent | ProgressEvent | WorkerEvent | ScalingEvent | Gap | OtherEvent


@dataclass(slots=True)
class SseMessage:
    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


class SseParser:
    """The text/event-stream format, one line at a time (comments and unknown fields ignored)."""

    def __init__(self) -> None:
        self._message = SseMessage()
        self.retry_s: float | None = None

    def feed(self, raw: bytes) -> SseMessage | None:
        """The message this line completes, if any."""
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            message, self._message = self._message, SseMessage()
            return message if message.data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._message.data.append(value)
        elif name == "event":
            self._message.event = value
        elif name == "id" and "\x00" not in value:
            self._message.id = value
        elif name == "retry" and value.isdigit():
            self.retry_s = int(value) / 1000
        return None


def to_event(message: SseMessage) -> Event:
    """The typed event of an SSE message."""
    data = orjson.loads("\n".join(message.data))
    if message.event == "gap" and isinstance(data, dict):
        return Gap(str(data.get("last_event_id", "")), str(data.get("oldest_retained_id", "")))
    event_id = message.id if message.id is not None else (data.get("id") if isinstance(data, dict) else None)
    if not isinstance(data, dict) or event_id is None:
        return OtherEvent(event_id, message.event, data)
    kind = data.get("kind", message.event)
    ts = float(data.get("ts", 0.0))
    if kind == "task":
        return TaskEvent(event_id, ts, [(str(c[0]), str(c[1])) for c in data.get("changes") or ()])
    if kind == "progress":
        text = data.get("message")
        return ProgressEvent(
            event_id,
            ts,
            str(data.get("id", "")),
            int(data.get("attempt") or 0),
            float(data.get("fraction") or 0.0),
            None if text is None else str(text),
        )
    if kind == "worker":
        return WorkerEvent(event_id, ts, str(data.get("worker_id", "")), str(data.get("event", "")))
    if kind == "scaling":
        return ScalingEvent(
            event_id, ts, data.get("current"), data.get("desired"), str(data.get("reason", "")), data
        )
    return OtherEvent(event_id, str(kind), data)


class Resume:
    """Where a (re)connection of the event stream starts: the query and headers to send."""

    def __init__(self, since: float | None, last_event_id: str | None) -> None:
        self.since = since
        self.last_event_id = last_event_id
        self.retry_s = DEFAULT_RETRY_S
        self.failing_since: float | None = None

    def opening(self) -> tuple[dict[str, Any] | None, dict[str, str]]:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
            return None, headers
        if self.since is None:
            # Live from now; a reconnection before the first event resumes from this moment.
            self.since = time.time()
            return None, headers
        return {"since": self.since}, headers

    def connected(self) -> None:
        self.failing_since = None

    def accept(self, message: SseMessage, parser: SseParser) -> Event:
        if parser.retry_s is not None:
            self.retry_s = parser.retry_s
        event = to_event(message)
        if not isinstance(event, Gap) and event.id:
            self.last_event_id = event.id
        return event

    def pause_s(self, give_up_s: float, error: BaseException | None) -> float:
        """Seconds to wait before reconnecting; re-raises `error` once failing for `give_up_s`."""
        if error is not None:
            now = time.monotonic()
            self.failing_since = self.failing_since or now
            if now - self.failing_since > give_up_s:
                raise error
        return self.retry_s * random.uniform(0.5, 1.0)
