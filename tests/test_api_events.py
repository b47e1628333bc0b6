"""GET /api/v1/events: strict parsing of resume ids and times, the `gap` event when what a client
asks for was trimmed, and the shared reader (`EventFeed`) catching a slow follower up from Redis
and reporting a stream that went back in time (a failover)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, work_once
from conftest import connector
from shoal.core.admission import new_task_ids
from shoal.core.models import TaskSpec
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.scheduler import event_feed
from shoal.scheduler.api.routes.events import parse_since, parse_stream_id
from shoal.scheduler.event_feed import EventFeed, parse_id
from shoal.scheduler.waiters import Waiters
from test_api_system import _connections, kill_client

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "text",
    [
        "1-0\n",
        "\u0661-\u0660",
        "\uff11-0",
        "1-",
        "-1",
        "1",
        "1-2-3",
        "18446744073709551616-0",
        " 1-0",
        "1-0 ",
    ],
)
def test_stream_ids_are_ascii_in_range_and_nothing_trailing(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stream_id(text)


def test_good_stream_ids_parse() -> None:
    assert parse_stream_id("1764230000123-0") == "1764230000123-0"
    assert parse_stream_id("18446744073709551615-18446744073709551615").startswith("18446744073709551615-")


@pytest.mark.parametrize(
    "text",
    [
        "inf",
        "-inf",
        "nan",
        "1e400",
        "1e3",
        "-1",
        "1.",
        ".5",
        "\u0661\u0662",
        "5\n",
        "1.1234567891",
        "99999999999999",
    ],
)
def test_since_is_plain_ascii_decimal_seconds(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text)


def test_good_since_values_parse() -> None:
    assert parse_since("0") == 0.0
    assert parse_since("1764230000.123456") == 1764230000.123456


@pytest.mark.parametrize(
    ("params", "headers", "code"),
    [
        ({"since": "inf"}, {}, 422),
        ({"since": "nan"}, {}, 422),
        ({"since": "1e400"}, {}, 422),
        ({"since": "\u0661\u0662\u0663"}, {}, 422),
        ({"since": "5\n"}, {}, 422),
        ({"last_event_id": "1-0\n"}, {}, 400),
        ({"after": "\u0661-\u0660"}, {}, 400),
        ({}, {"Last-Event-ID": "18446744073709551616-0"}, 400),
        ({}, {"Last-Event-ID": "yesterday"}, 400),
    ],
)
def test_bad_resume_ids_and_times_are_a_4xx_with_a_message(
    api: ApiServer, params: dict[str, str], headers: dict[str, str], code: int
) -> None:
    response = httpx.get(f"{api.url}/api/v1/events", params=params, headers=headers, timeout=5)
    assert response.status_code == code
    assert response.json()["detail"]


# --------------------------------------------------------------------- the gap event


def _messages(lines: Any, count: int) -> list[dict[str, Any]]:
    """The next `count` SSE messages (comments and retry skipped) as {event, id, data}."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "data" in current:
                out.append(current)
                if len(out) == count:
                    return out
            current = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            field, _, value = line.partition(": ")
            current[field] = orjson.loads(value) if field == "data" else value
    raise AssertionError(f"the stream ended after {len(out)} messages")


async def _fill(store: Store, n: int) -> list[str]:
    """Publish `n` events through the real publish script; returns their ids (oldest first)."""
    for i in range(n):
        await store.publish_event({"kind": "worker", "worker_id": f"w{i}", "event": "registered"})
    rows = await store.events_after("0-0", n + 10)
    return [event_id for event_id, _ in rows]


