"""The task state machine: the TRANSITIONS table, and that the Lua scripts only make legal moves.

The scripts carry the table (generated into their prelude) and set_state, the only code that
writes a state, refuses a move the table does not allow; a live test drives a mixed workload
through the real store and replays the per-task state sequence from the event stream against
the table, checking that the workload made every legal move.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable
from itertools import pairwise
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from shoal.core import record
from shoal.core.errors import Conflict
from shoal.core.scripts import LUA_DIR, compile_lua, load_source
from shoal.core.states import DEAD, INITIAL, TERMINAL, TRANSITIONS, TaskState, can_transition
from shoal.core.store import Store
from store_helpers import (
    claim_one,
    failed,
    must_get,
    ok,
    other_store,
    register,
    spec,
    submit,
    submit_specs,
)

S = TaskState
CONTRACTS = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(TaskState)


def test_terminal_states() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.UPSTREAM_FAILED} == TERMINAL
    assert TERMINAL - {S.SUCCEEDED} == DEAD


def test_terminal_states_have_no_way_out_except_a_manual_retry() -> None:
    """A retry queues a failed task, or a cancelled one (pending when it still waits on
    something); with dependents, the upstream_failed tasks below it wait again."""
    expected = {
        S.SUCCEEDED: set(),
        S.FAILED: {S.QUEUED},
        S.CANCELLED: {S.QUEUED, S.PENDING},
        S.UPSTREAM_FAILED: {S.PENDING},
    }
    assert {state: set(TRANSITIONS[state]) for state in TERMINAL} == expected


def test_no_state_transitions_to_itself() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets


def _documented_transitions() -> dict[TaskState, set[TaskState]]:
    """The table in docs/contracts.md ("## Task states"): `old -> new (note) | new ...` lines."""
    section = CONTRACTS.read_text().split("## Task states", 1)[1].split("\n## ", 1)[0]
    table: dict[TaskState, set[TaskState]] = {state: set() for state in TaskState}
    for line in section.splitlines():
        if "->" not in line:
            continue
        old, targets = (part.strip() for part in line.split("->", 1))
        table[S(old)] = {S(target.split("(")[0].strip()) for target in targets.split("|")}
    return table


def test_the_documented_table_is_the_one_the_code_enforces() -> None:
    assert _documented_transitions() == {state: set(targets) for state, targets in TRANSITIONS.items()}


def test_every_state_is_reachable_from_an_initial_state() -> None:
    seen = set(INITIAL)
    frontier = list(INITIAL)
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(TaskState)


async def _a_task_in(store: Store, state: TaskState) -> str:
    """A new task brought into `state` through the store's own operations."""
    if state is S.PENDING:
        return await submit(store, depends_on=[await submit(store, queue="parents")])
    if state is S.SCHEDULED:
        return await submit(store, delay_s=60)
    if state is S.CANCELLED:
        task_id = await submit(store)
        await store.cancel(task_id)
        return task_id
    if state is S.UPSTREAM_FAILED:
        parent = await submit(store, queue="parents", max_retries=0)
        child = await submit(store, depends_on=[parent])
        claimed = await claim_one(store, queues=["parents"])
        await store.complete("w1", [failed(claimed, retry=False)])
        return child
    task_id = await submit(store, queue=f"q-{state}")
    if state is S.QUEUED:
        return task_id
    claimed = await claim_one(store, queues=[f"q-{state}"])
    if state is S.SUCCEEDED:
        await store.complete("w1", [ok(claimed)])
    elif state is S.FAILED:
        await store.complete("w1", [failed(claimed, retry=False)])
    return task_id


@pytest.mark.parametrize("state", list(TaskState), ids=str)
async def test_can_transition_says_what_the_store_allows_by_hand(store: Store, state: TaskState) -> None:
    """Cancel (any state) and retry (terminal states) succeed exactly where the table allows."""
    await register(store, "w1")
    task_id = await _a_task_in(store, state)
    assert (await must_get(store, task_id)).state is state
    assert await _allowed(store.cancel(task_id)) == can_transition(state, S.CANCELLED)
    if state in TERMINAL:
        assert await _allowed(store.retry(task_id)) == can_transition(state, S.QUEUED)


