"""The leader's campaign in a small process of its own, out of reach of the scheduler's pauses.

Under a thousand event streams and waits the scheduler stalls as a whole: a busy event loop, and
garbage collections that stop every thread while they walk the streams' objects (one took 5 s
of wall time at load 15; docs/reliability.md). An election thread stalls with it, and renewals
were seen 1.8-6 s late. `ElectorProcess` runs the campaign (Redis lock or Kubernetes Lease) in
`python -m shoal.scheduler.election_child`, a process with a few objects and nothing else to do,
so the scheduler's pauses cannot delay a renewal.

The child tells the scheduler, one JSON line at a time, until when it leads (a
`time.monotonic()` instant: CLOCK_MONOTONIC is one clock for all processes of a machine) and its
fencing token. `is_leader` compares that instant with the clock, so leadership ends on its own
if the child stops reporting (stuck, killed, or its reports unread), exactly as the elector's own
`is_leader` would. The child dies with the scheduler (stdin EOF, PR_SET_PDEATHSIG) and steps
down when it does, and also when the scheduler has said nothing for `parent_silence_s` (its
event loop writes a line a second: a hung scheduler must not keep the lead; a stall of a few
seconds is ridden out); a child that exits by itself ends `run` with `ElectionProcessExited`, which the
replica's supervisor logs, counts (`shoal_scheduler_loop_failures_total{loop="election"}`), shows
on `/readyz` and restarts with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from shoal.scheduler.election_spec import ElectionSpec
from shoal.scheduler.leader import RENEWALS_LATE

log = logging.getLogger(__name__)

CHILD_MODULE = "shoal.scheduler.election_child"
ALIVE_EVERY_S = 1.0  # the scheduler's sign of life to the child, from its event loop
_STOP_TIMEOUT_S = 30.0  # a hang guard: stepping down is one Redis or API call with its own timeout
_RESIGN_TIMEOUT_S = 30.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds `shoal`


class ElectionProcessExited(RuntimeError):
    """The election process ended although the scheduler did not stop it."""


class ElectorProcess:
    """A `LeaderElector` whose campaign runs in a child process (`election_child`)."""

    def __init__(self, spec: ElectionSpec) -> None:
        self.identity = spec.identity
        self._spec = spec
        self._proc: asyncio.subprocess.Process | None = None
        self._leader_until = 0.0
        self._token: str | None = None
        self._late_seen: dict[str, int] = {}
        self._resign_seq = 0
        self._resigning: int | None = None
        self._resigned: dict[int, asyncio.Future[None]] = {}

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._leader_until

    @property
    def leader_until(self) -> float:
        return self._leader_until

    @property
    def fencing_token(self) -> str | None:
        return self._token if self.is_leader else None

    @property
    def pid(self) -> int | None:
        """The election process's id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def run(self, stop: asyncio.Event) -> None:
        """Run the election process until `stop` is set (it steps down and exits); raise
        `ElectionProcessExited` if it ends by itself."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", CHILD_MODULE, str(os.getpid()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        log.info("election process started", extra={"pid": proc.pid, "election": self._spec.kind})
        reading = asyncio.create_task(self._read(proc.stdout), name="election-reports")
        stopping = asyncio.create_task(stop.wait())
        speaking: asyncio.Task[None] | None = None
        try:
            proc.stdin.write(self._spec.to_json() + b"\n")
            await proc.stdin.drain()
            speaking = asyncio.create_task(self._say_alive(proc.stdin), name="election-alive")
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                proc.stdin.close()  # EOF: the child steps down and exits
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await reading
                    await proc.wait()
                return
            code = await proc.wait()
            raise ElectionProcessExited(f"the election process {proc.pid} exited with code {code}")
        finally:
            self._leader_until, self._token, self._proc = 0.0, None, None
            stopping.cancel()
            reading.cancel()
            if speaking is not None:
                speaking.cancel()
            if proc.returncode is None:
                log.error("election process did not stop; killing it", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            for waiter in self._resigned.values():
                if not waiter.done():
                    waiter.set_exception(ElectionProcessExited("the election process ended"))
            self._resigned.clear()
            self._resigning = None

    @staticmethod
    async def _say_alive(stdin: asyncio.StreamWriter) -> None:
        """One line a second: a scheduler whose event loop stops turning (hung, not merely
        stalled) goes silent, and the child steps down after `parent_silence_s`."""
        with contextlib.suppress(OSError):  # the child is gone: `run` reports that
            while True:
                stdin.write(b'{"op": "alive"}\n')
                await stdin.drain()
                await asyncio.sleep(ALIVE_EVERY_S)

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            try:
                report = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.error(
                    "unreadable report from the election process",
                    extra={"line": line[:200].decode("replace")},
                )
                continue
            self._apply(report)

    def _apply(self, report: dict[str, Any]) -> None:
        for why, count in report.get("late", {}).items():
            seen = self._late_seen.get(why, 0)
            if count > seen:
                RENEWALS_LATE.labels(why).inc(count - seen)
            self._late_seen[why] = count
        answered = report.get("resigned")
        if self._resigning is not None and answered != self._resigning:
            return  # written before the resignation: no longer true
        self._resigning = None
        was = self.is_leader
        self._leader_until = float(report.get("leader_until") or 0.0)
        self._token = report.get("token")
        if was != self.is_leader:
            log.info(
                "this replica %s",
                "leads" if self.is_leader else "does not lead",
                extra={"leader": self.identity},
            )
        waiter = self._resigned.pop(answered, None) if isinstance(answered, int) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def resign(self) -> None:
        """Stop leading at once and have the election process resign (release and sit out one
        term); a failure is logged, not raised: leadership here ended already."""
        self._leader_until, self._token = 0.0, None
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        self._resign_seq += 1
        seq = self._resign_seq
        self._resigning = seq
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resigned[seq] = waiter
        try:
            proc.stdin.write(orjson.dumps({"op": "resign", "id": seq}) + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(_RESIGN_TIMEOUT_S):
                await waiter
        except (OSError, TimeoutError, ElectionProcessExited) as exc:
            log.error(
                "the election process did not confirm the resignation; the lock expires on its own",
                extra={"error": str(exc) or type(exc).__name__},
            )
        finally:
            self._resigned.pop(seq, None)
