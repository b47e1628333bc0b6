"""/api/v1/bulk and /api/v1/failures over real HTTP, run by the scheduler's own leader."""

from __future__ import annotations

import time
from typing import Any

import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from shoal import Client, ShoalError, task_request
from shoal.core.store import Store
from shoal.scheduler.bulk_schemas import BulkJobPublic, BulkPreview, FailureGroups
from store_helpers import claim_one, failed

pytestmark = pytest.mark.leader  # bulk jobs run in the leader's loops


def wait_done(client: Client, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The job once it finished. The timeout is a hang guard, not a bound: the scheduler's leader
    runs the job on its own schedule, which a machine at a load of 10+ delays by many seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = client.request("GET", f"/api/v1/bulk/{job_id}")
        if job["state"] in ("done", "stopped", "failed"):
            return job
        assert time.monotonic() < deadline, f"bulk job not finished after {timeout_s:g}s: {job}"
        time.sleep(0.05)


def test_a_bulk_cancel_runs_to_the_end_with_its_progress(client: Client) -> None:
    client.submit_batch([{"name": "echo", "queue": "q1"} for _ in range(40)])
    client.submit_batch([{"name": "echo", "queue": "q2"} for _ in range(7)])
    body = {"action": "cancel", "filter": {"queue": "q1", "states": ["queued"]}}
    preview = client.request("POST", "/api/v1/bulk/preview", body=body)
    BulkPreview.model_validate(preview)
    assert (preview["matched"], preview["complete"]) == (40, True)
    assert client.list_tasks(state="cancelled")["tasks"] == [], "a preview changes nothing"

    job = client.request("POST", "/api/v1/bulk", body=body)
    BulkJobPublic.model_validate(job)
    assert job["state"] == "queued" and job["estimate"] == 47
    done = wait_done(client, job["id"])
    assert (done["state"], done["changed"], done["matched"], done["progress"]) == ("done", 40, 40, 1.0)
    assert done["filter"] == {"queue": "q1", "states": ["queued"]}
    assert len(client.list_tasks(state="cancelled", limit=100)["tasks"]) == 40
    assert {t["queue"] for t in client.list_tasks(state="queued", limit=100)["tasks"]} == {"q2"}
    assert [j["id"] for j in client.request("GET", "/api/v1/bulk")["jobs"]] == [job["id"]]


async def test_failures_are_grouped_and_one_group_is_retried(client: Client, store: Store) -> None:
    for error in ["TimeoutError: upstream", "TimeoutError: upstream", "KeyError: 'id'"]:
        client.submit_request(task_request("echo", max_retries=0))
        claimed = await claim_one(store)
        await store.complete("w1", [failed(claimed, error=error, retry=False)])
    groups = client.request("GET", "/api/v1/failures")
    FailureGroups.model_validate(groups)
    assert [(g["error"], g["count"]) for g in groups["groups"]] == [
        ("TimeoutError: upstream", 2),
        ("KeyError: 'id'", 1),
    ]
    job = client.request(
        "POST",
        "/api/v1/bulk",
        body={"action": "retry", "filter": {"error_contains": "TimeoutError: upstream"}},
    )
    assert wait_done(client, job["id"])["changed"] == 2
    assert [g["error"] for g in client.request("GET", "/api/v1/failures")["groups"]] == ["KeyError: 'id'"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"action": "retry", "filter": {"states": ["queued"]}}, "retry applies to tasks in failed"),
        ({"action": "delete"}, "action"),
        ({"action": "cancel", "filter": {"states": ["nope"]}}, "states"),
        ({"action": "cancel", "filter": {"colour": "red"}}, "colour"),
        ({"action": "cancel", "filter": {"error_contains": ""}}, "error_contains"),
    ],
)
def test_bad_bulk_requests_are_422_and_start_nothing(
    client: Client, body: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ShoalError) as err:
        client.request("POST", "/api/v1/bulk", body=body)
    assert err.value.status == 422 and needle in str(err.value.detail)
    assert client.request("GET", "/api/v1/bulk")["jobs"] == []


def test_unknown_jobs_are_404_and_finished_ones_cannot_be_stopped(client: Client) -> None:
    with pytest.raises(ShoalError) as err:
        client.request("GET", "/api/v1/bulk/0123456789abcdef")
    assert err.value.status == 404
    job = client.request("POST", "/api/v1/bulk", body={"action": "cancel"})
    wait_done(client, job["id"])
    with pytest.raises(ShoalError) as err:
        client.request("POST", f"/api/v1/bulk/{job['id']}/stop")
    assert err.value.status == 409