async def _allowed(move: Awaitable[object]) -> bool:
    """True if the store made the move, False if it refused it as an illegal transition."""
    try:
        await move
    except Conflict:
        return False
    return True


# --------------------------------------------------------------------- static: the Lua source


def _lua_code(path: Path) -> list[str]:
    return [line.split("--", 1)[0] for line in path.read_text().splitlines()]


def test_only_set_state_writes_a_state() -> None:
    """Every state change goes through set_state, which checks it against the table."""
    writes = [
        (path.name, i)
        for path in sorted(LUA_DIR.glob("*.lua"))
        for i, line in enumerate(_lua_code(path), start=1)
        if re.search(r"\[R_STATE\]\s*=[^=]", line)
    ]
    # set_state's own write and create_task's "not created yet".
    assert [name for name, _ in writes] == ["_common.lua", "_common.lua"], writes
    common = (LUA_DIR / "_common.lua").read_text()
    assert re.search(r"local function set_state\(id, t, new\)\n.*\n    error\('illegal transition", common)


async def test_the_scripts_carry_the_transition_table(store: Store) -> None:
    table = await store.redis.eval(
        compile_lua(
            "local out = {} for move, _ in pairs(TRANSITIONS) do out[#out + 1] = move end return out"
        ),
        len(store.keys.script_keys),
        *store.keys.script_keys,
    )
    expected = {f">{s.value}" for s in INITIAL} | {
        f"{old.value}>{new.value}" for old, targets in TRANSITIONS.items() for new in targets
    }
    assert set(table) == expected


async def test_an_illegal_transition_raises_and_writes_nothing(store: Store) -> None:
    task_id = await submit(store)
    before = await store.redis.hget(store.keys.tasks, task_id)
    script = load_source("promote").replace(
        "local n = promote_due(tonumber(ARGV[1]))",
        "local t = get_task(ARGV[1]); set_state(ARGV[1], t, 'succeeded'); local n = 0",
    )
    with pytest.raises(ResponseError, match=r"illegal transition of task .*: queued -> succeeded"):
        await store.redis.eval(script, len(store.keys.script_keys), *store.keys.script_keys, task_id)
    assert await store.redis.hget(store.keys.tasks, task_id) == before


# --------------------------------------------------------------------- live: replay the events


async def _mixed_workload(store: Store, namespace: str) -> None:
    """Make the scripts perform every kind of transition at least once."""
    await register(store, "w1")
    parent, child, grandchild = spec(), spec(), spec()
    child.depends_on = [parent.id]  # type: ignore[list-item]
    grandchild.depends_on = [child.id]  # type: ignore[list-item]
    later = spec(depends_on=[parent.id], delay_s=30)  # pending, then scheduled
    dropped = spec(depends_on=[parent.id])
    dropped_id = (await submit_specs(store, [parent, child, grandchild, later, dropped]))[-1]
    await store.cancel(dropped_id)  # pending -> cancelled
    await store.retry(dropped_id)  # cancelled -> pending (its dependency has not run yet)
    await store.cancel(dropped_id)
    delayed = await submit(store, delay_s=0.05)  # scheduled
    await submit(store, depends_on=[delayed], max_retries=0)  # pending
    # pending -> queued / scheduled (parent succeeds) and queued -> running -> succeeded
    c = await claim_one(store)
    assert c.id == parent.id
    await store.complete("w1", [ok(c)])
    # running -> queued (retry, backoff 0), running -> failed, pending -> upstream_failed
    c = await claim_one(store)
    assert c.id == child.id
    await store.complete("w1", [failed(c)])
    c = await claim_one(store)
    await store.complete("w1", [failed(c, retry=False)])
    # failed -> queued (manual retry), queued -> cancelled
    await store.retry(child.id)
    await store.cancel(child.id)
    # cancelled -> queued and upstream_failed -> pending (the grandchild), then both dead again
    await store.retry_with_dependents(child.id, 10)  # type: ignore[arg-type]
    await store.cancel(child.id)
    # scheduled -> queued (promote), then running -> cancelled
    await asyncio.sleep(0.06)
    await store.promote_due()
    c = await claim_one(store)
    assert c.id == delayed
    await store.cancel(delayed)  # its pending dependent becomes upstream_failed
    # running -> scheduled (backoff > 0), scheduled -> cancelled
    async with other_store(namespace, backoff_base_s=100.0) as slow:
        t = await submit(slow)
        c = await claim_one(slow)
        await slow.complete("w1", [failed(c)])
        await slow.cancel(t)
    # running -> queued by hand-back, release and reap; running -> failed by reap
    for _ in range(3):
        await submit(store, max_retries=1)
    for how in ("hand_back", "release", "reap"):
        c = await claim_one(store, worker="w2")
        if how == "hand_back":
            await store.hand_back("w2", [c.id], "sigterm")
        elif how == "release":
            await store.release_worker("w2", "pod gone")
        else:
            await store.redis.zadd(store.keys.leases, {c.id: 0})  # its lease ran out long ago
            await store.reap_expired()


