"""A record of every transition Shoal commits, read from the namespace's events stream.

Every transition script appends its events (one per 100 changes) to the capped stream
`{ns}:events` in the same atomic call that makes the change, so counting the
`(task id, state)` pairs in the stream counts committed transitions: a result recorded
twice shows up as two `succeeded`.

Unlike a pub/sub subscription, a stream reader that loses its connection (Redis was
restarted) resumes after the last entry it saw and misses nothing. The stream is capped
(about 2,000 entries); `gap` turns True if entries were trimmed before this reader got
them, so a test can tell "not recorded" from "not seen".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import redis

from shoal.core import jsonutil
from shoal.core.keys import Keys
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings

_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "upstream_failed"})


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Ledger:
    def __init__(self, redis_url: str, keys: Keys) -> None:
        settings = RedisSettings(redis_url=redis_url, redis_socket_timeout_s=2)
        self._client = RedisConnector(settings).sync_client("ledger", decode_responses=True)
        self._stream = keys.events_stream
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.first_terminal_at: dict[str, float] = {}  # task id -> event time of its first terminal state
        self.started_at: list[tuple[float, str]] = []  # (event time, task id) of every move to running
        self.worker_events: list[dict[str, Any]] = []
        self.last_id = "0-0"
        self.gap = False
        self.reconnects = 0
        self.rewinds = 0  # times the stream went back (a failover lost entries we had read)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-ledger", daemon=True)
        self._thread.start()

    def terminal_count(self, task_id: str) -> int:
        with self._lock:
            return sum(self.transitions[(task_id, state)] for state in _TERMINAL)

    def workers_with(self, event: str) -> set[str]:
        """Ids of workers that had `event` (registered, lost, stopped, draining)."""
        with self._lock:
            return {e["worker_id"] for e in self.worker_events if e.get("event") == event}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows: Any = self._client.xread({self._stream: self.last_id}, count=1000, block=100)
                if rows:
                    self._take(rows[0][1])
                self._check_gap()
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
                # ResponseError: a failing-over cluster answers CLUSTERDOWN / MOVED meanwhile.
                self.reconnects += 1
                time.sleep(0.02)
                self._after_reconnect()

    def _after_reconnect(self) -> None:
        """After a failover the new primary's stream may end before the last entry we read
        (replication lost it): read on from its end, or new entries would be skipped."""
        try:
            newest: Any = self._client.xrevrange(self._stream, count=1)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
            return
        end = _id_tuple(newest[0][0]) if newest else (0, 0)
        if end < _id_tuple(self.last_id):
            self.rewinds += 1
            self.last_id = f"{end[0]}-{end[1]}"

    def _check_gap(self) -> None:
        if self.last_id == "0-0":
            return
        first: Any = self._client.xrange(self._stream, count=1)
        if first and _id_tuple(first[0][0]) > _id_tuple(self.last_id):
            # Trimmed past us without our reading them (never expected at chaos-test rates).
            self.gap = True

    def _take(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        with self._lock:
            for entry_id, fields in entries:
                event = jsonutil.loads(fields["e"])
                kind = event.get("kind")
                if kind == "task":
                    ts = float(event["ts"])
                    for task_id, state in event["changes"]:
                        self.transitions[(task_id, state)] += 1
                        if state in _TERMINAL:
                            self.first_terminal_at.setdefault(task_id, ts)
                        elif state == "running":
                            self.started_at.append((ts, task_id))
                elif kind == "worker":
                    self.worker_events.append(event)
                self.last_id = entry_id

    def catch_up(self, timeout_s: float = 10.0) -> None:
        """Return once everything in the stream now has been read."""
        newest: Any = self._client.xrevrange(self._stream, count=1)
        if not newest:
            return
        target = _id_tuple(newest[0][0])
        deadline = time.monotonic() + timeout_s
        while _id_tuple(self.last_id) < target:
            if time.monotonic() > deadline:
                raise AssertionError("the ledger did not catch up with the events stream")
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()
