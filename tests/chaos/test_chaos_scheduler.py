"""The scheduler dying: SIGKILLed in the middle of batch submissions, and the elected leader of two."""

from __future__ import annotations

import random
import socket
import time

import pytest

from chaos.conftest import LONG, Scale
from chaos.harness import ChaosRun, is_leader, serves, wait_for
from chaos.invariants import p50_max, recovery_times
from chaos.report import Report, Row
from chaos.timing import recording_lateness
from chaos.workload import Submitter, long_sleepers, mixed_workload

# A guard against a hang, not a bound: a case takes 5-15 s here, but several times longer
# with other suites loading the machine (one took over 300 s at load 12 with two CPU burners).
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def wait_in_flight(sub: Submitter, timeout_s: float = 10.0) -> bool:
    """True while a batch request is on the wire (a kill now interrupts it); False once all are sent."""
    wait_for(
        lambda: sub.in_flight.is_set() or sub.done, timeout_s, "a batch request in flight", every_s=0.001
    )
    return not sub.done


def test_scheduler_sigkilled_mid_batch_submission(
    chaos: ChaosRun, rng: random.Random, scale: Scale, report: Report
) -> None:
    # Bigger batches keep a request on the wire longer: more of the kills land inside one.
    batches = mixed_workload(rng, scale.tasks, 50)
    chaos.stack.start_scheduler()
    workers = [chaos.start_worker() for _ in range(2)]
    chaos.wait_workers(workers)
    # Restarts take time too: spread the submission over longer, so every kill finds one going on.
    sub = chaos.submit(batches, pace_s=2 * scale.submit_s / len(batches))

    restart_s, outage_s = [], []
    for _ in range(scale.faults):
        time.sleep(rng.uniform(0.2, 0.8) * scale.fault_every_s)
        if not wait_in_flight(sub):
            break
        time.sleep(rng.choice((0.0, 0.002, 0.005)))  # before, during or after the commit
        killed_at = time.time()
        chaos.stack.kill_scheduler()
        started = time.monotonic()
        chaos.stack.start_scheduler()
        restart_s.append(time.monotonic() - started)
        wait_for(lambda t=killed_at: sub.last_ack > t or sub.done, 30, "the next acknowledged batch")
        if sub.last_ack > killed_at:
            outage_s.append(sub.last_ack - killed_at)

    verdict = chaos.verify()
    assert len(restart_s) >= min(3, scale.faults), "the submission ended before the kills"
    assert sub.interrupted_batches >= 1, "no kill interrupted a batch request"
    # Repeats carried the same idempotency keys: every ref is exactly one task, none twice.
    assert len(set(sub.ids.values())) == len(sub.ids) == scale.tasks
    assert int(chaos.redis.hlen(chaos.keys.tasks)) == scale.tasks
    report.add(
        Row(
            "test_scheduler_sigkilled_mid_batch_submission",
            f"the only scheduler SIGKILLed {len(restart_s)}x during batch submissions, restarted",
            verdict.acked,
            len(verdict.lost),
            len(verdict.duplicates),
            {
                "batches interrupted": sub.interrupted_batches,
                "of which committed before the kill": sub.repeats_answered_200,
                "restart to serving": p50_max(restart_s),
                "kill to next acknowledged batch": p50_max(outage_s),
            },
        )
    )


def test_leader_sigkilled_the_other_scheduler_takes_over(
    chaos: ChaosRun, rng: random.Random, scale: Scale, report: Report
) -> None:
    batches = mixed_workload(rng, scale.tasks, scale.batch)
    rounds = 3 if LONG else 1
    # Long tasks at the head of the queue: the worker killed with the leader is one running them.
    for r in range(rounds):
        batches[r * len(batches) // rounds][:0] = long_sleepers(f"long-{r}", 4, 4.0, priority=50)
    a, b = chaos.stack, chaos.second_scheduler()
    a.start_scheduler()
    b.start_scheduler()
    by_url = {a.url: a, b.url: b}
    wait_for(lambda: [is_leader(a.url), is_leader(b.url)].count(True) == 1, 15, "one leader")
    workers = [chaos.start_worker() for _ in range(3)]
    chaos.wait_workers(workers)

    leader = a if is_leader(a.url) else b
    sub = chaos.submit(batches, urls=[leader.url, (b if leader is a else a).url], pace_s=scale.pace_s * 2)
    failover_s, deaths = [], {}
    for r in range(rounds):
        follower = b if leader is a else a
        wait_for(lambda r=r: f"long-{r}-3" in sub.ids, 60, "the long tasks to be submitted")
        long_ids = {sub.ids[f"long-{r}-{i}"] for i in range(4)}
        wait_for(
            lambda ids=long_ids: any(chaos.held_by(w) & ids for w in chaos.live_workers()),
            30,
            "a long task to run",
        )
        time.sleep(rng.uniform(0.2, 1.0))
        victim = next(w for w in chaos.live_workers() if chaos.held_by(w) & long_ids)
        # Kill the leader and, at the same moment, a worker: only a leader reaps the worker's
        # expired leases, so its tasks run again only if the survivor took over the reaper.
        killed_at = time.time()
        leader.kill_scheduler()
        deaths[victim] = chaos.kill_worker(victim)
        assert serves(follower.url), "the surviving scheduler stopped serving"
        wait_for(lambda f=follower: is_leader(f.url), 15, "the survivor to lead", every_s=0.02)
        failover_s.append(time.time() - killed_at)
        assert follower.scheduler is not None
        holder = chaos.redis.get(chaos.keys.leader) or b""
        assert isinstance(holder, bytes) and holder.decode().startswith(
            f"{socket.gethostname()}-{follower.scheduler.pid}:"
        ), holder
        leader.start_scheduler()  # it comes back as a follower
        chaos.start_worker()
        leader = follower
    verdict = chaos.verify()
    # The old leader came back and stayed a follower: exactly one leader.
    assert [is_leader(url) for url in by_url].count(True) == 1
    recovery = recovery_times(list(verdict.tasks.values()), deaths)
    assert recovery, "the killed worker held no task: the reaper was not exercised"
    # Leader lock ttl 5 s, renewed every ttl/3: the survivor leads within ~ttl + ttl/3 of the kill,
    # plus 2 s (its gauge, the scrape) and what this run took to record any task's end (a loaded
    # machine delays the survivor's tries as it delays the workers).
    late = recording_lateness(verdict.tasks)
    assert max(failover_s) < 5.0 + 5.0 / 3 + 2.0 + late, (failover_s, late)
    report.add(
        Row(
            "test_leader_sigkilled_the_other_scheduler_takes_over",
            "leader of 2 schedulers SIGKILLed with a worker; the other takes over the reaper",
            verdict.acked,
            len(verdict.lost),
            len(verdict.duplicates),
            {
                "leader kill to new leader": p50_max(failover_s),
                "worker death to its tasks running again": p50_max(recovery),
                "submission retries": sub.retries,
                "recording lateness of the run (s)": round(late, 3),
            },
        )
    )