async def test_scripts_only_make_legal_transitions(store: Store, namespace: str) -> None:
    await _mixed_workload(store, namespace)
    events = await store.recent_events(count=1000)
    history: dict[str, list[TaskState]] = defaultdict(list)
    for event in events:
        if event["kind"] == "task":
            for task_id, state in event["changes"]:
                history[task_id].append(TaskState(state))
    assert history, "no task events recorded"
    moves: set[tuple[TaskState, TaskState]] = set()
    for task_id, states in history.items():
        assert states[0] in INITIAL, (task_id, states)
        for old, new in pairwise(states):
            assert can_transition(old, new), (task_id, states)
            moves.add((old, new))
    # The workload really exercised the table, not a corner of it.
    every_edge = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    missing = every_edge - moves
    assert missing == set(), f"the workload never made these transitions: {sorted(missing)}"


async def test_per_queue_counts_follow_every_transition(store: Store, namespace: str) -> None:
    """What the scripts keep per queue (running/scheduled ranges, ready counts by priority, the
    live-queue counts) equals what the task records themselves say."""
    await _mixed_workload(store, namespace)
    await submit(store, queue="mail", delay_s=60)
    await submit(store, queue="mail")
    await claim_one(store, queues=["mail"])
    truth: dict[str, Counter[str]] = defaultdict(Counter)
    depth: Counter[str] = Counter()
    unfinished: Counter[str] = Counter()
    async for _, raw in store.redis.hscan_iter(store.keys.tasks):
        r = record.decode(raw)
        truth[r["queue"]][r["state"]] += 1
        if r["state"] == "queued":
            depth[r["queue"] + record.MEMBER_SEP + r["priority"]] += 1
        if TaskState(r["state"]) not in TERMINAL:
            unfinished[r["queue"]] += 1
    stats = await store.queue_stats()
    counted = {q["name"]: {k: q[k] for k in ("running", "scheduled", "ready")} for q in stats}
    assert counted == {
        q: {"running": truth[q]["running"], "scheduled": truth[q]["scheduled"], "ready": truth[q]["queued"]}
        for q in counted
    }
    assert (
        counted["mail"] == {"running": 1, "scheduled": 1, "ready": 0} and sum(truth["default"].values()) > 0
    )
    assert {k: int(v) for k, v in (await store.redis.hgetall(store.keys.depth)).items()} == depth
    assert {k: int(v) for k, v in (await store.redis.hgetall(store.keys.live_queues)).items()} == unfinished


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_is_not_transient(state: TaskState) -> None:
    """No script moves a finished task on by itself: only a manual retry does (to these)."""
    assert not TRANSITIONS[state] - {S.QUEUED, S.PENDING}
