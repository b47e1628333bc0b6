"""The election process: `python -m shoal.scheduler.election_child <parent pid>`, started by
`shoal.scheduler.elector_process.ElectorProcess`, never by hand.

It reads its `ElectionSpec` as the first line of stdin, then campaigns (the Redis lock or the
Kubernetes Lease) on an event loop that has nothing else to do, and writes one JSON line to
stdout whenever what the scheduler should know changes:
`{"leader_until": <monotonic s, 0 when not leading>, "token": <fencing token or null>,
"late": {"woke_late": n, "slow_answer": n}}` (the late rounds counted so far; a line answering a
resignation also carries `"resigned": <id>`). Further stdin lines are commands
(`{"op": "resign", "id": n}`, and `{"op": "alive"}` every second from the scheduler's event
loop: when none has come for the spec's `parent_silence_s`, the scheduler is hung and this
process steps down and exits, for a replica that works to lead).

It dies with the scheduler: stdin reaching EOF (the scheduler closed it, or died and the kernel
closed it) makes it step down and exit; PR_SET_PDEATHSIG sends it SIGTERM, which does the same,
should the scheduler die while this process is not reading. SIGINT is ignored: a Ctrl-C reaches
the whole process group, and the scheduler closes stdin when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from shoal.core.logging import configure_logging
from shoal.scheduler.election_spec import ElectionSpec
from shoal.scheduler.leader import LeaderElector, RedisLeaderElector

log = logging.getLogger(__name__)

REPORT_EVERY_S = 0.05  # how soon a renewal reaches the scheduler; the lock lives seconds
LOCK_CONNECTIONS = 2
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM when the parent dies (Linux). The signal follows the thread that started this
    process, so the scheduler starts it from its event loop's thread, which lives as long as it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("PR_SET_PDEATHSIG failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        raise SystemExit(0)


@contextlib.asynccontextmanager
async def open_elector(spec: ElectionSpec) -> AsyncIterator[LeaderElector]:
    if spec.kind == "kubernetes":
        # Imported here: the Redis election should not pay for loading the Kubernetes client.
        from shoal.scheduler.kube import KubeClient
        from shoal.scheduler.lease import KubernetesLeaseElector

        kube = KubeClient.from_settings(spec.kube)
        try:
            yield KubernetesLeaseElector.from_settings(kube, spec.kube)
        finally:
            kube.close()
        return
    from shoal.core.keys import Keys
    from shoal.core.redis_client import RedisConnector

    client = RedisConnector(spec.redis).client("leader-lock", LOCK_CONNECTIONS)
    try:
        yield RedisLeaderElector(client, Keys(spec.redis.namespace), spec.identity, ttl_s=spec.lock_s)
    finally:
        await client.aclose()


def _send(message: dict[str, Any]) -> None:
    # Blocking on purpose: the pipe holds about a quarter of an hour of reports (one line of ~110
    # bytes per renewal), so only a scheduler that is hung, not merely stalled, fills it; then this
    # write blocks, renewals stop, and the lock passes to a replica that works.
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


def _state(elector: LeaderElector) -> dict[str, Any]:
    return {
        "leader_until": elector.leader_until if elector.is_leader else 0.0,
        "token": elector.fencing_token,
        "late": dict(getattr(elector, "late_rounds", {})),
    }


async def _report(elector: LeaderElector) -> None:
    last: dict[str, Any] | None = None
    while True:
        state = _state(elector)
        if state != last:
            _send(state)
            last = state
        await asyncio.sleep(REPORT_EVERY_S)


def _read_commands(loop: asyncio.AbstractEventLoop, commands: asyncio.Queue[bytes | None]) -> None:
    """In a thread: stdin lines onto the loop; None at EOF (the scheduler stopped or died)."""
    try:
        for line in sys.stdin.buffer:
            loop.call_soon_threadsafe(commands.put_nowait, line)
    finally:
        loop.call_soon_threadsafe(commands.put_nowait, None)


async def _obey(elector: LeaderElector, line: bytes | None, stop: asyncio.Event) -> None:
    if line is None:
        stop.set()
        return
    request = orjson.loads(line)
    if request.get("op") == "alive":
        return
    if request.get("op") == "resign":
        await elector.resign()
        _send({**_state(elector), "resigned": request.get("id")})
    else:
        log.error("unknown command from the scheduler", extra={"command": request})


async def _serve(spec: ElectionSpec) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    commands: asyncio.Queue[bytes | None] = asyncio.Queue()
    threading.Thread(target=_read_commands, args=(loop, commands), name="commands", daemon=True).start()
    async with open_elector(spec) as elector:
        campaign = asyncio.create_task(elector.run(stop), name="campaign")
        reporter = asyncio.create_task(_report(elector), name="report")
        stopping = asyncio.create_task(stop.wait())
        heard_at = time.monotonic()
        try:
            while True:
                command = asyncio.create_task(commands.get())
                silence_left = heard_at + spec.parent_silence_s - time.monotonic()
                await asyncio.wait(
                    {campaign, command, stopping},
                    timeout=max(0.0, silence_left),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if command.done():
                    heard_at = time.monotonic()
                    await _obey(elector, command.result(), stop)
                else:
                    command.cancel()
                    if time.monotonic() - heard_at >= spec.parent_silence_s and not stop.is_set():
                        log.error(
                            "the scheduler has said nothing for %.0f s: stepping down",
                            spec.parent_silence_s,
                            extra={"identity": spec.identity},
                        )
                        stop.set()
                if campaign.done() or stop.is_set():
                    break
            await campaign  # its error, if any, ends this process with a traceback on stderr
        finally:
            reporter.cancel()
            stopping.cancel()
            if not campaign.done():
                stop.set()
                await campaign
    with contextlib.suppress(BrokenPipeError):
        _send({"leader_until": 0.0, "token": None, "late": dict(getattr(elector, "late_rounds", {}))})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(args[0]))
    first = sys.stdin.buffer.readline()
    if not first:
        return  # the scheduler went away before it said what to do
    spec = ElectionSpec.from_json(first)
    configure_logging(spec.log.log_format, spec.log.log_level)
    # Everything loaded so far lives as long as the process: keep collections of it short.
    gc.collect()
    gc.freeze()
    code = 0
    try:
        asyncio.run(_serve(spec))
    except Exception:
        log.exception("the election failed", extra={"leader": spec.identity})
        code = 1
    # Not a normal interpreter exit: that would wait for the stdin reader's lock and abort.
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