async def test_resuming_from_a_trimmed_id_starts_with_a_gap_then_replays_from_the_oldest(
    api: ApiServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scheduler's own buffer would still hold what Redis trimmed (and then nothing is
    # missed): keep it smaller than the stream's cap, as when a client resumes from long ago.
    monkeypatch.setattr(event_feed, "BUFFER_ENTRIES", 100)
    await store.publish_event({"kind": "worker", "worker_id": "first", "event": "registered"})
    [(first_id, _)] = await store.events_after("0-0", 1)
    await _fill(store, 2600)  # past the stream's cap (2,000, trimmed approximately)
    bounds = await store.event_stream_bounds()
    assert bounds.first is not None and parse_id(bounds.first) > parse_id(first_id), "nothing was trimmed"
    with httpx.stream(
        "GET", f"{api.url}/api/v1/events", headers={"Last-Event-ID": first_id}, timeout=10
    ) as response:
        gap, oldest = _messages(response.iter_lines(), 2)
    assert gap == {"event": "gap", "data": {"last_event_id": first_id, "oldest_retained_id": bounds.first}}
    assert oldest["id"] == bounds.first and oldest["data"]["id"] == bounds.first


async def test_no_gap_when_nothing_after_the_id_was_trimmed(api: ApiServer, store: Store) -> None:
    ids = await _fill(store, 3)
    bounds = await store.event_stream_bounds()
    if bounds.trimmed is None:
        pytest.skip("this server cannot say whether its stream was trimmed (Redis 6.2): it reports a gap")
    # An id older than the first entry, from before this stream existed: nothing was lost.
    with httpx.stream(
        "GET", f"{api.url}/api/v1/events", params={"last_event_id": "1-0"}, timeout=10
    ) as response:
        messages = _messages(response.iter_lines(), 3)
    assert [m["id"] for m in messages] == ids
    with httpx.stream(
        "GET", f"{api.url}/api/v1/events", params={"last_event_id": ids[0]}, timeout=10
    ) as response:
        assert [m["id"] for m in _messages(response.iter_lines(), 2)] == ids[1:]


# --------------------------------------------------------------------- the shared reader


@contextlib.asynccontextmanager
async def running_feed(store: Store) -> AsyncIterator[EventFeed]:
    reader = connector(namespace=store.keys.namespace).client("events")
    feed = EventFeed(store, reader, park_after_s=None)  # reads with no follower (the tests look)
    await feed.start()
    try:
        yield feed
    finally:
        await feed.stop()
        await reader.aclose()


async def _take(chunks: AsyncIterator[bytes], count: int) -> list[dict[str, Any]]:
    """Parse SSE messages out of `follow`'s chunks until `count` arrived."""
    text = ""
    out: list[dict[str, Any]] = []
    async for chunk in chunks:
        text += chunk.decode()
        *complete, text = text.split("\n\n")
        for block in complete:
            fields = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
            if "data" in fields:
                out.append({**fields, "data": orjson.loads(fields["data"])})
        if len(out) >= count:
            return out
    raise AssertionError("the follower ended")


async def test_a_follower_behind_the_buffer_catches_up_from_redis_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_feed, "BUFFER_ENTRIES", 10)
    async with running_feed(store) as feed:
        start = feed.last_id
        ids = await _fill(store, 60)
        while feed.last_id < parse_id(ids[-1]):
            await feed.wait(1)
        assert feed.base_id > start, "the buffer kept everything: the catch-up path was not exercised"
        follower = feed.follow(f"{start[0]}-{start[1]}", None, lambda: True, keepalive_s=5)
        got = await asyncio.wait_for(_take(follower, 60), 10)
        await follower.aclose()
    assert [m["id"] for m in got] == ids, "every event once, in stream order"


