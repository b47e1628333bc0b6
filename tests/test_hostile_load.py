"""Hostile load against a real scheduler process and a private Redis, each case asserting its bound.

The scheduler is `python -m shoal.scheduler` on a private redis-server started here (so its
SLOWLOG records every call, and sees nothing but this test). Cases, from issue 13:

- the heaviest request admission accepts (the most tasks and dependency edges) holds Redis
  for one script call whose cost is bounded: compared with a small reference request measured
  in the same run, so the figure does not depend on how fast or loaded the machine is, and
  each printed in milliseconds (docs/reliability.md quotes them);
- requests past the bounds (edges, external ids, nesting, integers) are refused with a 422
  before any script runs, and leave Redis exactly as it was;
- a request naming thousands of unknown ids grows the scheduler's memory by a few MB at most,
  and the scheduler keeps answering its probes meanwhile;
- every answer agrees with what was committed: a 201 lists tasks that exist, a 422 wrote nothing;
- hundreds of concurrent waits and event streams (`bench.event_load`, sized down) are all
  answered while the leader lock is watched from outside the scheduler: one holder throughout,
  never expired.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
import pytest
import redis as redis_sync

from bench import event_load
from layout import read_records
from lock_sampler import sampling_lock
from process_stack import ProcessStack
from shoal.core.jsonutil import MAX_NESTING
from shoal.core.keys import Keys
from shoal.core.scripts import load_source
from shoal.core.settings import ApiSettings
from shoal.redis_local import find_redis_server, free_port
from shoal.scheduler.waiters import MAX_WAIT_S

API = ApiSettings()
MAX_BATCH, MAX_EDGES = API.max_batch, API.max_dependency_edges
JSON = {"Content-Type": "application/json"}
REFERENCE_TASKS = 1000
# The worst accepted request may cost at most this many reference requests (1,000 plain tasks).
# Measured here (docs/reliability.md): 1,000 tasks + 2,000 edges cost 1.7-2.1 references at a
# load of 8 on 2 cores; the requests issue 13 saw (500K and 1.8M edges) cost hundreds.
MAX_COST_IN_REFERENCES = 4
# A refused request may allocate a few MB (5,000 ids, parsed and validated) and must not keep
# them: issue 13 saw +561 MB for one request whose ids were checked in a single pipeline.
RSS_GROWTH_BOUND = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_sync.Redis]:
    server = find_redis_server()
    if server is None:
        pytest.skip("no redis-server binary on this machine")
    port = free_port()
    directory = tmp_path_factory.mktemp("hostile-redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis_sync.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis_sync.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


# Clients of the load case: a few hundred, each in client processes of their own (as many real
# clients are; one process holding them all delays its own requests past the header deadline).
LOAD_WAITS, LOAD_STREAMS, LOAD_PROCESSES = 300, 200, 2
# The lock as shipped (SHOAL_LEADER_LOCK_S' default): it lives 5 s and is renewed every 1.67 s,
# so a renewal may be 3.3 s late before it expires. Wide on purpose: the election process needs
# about a millisecond of CPU per renewal, and a loaded machine delays a process that wakes for
# so little by tens of milliseconds, not seconds; what made renewals seconds late was the
# scheduler's own stalls (1.8-6.25 s behind garbage collections, docs/reliability.md), which no
# longer reach it. `tests/test_leader_process.py` holds the tight case (a 6 s stall, lock 3 s).
LOAD_LOCK_S = 5.0


@pytest.fixture(scope="module")
def scheduler(
    private_redis: redis_sync.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessStack]:
    port = private_redis.connection_pool.connection_kwargs["port"]
    namespace, logs = f"hostile-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("hostile-logs")
    stack = ProcessStack(f"redis://127.0.0.1:{port}/0", namespace, logs, SHOAL_VALIDATE_TASK_NAMES="false")
    stack.start_scheduler()
    try:
        yield stack
    finally:
        stack.stop_all()


SUBMIT_SHA = hashlib.sha1(load_source("submit").encode()).hexdigest().encode()  # what EVALSHA names


def is_submit(command: bytes) -> bool:
    """A call of the submit script: by EVALSHA, or FCALL of the library's `<library>_submit`
    (the scripts run as Redis Functions where the server has them)."""
    verb, _, rest = command.partition(b" ")
    name = rest.split(b" ", 1)[0]
    return (verb == b"EVALSHA" and name == SUBMIT_SHA) or (
        verb == b"FCALL" and name.startswith(b"shoal_") and name.endswith(b"_submit")
    )


def submit_script_ms(redis: redis_sync.Redis) -> list[float]:
    """Durations of the submit script calls since the log was last reset, in ms (the leader's
    loops run their own scripts meanwhile; SLOWLOG shows the start of each call's arguments)."""
    calls = [e for e in redis.slowlog_get(100000) if is_submit(e["command"])]
    redis.slowlog_reset()
    return [e["duration"] / 1000 for e in calls]


def post_batch(stack: ProcessStack, tasks: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/api/v1/tasks/batch", content=orjson.dumps({"tasks": tasks}), headers=JSON, timeout=60
    )


def heaviest_batch(tag: str) -> list[dict[str, Any]]:
    """MAX_BATCH tasks and exactly MAX_EDGES in-batch dependency edges."""
    tasks: list[dict[str, Any]] = [{"ref": f"{tag}-{i}", "name": "noop"} for i in range(MAX_BATCH)]
    edges, i = MAX_EDGES, 10
    while edges:
        take = min(edges, 10)
        tasks[i]["depends_on"] = [f"{tag}-{j}" for j in range(i - take, i)]
        edges -= take
        i += 1
    return tasks


def submitted(redis: redis_sync.Redis, stack: ProcessStack) -> tuple[int, int, int]:
    """What a submission writes: task records, dependency edges, idempotency keys. (Not the
    key count: the leader's loops write keys of their own meanwhile, 13 -> 15 seen.)"""
    keys = Keys(stack.env["SHOAL_NAMESPACE"])
    return int(redis.hlen(keys.tasks)), int(redis.zcard(keys.edges)), int(redis.hlen(keys.idempotency))


def test_the_heaviest_accepted_request_costs_a_bounded_number_of_small_ones(
    scheduler: ProcessStack, private_redis: redis_sync.Redis
) -> None:
    reference, heaviest = [], []
    assert (
        post_batch(scheduler, [{"name": "noop"}]).status_code == 201
    )  # loads the script (NOSCRIPT, then LOAD)
    for round_ in range(5):
        submit_script_ms(private_redis)
        small = post_batch(scheduler, [{"name": "noop"} for _ in range(REFERENCE_TASKS)])
        assert small.status_code == 201
        reference += submit_script_ms(private_redis)
        big = post_batch(scheduler, heaviest_batch(f"h{round_}"))
        assert big.status_code == 201, big.text
        heaviest += submit_script_ms(private_redis)
        answered = big.json()["tasks"]
        assert len(answered) == MAX_BATCH
        assert sum(len(t["depends_on"]) for t in answered) == MAX_EDGES
        # The answer is what was committed: every answered task is stored, with its edges.
        stored = read_records(
            private_redis, Keys(scheduler.env["SHOAL_NAMESPACE"]), [t["id"] for t in answered]
        )
        stored_deps = {i: found[0]["depends_on"] if found else None for i, found in stored.items()}
        assert stored_deps == {t["id"]: ",".join(t["depends_on"]) for t in answered}
    # The least of five: other processes only ever add time to a measurement.
    ref_ms, worst_ms = min(reference), min(heaviest)
    heavy = f"{MAX_BATCH} tasks + {MAX_EDGES} edges {worst_ms:.2f} ms (max {max(heaviest):.2f} ms)"
    small = f"{REFERENCE_TASKS} plain tasks {ref_ms:.2f} ms"
    print(f"submit script: {small}; {heavy}; ratio {worst_ms / ref_ms:.1f}")
    assert worst_ms <= MAX_COST_IN_REFERENCES * ref_ms


def _deep(levels: int) -> Any:
    return orjson.loads(b"[" * levels + b"]" * levels)


OVER_THE_BOUNDS: dict[str, list[dict[str, Any]]] = {
    "edges over the bound": [
        {"ref": "r", "name": "a"},
        *[{"name": "d", "depends_on": ["r"]}] * (MAX_EDGES + 1),
    ],
    # Issue 13's 3.0 s request: 1,000 tasks, each depending on (up to 1,000) earlier ones.
    "1000 x 1000 in-batch edges": [
        {"ref": f"t{i}", "name": "a", "depends_on": [f"t{j}" for j in range(i)]} for i in range(1000)
    ],
    "unknown external ids": [
        {"name": "d", "depends_on": [f"gone-{i}-{j}" for j in range(1000)]} for i in range(MAX_EDGES // 1000)
    ],
    "args nested past the bound": [{"name": "deep", "args": _deep(MAX_NESTING + 1)}],
}


@pytest.mark.parametrize("case", OVER_THE_BOUNDS)
def test_requests_past_the_bounds_are_refused_before_any_script_runs(
    scheduler: ProcessStack, private_redis: redis_sync.Redis, case: str
) -> None:
    before = submitted(private_redis, scheduler)
    submit_script_ms(private_redis)
    refused = post_batch(scheduler, OVER_THE_BOUNDS[case])
    assert refused.status_code == 422, refused.text
    assert submit_script_ms(private_redis) == []  # no script was run for it
    assert submitted(private_redis, scheduler) == before


def test_an_integer_outside_the_exact_range_is_refused_and_writes_nothing(
    scheduler: ProcessStack, private_redis: redis_sync.Redis
) -> None:
    before = submitted(private_redis, scheduler)
    body = b'{"tasks": [{"name": "n", "args": [18446744073709551616]}]}'
    refused = httpx.post(f"{scheduler.url}/api/v1/tasks/batch", content=body, headers=JSON)
    assert refused.status_code == 422 and "outside the range kept exactly" in refused.text
    assert submitted(private_redis, scheduler) == before


def test_refused_requests_naming_unknown_ids_leave_the_scheduler_as_big_as_it_was(
    scheduler: ProcessStack, private_redis: redis_sync.Redis
) -> None:
    assert scheduler.scheduler is not None
    process = psutil.Process(scheduler.scheduler.pid)
    tasks = [
        {"name": "d", "depends_on": [f"unknown-{i}-{j}" for j in range(1000)]}
        for i in range(MAX_EDGES // 1000)
    ]
    at_start = process.memory_info().rss
    assert post_batch(scheduler, tasks).status_code == 422
    first = process.memory_info().rss - at_start  # what one such request costs, kept or not
    before = process.memory_info().rss
    probe_ms = []
    for _ in range(10):
        assert post_batch(scheduler, tasks).status_code == 422
        started = time.perf_counter()
        assert httpx.get(f"{scheduler.url}/healthz").status_code == 200
        probe_ms.append((time.perf_counter() - started) * 1000)
    growth = process.memory_info().rss - before
    probe = f"/healthz median {statistics.median(probe_ms):.1f} ms"
    kept = f"+{first / 1e6:.1f} MB after the first refused request, +{growth / 1e6:.1f} MB after 10 more"
    print(f"scheduler RSS: {kept}; {probe}")
    assert first <= RSS_GROWTH_BOUND
    assert growth <= RSS_GROWTH_BOUND


def test_hundreds_of_waits_and_streams_are_all_answered_while_the_leader_lock_holds(
    private_redis: redis_sync.Redis, tmp_path: Any
) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    redis_url, namespace = f"redis://127.0.0.1:{port}/0", f"load-{uuid.uuid4().hex[:6]}"
    stack = ProcessStack(
        redis_url, namespace, tmp_path,
        SHOAL_VALIDATE_TASK_NAMES="false",
        SHOAL_REDIS_MAX_CONNECTIONS="16",  # the bench's small pool: waits must queue on it, not fail
        SHOAL_LEADER_LOCK_S=str(LOAD_LOCK_S),
        SHOAL_LOG_LEVEL="WARNING",
    )  # fmt: skip
    stack.start_scheduler()
    try:
        assert stack.scheduler is not None
        deadline = time.monotonic() + 60  # a wait for the election process's start, not a bound
        while not httpx.get(f"{stack.url}/readyz", timeout=10).json()["leader"]:
            assert time.monotonic() < deadline, "the scheduler never led"
            time.sleep(0.1)
        key = Keys(namespace).leader
        with sampling_lock(redis_url, key) as samples:
            figures = asyncio.run(
                event_load.run(
                    redis_url, stack.url, namespace, stack.scheduler.pid, LOAD_WAITS, LOAD_STREAMS,
                    LOAD_PROCESSES, LOAD_PROCESSES, wait_timeout_s=MAX_WAIT_S,
                )
            )  # fmt: skip
        stalls = [
            line for line in httpx.get(f"{stack.url}/metrics", timeout=30).text.splitlines()
            if line.startswith(("shoal_gc_pause_longest_seconds ", "shoal_leader_renewals_late_total{"))
        ]  # fmt: skip
        print(figures, f"lock sampled {samples.taken} times, lowest TTL {samples.lowest_pttl_ms} ms", stalls)
        assert figures["wait answers by status"] == {"200": LOAD_WAITS}
        assert figures["waits answered succeeded"] == LOAD_WAITS
        assert figures["streams that saw every success"] == LOAD_STREAMS
        assert figures["gap events"] == 0
        # Redis's own account of the key (keyspace notifications): renewed, never run out or freed.
        assert figures["leader lock expired events"] == 0
        assert figures["leader lock releases (del events)"] == 0
        assert figures["leader lock renewals seen by Redis (expire events)"] > 0
        assert samples.taken > 0 and samples.missing == 0 and len(samples.holders) == 1
        assert "Traceback" not in stack.logs()
    finally:
        stack.stop_all()


def test_logs_of_the_scheduler_hold_no_traceback(scheduler: ProcessStack) -> None:
    assert "Traceback" not in scheduler.logs()
