"""/api/v1/limits over real HTTP on real Redis: set, list with use, refuse bad input, delete;
a submitted flow key is enforced by the claim."""

from __future__ import annotations

import time

import httpx
import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from shoal import Client
from shoal.core.store import Store
from store_helpers import ok


def test_limits_are_set_listed_with_their_use_and_deleted(client: Client) -> None:
    made = client.request("PUT", "/api/v1/limits/key:tenant:42", body={"concurrency": 5, "weight": 2})
    assert made == {
        "scope": "key:tenant:42", "kind": "key", "target": "tenant:42", "concurrency": 5, "running": 0,
        "rate": None, "weight": 2, "keys": {},
    }  # fmt: skip
    client.request("PUT", "/api/v1/limits/name:send", body={"rate": {"limit": 10, "period_s": 60}})
    client.request("PUT", "/api/v1/limits/key:tenant:*", body={"concurrency": 1})
    listed = client.request("GET", "/api/v1/limits")["limits"]
    assert [x["scope"] for x in listed] == ["key:tenant:*", "key:tenant:42", "name:send"]
    send = client.request("GET", "/api/v1/limits/name:send")
    assert send["rate"] == {"limit": 10, "period_s": 60.0, "started": 0, "limited_until": None}
    client.request("DELETE", "/api/v1/limits/name:send")
    assert [x["scope"] for x in client.request("GET", "/api/v1/limits")["limits"]] == [
        "key:tenant:*", "key:tenant:42",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("scope", "body", "needle"),
    [
        ("tenant:42", {"concurrency": 1}, "must be queue:<queue>"),
        ("queue:bad name", {"concurrency": 1}, "queue must be"),
        ("name:send", {"concurrency": -1}, "concurrency"),
        ("name:send", {"weight": 2}, "a weight applies to flow keys only"),
        ("key:k", {"rate": {"limit": 0, "period_s": 1}}, "limit"),
        ("key:k", {"concurrency": 1, "extra": 1}, "extra"),
    ],
)
def test_bad_limits_are_refused_with_a_message(api: ApiServer, scope: str, body: dict, needle: str) -> None:
    answer = httpx.put(f"{api.url}/api/v1/limits/{scope}", json=body)
    assert answer.status_code == 422, answer.text
    assert needle in answer.text
    assert httpx.get(f"{api.url}/api/v1/limits").json() == {"limits": []}, "nothing was stored"


def test_deleting_or_reading_a_missing_limit_is_a_404(api: ApiServer) -> None:
    assert httpx.delete(f"{api.url}/api/v1/limits/key:none").status_code == 404
    assert httpx.get(f"{api.url}/api/v1/limits/key:none").status_code == 404


async def test_a_submitted_flow_key_is_held_to_its_limit(client: Client, store: Store) -> None:
    client.request("PUT", "/api/v1/limits/key:tenant:7", body={"concurrency": 1})
    tasks = client.submit_batch([{"name": "echo", "flow_key": "tenant:7"} for _ in range(3)])
    assert {t["flow_key"] for t in tasks} == {"tenant:7"}
    (first,) = await store.claim("w1", ["default"], 10)
    assert client.request("GET", "/api/v1/limits/key:tenant:7")["running"] == 1
    assert await store.claim("w1", ["default"], 10) == []
    assert await store.complete("w1", [ok(first)]) == [True]
    assert len(await store.claim("w1", ["default"], 10)) == 1


def test_a_flow_key_with_control_characters_is_refused(api: ApiServer) -> None:
    bad = httpx.post(f"{api.url}/api/v1/tasks", json={"name": "echo", "flow_key": "a\x01b"})
    assert bad.status_code == 422 and "flow_key" in bad.text


def test_the_sdk_renders_a_key_template_from_the_arguments(client: Client) -> None:
    import shoal
    from shoal.core.registry import TaskRegistry

    @shoal.task(key="tenant:{tenant_id}", registry=TaskRegistry())
    def bill(tenant_id: int, amount: int) -> None: ...

    assert client.get(client.submit(bill, 42, amount=1).id)["flow_key"] == "tenant:42", "positional, by name"
    assert client.get(client.submit(bill.options(key="vip"), 1, 2).id)["flow_key"] == "vip"
    with pytest.raises(shoal.InvalidTask, match="must be a string or a number"):
        client.submit(bill, [1], amount=1)


async def test_explain_names_the_limit_and_the_rate_that_hold_a_task(client: Client, store: Store) -> None:
    client.request("PUT", "/api/v1/limits/key:tenant:*", body={"concurrency": 1})
    client.request("PUT", "/api/v1/limits/name:send", body={"rate": {"limit": 1, "period_s": 3600}})
    first, second = client.submit_batch([{"name": "echo", "flow_key": "tenant:42"}] * 2)
    assert client.explain(second["id"])["code"] == "no_workers", "no limit holds it before one runs"
    assert [t.id for t in await store.claim("w1", ["default"], 10)] == [first["id"]]
    why = client.explain(second["id"])
    assert why["code"] == "limit_reached"
    assert "Key tenant:42 is at its limit: 1 of 1 running (rule key:tenant:*)." in why["reason"]

    sent, waiting = client.submit_batch([{"name": "send"}] * 2)
    assert [t.id for t in await store.claim("w1", ["default"], 10)] == [sent["id"]]
    why = client.explain(waiting["id"])
    assert why["code"] == "rate_limited"
    assert "Task name send is rate limited: 1 starts in the last 1 h (at most 1)" in why["reason"]
    (hold,) = why["details"]["holds"]
    assert hold["until"] > time.time() + 3000, "an hour after that start"
