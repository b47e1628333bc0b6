"""bench.scale writes each figure as soon as it is measured and ends its private redis-server by
killing it (a 10,000,000-task run once lost its report while its clean-up freed the tasks)."""

from __future__ import annotations

import shutil

import pytest
import redis

from bench import scale

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")


def test_the_private_server_is_gone_when_the_run_ends_with_its_tasks_still_on_it() -> None:
    with scale.private_redis() as url:
        client = redis.Redis.from_url(url)
        client.hset("left:behind", mapping={str(i): "x" for i in range(1000)})
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_a_small_run_reports_memory_per_task_and_listing_figures(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tasks", "2000", "--parts", "memory-noop", "list", "--repeat", "1", "--limits", "5"]
    assert scale.main(argv) == 0
    out = capsys.readouterr().out
    assert "memory per queued no-op task (2,000 tasks):" in out
    assert "backlog of 2,000 queued no-op tasks" in out
    listed = [line for line in out.splitlines() if line.startswith("| ") and " | 5 | " in line]
    assert len(listed) == len(scale.LIST_CASES)
    empty = [line for line in listed if "matches nothing" not in line and not line.rstrip().endswith("| 0 |")]
    assert not empty, f"pages empty although matching tasks exist: {empty}"