async def test_a_stream_that_went_back_in_time_is_reported_as_a_gap(store: Store) -> None:
    """As after a failover to a replica that missed the last entries: the reader reconnects,
    finds the stream's newest id older than the last it read, and followers get a gap."""
    stream = store.keys.events_stream
    async with running_feed(store) as feed:
        follower = feed.follow(None, None, lambda: True, keepalive_s=5)
        first = asyncio.ensure_future(_take(follower, 1))
        await asyncio.sleep(0.2)
        await store.redis.xadd(
            stream, {"e": orjson.dumps({"kind": "worker", "event": "x"}).decode()}, id="99999999999999-0"
        )
        [future_event] = await asyncio.wait_for(first, 5)
        assert future_event["id"] == "99999999999999-0"
        await store.redis.delete(stream)  # the "new primary" never had it
        await store.publish_event({"kind": "worker", "worker_id": "after", "event": "registered"})
        [reader] = _connections(store, "events")
        kill_client(int(reader["id"]))
        gap, replayed = await asyncio.wait_for(_take(follower, 2), 10)
        await follower.aclose()
    assert gap["event"] == "gap" and gap["data"]["last_event_id"] == "99999999999999-0"
    assert replayed["data"]["worker_id"] == "after"
    assert feed.rewinds == 1


# --------------------------------------------------------------------- a reader nobody listens to


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Return once `condition()` holds; a hang guard of 30 s, not a timing bound."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def parking_feed(store: Store) -> AsyncIterator[EventFeed]:
    """A feed that stops reading as soon as nobody listens, parked before it is handed over."""
    reader = connector(namespace=store.keys.namespace).client("events")
    feed = EventFeed(store, reader, park_after_s=0.0)
    await feed.start()
    try:
        await _until(lambda: feed.parked, "an idle reader parks after its first read")
        yield feed
    finally:
        await feed.stop()
        await reader.aclose()


async def test_a_reader_nobody_listens_to_reads_nothing_until_a_listener_comes(store: Store) -> None:
    async with parking_feed(store) as feed:
        before = feed.last_id
        [skipped] = (await _fill(store, 1))[-1:]
        await asyncio.sleep(0.2)  # time it could have read in, were it reading
        assert feed.parked and feed.last_id == before, "a parked reader read the stream"
        async with feed.listening():
            # On entry the reader stands at the newest entry: what came before is not read.
            assert feed.last_id == parse_id(skipped)
            assert not feed.parked
            await store.publish_event({"kind": "worker", "worker_id": "after", "event": "registered"})
            async with asyncio.timeout(30):  # hang guard
                while feed.last_id == parse_id(skipped):
                    await feed.wait(1)
            read = [entry.frame for entry in feed.after(parse_id(skipped))]
            # The buffer does not claim what it skipped: a follower from `before` reads it from Redis.
            assert not feed.covers(before, feed.epoch)
    assert len(read) == 1 and b'"worker_id":"after"' in read[0], "only what came after the listener"


async def test_a_follower_after_a_park_gets_every_event_from_its_id_in_order(store: Store) -> None:
    async with parking_feed(store) as feed:
        before = feed.last_id
        ids = await _fill(store, 5)  # published while parked: the buffer never holds them
        follower = feed.follow(f"{before[0]}-{before[1]}", None, lambda: True, keepalive_s=5)
        got = asyncio.ensure_future(_take(follower, 7))
        await _until(lambda: not feed.parked, "the follower wakes the reader")
        await _fill(store, 2)
        messages = await asyncio.wait_for(got, 30)
        await follower.aclose()
        rows = await store.events_after(ids[0], 20)
    assert [m["id"] for m in messages] == [ids[0]] + [event_id for event_id, _ in rows]


async def test_a_waiter_wakes_a_parked_reader_and_gets_its_task_on_the_completion_event(store: Store) -> None:
    spec = TaskSpec(name="noop", id=new_task_ids(1)[0])
    await store.submit([spec])
    async with parking_feed(store) as feed:
        waiters = Waiters(store, feed)
        waiting = asyncio.ensure_future(waiters.wait(spec.id or "", 120))
        await _until(lambda: bool(waiters.waiting), "the waiter registers")
        assert not feed.parked, "a waiter keeps the reader reading"
        assert (await work_once(store, 1)).ids == [spec.id]
        # Were the completion event not read, the wait would only end after its 120 s.
        task = await asyncio.wait_for(waiting, 60)
    assert task is not None and task.state is TaskState.SUCCEEDED
