"""One chaos run: real scheduler and worker processes (tests/process_stack.py), the ledger, the workload.

`ChaosRun` starts a scheduler and named workers on a namespace, submits a mixed workload
in the background, lets the test inject its fault, waits until the system is quiet and
checks the invariants. Worker ids are chosen here (`w1`, `w2` ...) so a test can name the
worker it kills and find that worker's attempts in the task history.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from chaos.invariants import Verdict, check, wait_quiet
from chaos.ledger import Ledger
from chaos.workload import Item, Submitter
from layout import worker_task_ids
from process_stack import ProcessStack
from shoal.core import jsonutil
from shoal.core.keys import Keys
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings

TASK_MODULES = "tests.chaos.chaos_tasks"
_LEADER_GAUGE = re.compile(r"^shoal_leader (\S+)$", re.MULTILINE)


class ChaosRun:
    def __init__(
        self, redis_url: str, namespace: str, logdir: Path, concurrency: int = 16, **env: str
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.logdir = logdir
        self.keys = Keys(namespace)
        self.env = {"SHOAL_TASK_MODULES": TASK_MODULES, "SHOAL_CONCURRENCY": str(concurrency), **env}
        self.stack = ProcessStack(redis_url, namespace, logdir, **self.env)
        self.extra_stacks: list[ProcessStack] = []
        self.redis = RedisConnector(RedisSettings(redis_url=redis_url)).sync_client("chaos")
        self.ledger = Ledger(redis_url, self.keys)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.submitter: Submitter | None = None
        self._next_worker = 0

    # ------------------------------------------------------------------ processes

    def __enter__(self) -> ChaosRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            print(self.logs())
        for stack in (*self.extra_stacks, self.stack):
            stack.stop_all()
        self.ledger.close()
        self.redis.close()

    def second_scheduler(self) -> ProcessStack:
        """Another scheduler replica on the same Redis and namespace (its own port)."""
        stack = ProcessStack(self.redis_url, self.namespace, self.logdir, **self.env)
        self.extra_stacks.append(stack)
        return stack

    def start_worker(self, **env: str) -> str:
        self._next_worker += 1
        worker_id = f"w{self._next_worker}"
        self.workers[worker_id] = self.stack.start_worker(SHOAL_WORKER_ID=worker_id, **env)
        return worker_id

    def wait_workers(self, worker_ids: list[str], timeout_s: float = 30.0) -> None:
        wait_for(
            lambda: all(self.redis.zscore(self.keys.workers, w) is not None for w in worker_ids),
            timeout_s,
            f"workers {worker_ids} to register",
        )

    def kill_worker(self, worker_id: str, sig: signal.Signals = signal.SIGKILL) -> float:
        """Send `sig` to a worker; returns when it was sent (unix time)."""
        proc = self.workers[worker_id]
        at = time.time()
        proc.send_signal(sig)
        return at

    def live_workers(self) -> list[str]:
        return [w for w, proc in self.workers.items() if proc.poll() is None]

    def held_by(self, worker_id: str) -> set[str]:
        return worker_task_ids(self.redis, self.keys, worker_id)

    # ------------------------------------------------------------------ workload

    def submit(
        self, batches: list[list[Item]], urls: list[str] | None = None, pace_s: float = 0.1
    ) -> Submitter:
        self.submitter = Submitter(urls or [self.stack.url], batches, pace_s).start()
        return self.submitter

    def finished(self) -> int:
        return sum(
            int(self.redis.zcard(self.keys.state(s))) for s in ("succeeded", "failed", "upstream_failed")
        )

    def wait_finished(self, n: int, timeout_s: float = 60.0) -> None:
        wait_for(lambda: self.finished() >= n, timeout_s, f"{n} tasks to finish")

    def verify(self, items: list[Item] | None = None, quiet_timeout_s: float = 90.0) -> Verdict:
        """Wait for the submission and for quiet, then check the invariants (asserting them)."""
        sub = self.submitter
        assert sub is not None
        sub.join(120)
        wait_quiet(self.redis, self.keys, list(sub.ids.values()), quiet_timeout_s)
        verdict = check(self.redis, self.keys, items or sub.items, sub.ids, self.ledger)
        print(verdict.summary())
        verdict.assert_holds()
        return verdict

    # ------------------------------------------------------------------ observation

    def logs(self) -> str:
        return self.stack.logs()

    def log_records(self, worker_id: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines of every process (or of one worker), parsed."""
        out = []
        for path in sorted(self.logdir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    record = jsonutil.loads(line)
                except ValueError:
                    continue
                if worker_id is None or record.get("worker_id") == worker_id:
                    out.append(record)
        return out


def wait_for(predicate: Any, timeout_s: float, what: str, every_s: float = 0.05) -> float:
    """Poll until `predicate()` is true; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


def is_leader(url: str) -> bool | None:
    """The `shoal_leader` gauge of the scheduler at `url`, or None if it does not answer."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=1).text
    except httpx.HTTPError:
        return None
    found = _LEADER_GAUGE.search(text)
    return found is not None and float(found.group(1)) == 1.0


def serves(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
