"""The mixed workload every chaos test submits, and the client that submits it through faults.

`mixed_workload` builds batches of task requests, each with the terminal state it must
reach: successes (instant, sleeping, CPU-bound, flaky ones that need retries), failures
after retries, tasks that time out, and dependents of earlier tasks of their batch (which
must succeed only after their dependencies did, or end `upstream_failed`).

`Submitter` sends the batches from a thread, each with idempotency keys, retrying a batch
(with the same keys) whenever the scheduler cannot be reached or answers 503, and moving
to the next scheduler URL when it has several. It records when each task was acknowledged.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from shoal import task_request

# Enough retries that no fault injected here can use them all up on a task meant to succeed.
SAFE_RETRIES = 20
SUCCEEDED, FAILED, UPSTREAM_FAILED = "succeeded", "failed", "upstream_failed"
BATCH_PATH = "/api/v1/tasks/batch"
JSON = {"Content-Type": "application/json"}
RETRIABLE = frozenset({502, 503})  # the scheduler or its Redis is down: the same batch is sent again


@dataclass
class Item:
    ref: str
    request: dict[str, Any]
    expect: str
    parents: list[str] = field(default_factory=list)


def _plain(rng: random.Random, ref: str, priority: int) -> tuple[dict[str, Any], str]:
    """One independent task request and the state it must end in."""
    roll = rng.random()
    common: dict[str, Any] = {"ref": ref, "priority": priority, "idempotency_key": ref}
    if roll < 0.30:
        return task_request("noop", max_retries=SAFE_RETRIES, **common), SUCCEEDED
    if roll < 0.48:
        return task_request("echo", [ref], max_retries=SAFE_RETRIES, **common), SUCCEEDED
    if roll < 0.64:
        seconds = round(rng.uniform(0.05, 0.6), 3)  # keeps tasks in flight when a fault strikes
        return task_request(
            "sleep", kwargs={"seconds": seconds}, max_retries=SAFE_RETRIES, **common
        ), SUCCEEDED
    if roll < 0.76:
        return task_request("flaky", kwargs={"p": 0.3}, max_retries=SAFE_RETRIES, **common), SUCCEEDED
    if roll < 0.83:
        return task_request("cpu", kwargs={"n": 20_000}, max_retries=SAFE_RETRIES, **common), SUCCEEDED
    if roll < 0.94:
        return task_request("fail", kwargs={"message": "boom"}, max_retries=1, **common), FAILED
    # Hangs far past its timeout: fails by timeout, never by running to its end.
    return task_request("sleep", kwargs={"seconds": 30}, timeout_s=0.3, max_retries=0, **common), FAILED


def mixed_workload(rng: random.Random, total: int, batch: int, prefix: str = "t") -> list[list[Item]]:
    """`total` tasks in batches of `batch`; a fifth depend on one or two earlier items of their batch."""
    batches: list[list[Item]] = []
    for b in range(-(-total // batch)):
        items: list[Item] = []
        for i in range(min(batch, total - b * batch)):
            ref = f"{prefix}-{b}-{i}"
            priority = rng.randint(-5, 9)
            if items and rng.random() < 0.2:
                parents = rng.sample(items, k=min(len(items), rng.choice((1, 1, 2))))
                request = task_request(
                    "echo",
                    [ref],
                    ref=ref,
                    priority=priority,
                    depends_on=[p.ref for p in parents],
                    max_retries=SAFE_RETRIES,
                    idempotency_key=ref,
                )
                ok = all(p.expect == SUCCEEDED for p in parents)
                items.append(
                    Item(ref, request, SUCCEEDED if ok else UPSTREAM_FAILED, [p.ref for p in parents])
                )
            else:
                request, expect = _plain(rng, ref, priority)
                items.append(Item(ref, request, expect))
        batches.append(items)
    return batches


def extra_items(requests: list[tuple[dict[str, Any], str]]) -> list[Item]:
    """Items from (request, expected state) pairs; each request must carry a ref."""
    return [
        Item(request["ref"], {"idempotency_key": request["ref"], **request}, expect)
        for request, expect in requests
    ]


def long_sleepers(prefix: str, n: int, seconds: float, priority: int = 0) -> list[Item]:
    """`n` tasks that sleep `seconds` and must succeed: something long is running when a fault strikes."""
    return [
        Item(
            f"{prefix}-{i}",
            task_request(
                "sleep",
                kwargs={"seconds": seconds},
                ref=f"{prefix}-{i}",
                priority=priority,
                max_retries=SAFE_RETRIES,
                idempotency_key=f"{prefix}-{i}",
            ),
            SUCCEEDED,
        )
        for i in range(n)
    ]


class Submitter:
    """Submits batches from a thread through faults; see the module docstring."""

    def __init__(self, urls: list[str], batches: list[list[Item]], pace_s: float = 0.1) -> None:
        self.urls = urls
        self.batches = batches
        self.pace_s = pace_s
        self.ids: dict[str, str] = {}
        self.acked_at: dict[str, float] = {}
        self.retries = 0  # requests repeated after a connection error or a 503
        self.interrupted_batches = 0  # batches whose first request did not get an answer
        self.repeats_answered_200 = 0  # a repeated batch had been committed before the fault
        self.spans: list[tuple[float, float]] = []  # (sent, answered) unix times of every request
        self.in_flight = threading.Event()
        self.last_ack = 0.0  # unix time of the latest acknowledged batch
        self.done = False
        self.error: BaseException | None = None
        self._urls = itertools.cycle(urls)
        self._url = next(self._urls)
        self._http = httpx.Client(timeout=30)
        self._thread = threading.Thread(target=self._run, name="chaos-submitter", daemon=True)

    @property
    def items(self) -> list[Item]:
        return [item for items in self.batches for item in items]

    def start(self) -> Submitter:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"submission did not finish in {timeout_s:g}s")
        if self.error is not None:
            raise AssertionError(f"submission failed: {self.error!r}") from self.error

    def met(self, start: float, end: float) -> bool:
        """Whether a request was repeated, or one was on the wire at some time in [start, end]
        (a scheduler that rides out a short Redis outage answers it late instead of with a 503)."""
        return self.retries > 0 or any(sent <= end and answered >= start for sent, answered in self.spans)

    def _run(self) -> None:
        try:
            for items in self.batches:
                self._submit(items)
                time.sleep(self.pace_s)
        except BaseException as exc:  # surfaced by join()
            self.error = exc
        finally:
            self.done = True
            self._http.close()

    def _submit(self, items: list[Item]) -> None:
        body = orjson.dumps({"tasks": [item.request for item in items]})
        first = True
        while True:
            self.in_flight.set()
            sent = time.time()
            try:
                response = self._http.post(self._url + BATCH_PATH, content=body, headers=JSON)
            except httpx.TransportError:
                response = None
            finally:
                self.in_flight.clear()
                self.spans.append((sent, time.time()))
            if response is not None and response.status_code in (200, 201):
                break
            if response is not None and response.status_code not in RETRIABLE:
                raise AssertionError(f"batch refused: {response.status_code} {response.text[:500]}")
            self.retries += 1
            if first:
                self.interrupted_batches += 1
            first = False
            self._url = next(self._urls)
            time.sleep(0.05)
        if not first and response.status_code == 200:
            self.repeats_answered_200 += 1
        now = time.time()
        for item, task in zip(items, response.json()["tasks"], strict=True):
            self.ids[item.ref] = task["id"]
            self.acked_at[item.ref] = now
        self.last_ack = now
