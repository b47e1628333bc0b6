"""A worker cut off from Redis for longer than its lease, then healed.

The worker reaches Redis through a TCP proxy; the partition holds its traffic (no error,
just silence), as a network split would. The scheduler declares it lost, its tasks run on
the other worker; when the network heals, its late completions arrive and must be refused
(the attempt is no longer current), and the worker must register again and carry on.
"""

from __future__ import annotations

import random
import time
from urllib.parse import urlparse

import pytest

from chaos.conftest import Scale
from chaos.harness import ChaosRun, wait_for
from chaos.invariants import p50_max, read_tasks, recovery_times, worker_ids_of
from chaos.report import Report, Row
from chaos.tcp_proxy import TcpProxy
from chaos.workload import extra_items, mixed_workload
from shoal import task_request
from shoal.core import jsonutil

# A guard against a hang, not a bound: a case takes 5-15 s here, but several times longer
# with other suites loading the machine (one took over 300 s at load 12 with two CPU burners).
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

LEASE_S = 2.0  # SHOAL_LEASE_S of the process stack
WHOAMI_S = 1.0


def test_worker_cut_off_longer_than_its_lease_then_healed(
    chaos: ChaosRun, redis_url: str, rng: random.Random, scale: Scale, report: Report
) -> None:
    parsed = urlparse(redis_url)
    proxy = TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379).start()
    try:
        db = int((parsed.path or "/0").lstrip("/") or 0)
        batches = mixed_workload(rng, scale.tasks, scale.batch)
        # High-priority tasks that report who ran them: the victim will hold some when cut off.
        batches[0][:0] = extra_items(
            [
                (
                    task_request("whoami", kwargs={"seconds": WHOAMI_S}, ref=f"who-{i}", priority=50),
                    "succeeded",
                )
                for i in range(24)
            ]
        )
        chaos.stack.start_scheduler()
        steady = chaos.start_worker()
        victim = chaos.start_worker(SHOAL_REDIS_URL=proxy.url(db))
        chaos.wait_workers([steady, victim])
        victim_pid = chaos.workers[victim].pid
        sub = chaos.submit(batches, pace_s=scale.pace_s * 1.5)

        wait_for(lambda: len(sub.ids) >= 24, 30, "the whoami tasks to be acknowledged")
        whoami_ids = {sub.ids[f"who-{i}"] for i in range(24)}
        wait_for(lambda: len(chaos.held_by(victim) & whoami_ids) >= 2, 30, "the victim to hold whoami tasks")
        proxy.partition()
        cut_at = time.time()
        held = chaos.held_by(victim)
        held_whoami = held & whoami_ids

        # Stay cut off until its tasks were taken away and finished elsewhere.
        wait_for(lambda: victim in chaos.ledger.workers_with("lost"), 20, "the victim to be declared lost")
        wait_for(
            lambda: all(
                t is not None and t.state == "succeeded"
                for t in read_tasks(chaos.redis, chaos.keys, list(held_whoami)).values()
            ),
            30,
            "the victim's whoami tasks to succeed elsewhere",
        )
        time.sleep(max(0.0, cut_at + LEASE_S + 1.0 - time.time()))  # cut off for longer than a lease
        proxy.heal()
        healed_at = time.time()
        back_s = wait_for(
            lambda: (
                (chaos.redis.hget(chaos.keys.worker(victim), "state") or b"") == b"active"
                and chaos.redis.zscore(chaos.keys.workers, victim) is not None
            ),
            20,
            "the victim to register again",
        )
        verdict = chaos.verify()
    finally:
        proxy.close()

    by_id = {sub.ids[ref]: task for ref, task in verdict.tasks.items()}
    for task_id in held_whoami:
        task = by_id[task_id]
        result = jsonutil.loads(task.fields["result"])
        assert result["worker_id"] == steady and result["pid"] != victim_pid, (task_id, result)
        victim_attempts = [h for h in task.history if h.get("worker_id") == victim]
        assert victim_attempts and victim_attempts[-1]["state"] in ("released", "lease_expired")
    refused = {
        r["task_id"]
        for r in chaos.log_records(victim)
        if str(r.get("msg", "")).startswith("completion refused") and "task_id" in r
    }
    assert held_whoami <= refused, f"stale results not sent and refused: {held_whoami - refused}"
    assert chaos.workers[victim].poll() is None, "the cut-off worker died"
    after_heal = [
        t for t in verdict.tasks.values() if healed_at * 1000 < max(t.started_ms().values(), default=0)
    ]
    assert any(victim in worker_ids_of(t).values() for t in after_heal), "the healed worker ran nothing"
    recovery = recovery_times(list(verdict.tasks.values()), {victim: cut_at})
    report.add(
        Row(
            "test_worker_cut_off_longer_than_its_lease_then_healed",
            f"a worker cut off from Redis {healed_at - cut_at:.1f}s (lease {LEASE_S:g}s), then healed",
            verdict.acked,
            len(verdict.lost),
            len(verdict.duplicates),
            {
                "tasks it held": len(held),
                "stale results refused": len(refused),
                "cut-off to its tasks running elsewhere": p50_max(recovery),
                "heal to registered again s": round(back_s, 3),
            },
        )
    )
