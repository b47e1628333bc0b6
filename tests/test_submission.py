"""Admission: validation bounds of the schemas, refs, cycles, unknown ids/names, one store call."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from shoal.core.admission import Submitter, TaskNameCache, drive, perform
from shoal.core.errors import InvalidSubmission
from shoal.core.models import WorkerInfo
from shoal.core.settings import ApiSettings, Settings
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.scheduler.schemas import (
    BatchCreate,
    TaskCreate,
    TaskPublic,
    ValidationLimits,
    task_public,
)


def batch(*items: dict[str, Any], limits: ValidationLimits | None = None) -> BatchCreate:
    return BatchCreate.model_validate({"tasks": list(items)}, context=limits or ValidationLimits())


def errors_of(body: Any, model: type = TaskCreate, limits: ValidationLimits | None = None) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body, context=limits or ValidationLimits())
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in caught.value.errors()]


def submitter(store: Store, validate_names: bool = False, **api: Any) -> Submitter:
    settings = Settings()
    settings.api = ApiSettings(validate_task_names=validate_names, **api)
    return Submitter(store, settings)


# ---------------------------------------------------------------- schema bounds


def test_task_defaults_and_dependency_dedup() -> None:
    item = TaskCreate.model_validate({"name": "echo", "depends_on": ["a", "b", "a"]})
    assert item.queue == "default" and item.priority == 0 and item.args == [] and item.kwargs == {}
    assert item.depends_on == ["a", "b"]
    spec = item.to_spec("id1", default_max_retries=3, default_timeout_s=300.0)
    assert (spec.id, spec.max_retries, spec.timeout_s) == ("id1", 3, 300.0)


@pytest.mark.parametrize(
    ("body", "culprit"),
    [
        ({}, "name: Field required"),
        ({"name": "has space"}, "name: String should match pattern"),
        ({"name": "x" * 129}, "name: String should match pattern"),
        ({"name": "a", "queue": "q/1"}, "queue: String should match pattern"),
        ({"name": "a", "priority": 101}, "priority: Input should be less than or equal to 100"),
        ({"name": "a", "priority": -101}, "priority: Input should be greater than or equal to -100"),
        ({"name": "a", "priority": "5"}, "priority: Input should be a valid integer"),
        ({"name": "a", "priority": True}, "priority: Input should be a valid integer"),
        ({"name": "a", "max_retries": 101}, "max_retries: Input should be less than or equal to 100"),
        ({"name": "a", "max_retries": -1}, "max_retries: Input should be greater than or equal to 0"),
        ({"name": "a", "timeout_s": 0}, "timeout_s: Input should be greater than 0"),
        ({"name": "a", "timeout_s": 10**9}, "timeout_s: Input should be less than or equal to"),
        ({"name": "a", "delay_s": -1}, "delay_s: Input should be greater than or equal to 0"),
        ({"name": "a", "args": {"x": 1}}, "args: Input should be a valid list"),
        ({"name": "a", "kwargs": [1]}, "kwargs: Input should be a valid dictionary"),
        ({"name": "a", "depends_on": "abc"}, "depends_on: Input should be a valid list"),
        ({"name": "a", "depends_on": ["ok", "not ok"]}, "depends_on.1: String should match pattern"),
        (
            {"name": "a", "depends_on": [f"d{i}" for i in range(1001)]},
            "depends_on: List should have at most 1000",
        ),
        ({"name": "a", "idempotency_key": ""}, "idempotency_key: String should have at least 1 character"),
        ({"name": "a", "idempotency_key": "k" * 201}, "idempotency_key: String should have at most 200"),
        ({"name": "a", "idempotency_key": "a\nb"}, "idempotency_key: String should match pattern"),
        ({"name": "a", "surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"name": "a", "ref": "r"}, "ref: Extra inputs are not permitted"),
        ([1, 2], ": Input should be a valid dictionary"),
    ],
)
def test_task_create_refuses(body: Any, culprit: str) -> None:
    assert any(culprit in error for error in errors_of(body)), errors_of(body)


def test_payload_bound_counts_args_and_kwargs_as_json() -> None:
    limits = ValidationLimits(max_payload_bytes=100)
    TaskCreate.model_validate({"name": "a", "args": ["x" * 40], "kwargs": {"k": "y" * 40}}, context=limits)
    errors = errors_of({"name": "a", "args": ["x" * 50], "kwargs": {"k": "y" * 50}}, limits=limits)
    assert errors == [": Value error, args and kwargs take 112 bytes as JSON; the limit is 100"]


def test_args_nested_beyond_what_json_can_encode_are_refused_not_crashing() -> None:
    deep: Any = []
    for _ in range(300):  # orjson encodes at most 254 levels
        deep = [deep]
    errors = errors_of({"name": "a", "args": [deep]})
    assert errors == [": Value error, args and kwargs may nest arrays and objects at most 64 deep"]


def test_batch_bounds() -> None:
    limits = ValidationLimits(max_batch=3)
    assert len(batch(*[{"name": "a"}] * 3, limits=limits).tasks) == 3
    assert errors_of({"tasks": [{"name": "a"}] * 4}, BatchCreate, limits) == [
        "tasks: Value error, 4 tasks in one batch; the limit is 3"
    ]
    assert errors_of({"tasks": []}, BatchCreate) == [
        "tasks: List should have at least 1 item after validation, not 0"
    ]
    assert errors_of({"tasks": [{"name": "a", "ref": "bad ref"}]}, BatchCreate)[0].startswith("tasks.0.ref:")


# ---------------------------------------------------------------- admission against the real store


async def test_single_task_is_answered_without_reading_it_back(store: Store) -> None:
    admitted = await submitter(store).submit([TaskCreate(name="echo", args=[1], priority=5)])
    [answer] = admitted.tasks
    assert admitted.created_any
    stored = await store.get(answer["id"])
    assert stored is not None
    assert answer == task_public(stored) | {
        "created_at": answer["created_at"],
        "enqueued_at": answer["enqueued_at"],
        # What only a read of the task reads (the submit answer says null: not read).
        "dependents": None,
        "dependents_count": None,
        "audit": None,
    }
    assert abs(answer["created_at"] - stored.created_at) < 1.0
    TaskPublic.model_validate(answer)


async def test_refs_resolve_to_ids_and_dependencies_are_written_first(store: Store) -> None:
    # "report" is listed first but depends on the two after it: the store needs them created first.
    items = batch(
        {"name": "report", "ref": "report", "depends_on": ["fetch-a", "fetch-b"]},
        {"name": "fetch", "ref": "fetch-a"},
        {"name": "fetch", "ref": "fetch-b", "depends_on": ["fetch-a"]},
    ).tasks
    admitted = await submitter(store).submit(items)
    report, fetch_a, fetch_b = admitted.tasks
    assert [t["name"] for t in admitted.tasks] == ["report", "fetch", "fetch"]
    assert report["depends_on"] == [fetch_a["id"], fetch_b["id"]]
    assert fetch_b["depends_on"] == [fetch_a["id"]]
    assert (report["state"], fetch_a["state"], fetch_b["state"]) == ("pending", "queued", "pending")
    stored = await store.get(report["id"])
    assert (
        stored is not None and stored.depends_on == [fetch_a["id"], fetch_b["id"]] and stored.deps_left == 2
    )


async def test_depends_on_mixes_refs_and_existing_ids(store: Store) -> None:
    s = submitter(store)
    [earlier] = (await s.submit([TaskCreate(name="a")])).tasks
    items = batch({"name": "b", "ref": "b"}, {"name": "c", "depends_on": ["b", earlier["id"]]}).tasks
    b, c = (await s.submit(items)).tasks
    assert c["depends_on"] == [b["id"], earlier["id"]] and c["state"] == "pending"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"name": "a", "ref": "x", "depends_on": ["x"]}], "dependency cycle: x -> x"),
        (
            [
                {"name": "a", "ref": "a", "depends_on": ["b"]},
                {"name": "b", "ref": "b", "depends_on": ["c"]},
                {"name": "c", "ref": "c", "depends_on": ["a"]},
            ],
            "dependency cycle: a -> b -> c -> a",
        ),
        (
            [
                {"name": "ok", "ref": "root"},
                {"name": "a", "ref": "p", "depends_on": ["root", "q"]},
                {"name": "a", "ref": "q", "depends_on": ["p"]},
            ],
            "dependency cycle: p -> q -> p",
        ),
        ([{"name": "a", "ref": "x"}, {"name": "b", "ref": "x"}], "ref 'x' is used by items 0 and 1"),
        (
            [{"name": "a", "idempotency_key": "k"}, {"name": "b", "idempotency_key": "k"}],
            "idempotency_key 'k' used by several tasks of the batch",
        ),
    ],
)
async def test_batch_refused_before_anything_is_written(
    store: Store, items: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidSubmission) as caught:
        await submitter(store).submit(batch(*items).tasks)
    assert message in caught.value.message
    assert await store.counts_by_state() == dict.fromkeys((s.value for s in TaskState), 0)


async def test_unknown_dependency_ids_are_named(store: Store) -> None:
    missing = uuid.uuid4().hex
    items = batch({"name": "a", "ref": "a"}, {"name": "b", "depends_on": ["a", missing]}).tasks
    with pytest.raises(InvalidSubmission) as caught:
        await submitter(store).submit(items)
    assert f"depends_on names unknown task id(s) '{missing}'" in caught.value.message
    assert "neither an existing task nor a ref of this batch" in caught.value.message
    assert caught.value.details == [{"unknown_ids": [missing]}]


async def test_a_long_chain_of_refs_is_ordered_without_recursion(store: Store) -> None:
    n = 3000  # deeper than Python's recursion limit
    items = [
        {"name": "step", "ref": f"s{i}", "depends_on": [f"s{i + 1}"] if i + 1 < n else []} for i in range(n)
    ]
    many = submitter(store, max_dependency_edges=n)
    admitted = await many.submit(batch(*items, limits=ValidationLimits(max_batch=n)).tasks)
    states = [t["state"] for t in admitted.tasks]
    assert states[-1] == "queued" and set(states[:-1]) == {"pending"}
    assert admitted.tasks[0]["depends_on"] == [admitted.tasks[1]["id"]]


async def test_idempotent_repeat_returns_the_stored_task(store: Store) -> None:
    s = submitter(store)
    first = await s.submit([TaskCreate(name="a", args=[1], idempotency_key="order-17")])
    again = await s.submit([TaskCreate(name="a", args=[2], idempotency_key="order-17")])
    assert first.created_any and not again.created_any
    assert again.tasks[0]["id"] == first.tasks[0]["id"]
    assert again.tasks[0]["args"] == [1]  # the first submission's, read back from Redis


async def _register(store: Store, names: list[str]) -> None:
    info = WorkerInfo(
        id="w1",
        host="h",
        queues=["default"],
        concurrency=1,
        task_names=names,
        version="t",
        pid=1,
        started_at=0.0,
    )
    await store.register_worker(info)


async def test_unknown_task_names_refused_once_workers_advertise_names(store: Store) -> None:
    await submitter(store, validate_names=True).submit([TaskCreate(name="anything")])  # no names known yet
    await _register(store, ["echo", "sleep"])
    s = submitter(store, validate_names=True)
    await s.submit([TaskCreate(name="echo")])
    with pytest.raises(InvalidSubmission) as caught:
        await s.submit(batch({"name": "echo"}, {"name": "nope"}, {"name": "zzz"}).tasks)
    assert caught.value.message == "unknown task name(s) 'nope', 'zzz': no worker has registered them"


async def test_name_cache_reads_redis_at_most_once_per_ttl(store: Store) -> None:
    await _register(store, ["echo"])
    reads = 0
    real = store.known_task_names

    async def counting() -> set[str]:
        nonlocal reads
        reads += 1
        return await real()

    store.known_task_names = counting  # type: ignore[method-assign]
    cache = TaskNameCache(ttl_s=60)

    async def unknown(names: set[str]) -> list[str]:
        return await drive(cache.unknown(names), lambda step: perform(step, store))

    for _ in range(5):
        assert await unknown({"echo"}) == []
    assert reads == 1
    assert await unknown({"new"}) == ["new"]  # a miss re-reads once before refusing
    assert reads == 2


async def test_a_retried_batch_with_dependencies_and_keys_links_to_the_first_tasks(store: Store) -> None:
    s = submitter(store)
    items = batch(
        {"name": "a", "ref": "a", "idempotency_key": "job-a"},
        {"name": "b", "depends_on": ["a"], "idempotency_key": "job-b"},
    ).tasks
    a, _ = (await s.submit(items)).tasks
    partial = batch(  # the client retries with one more dependent, after "a" went through
        {"name": "a", "ref": "a", "idempotency_key": "job-a"},
        {"name": "c", "depends_on": ["a"]},
    ).tasks
    again_a, c = (await s.submit(partial)).tasks
    assert again_a["id"] == a["id"]
    assert c["depends_on"] == [a["id"]]
    stored = await store.get(c["id"])
    assert stored is not None and stored.depends_on == [a["id"]]
