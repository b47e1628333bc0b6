"""The task state machine: the TRANSITIONS table, and that the Lua scripts only make legal moves.

Two checks of the scripts: a static one that reads every literal transition out of the
.lua files, and a live one that drives a mixed workload through the real store and replays
the per-task state sequence from the event stream against the table.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable
from itertools import pairwise
from pathlib import Path

import pytest

from shoal.core.errors import Conflict
from shoal.core.scripts import LUA_DIR
from shoal.core.states import DEAD, TERMINAL, TRANSITIONS, TaskState, can_transition
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
INITIAL = {S.PENDING, S.SCHEDULED, S.QUEUED, S.UPSTREAM_FAILED}


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(TaskState)


def test_terminal_states() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.UPSTREAM_FAILED} == TERMINAL
    assert TERMINAL - {S.SUCCEEDED} == DEAD


def test_terminal_states_have_no_way_out_except_manual_retry_of_failed() -> None:
    for state in TERMINAL:
        expected = {S.QUEUED} if state is S.FAILED else set()
        assert set(TRANSITIONS[state]) == expected, state


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

# A call of one of the helpers that move a task: set_state(id, old, new), note_state(id, old, new),
# enqueue(id, old, ...),
# schedule(id, old, ...). Definitions (`local function ...`) are skipped.
_CALL = re.compile(r"\b(set_state|note_state|enqueue|schedule)\(\s*\w+\s*,\s*([^,)]+)(?:,\s*([^,)]+))?")
_TARGET = {"enqueue": "queued", "schedule": "scheduled"}


def _script_moves() -> list[tuple[str, str, str]]:
    """(file, old, new) for every move in the scripts; old is a literal state, 'nil' or a variable."""
    moves = []
    for path in sorted(LUA_DIR.glob("*.lua")):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("local function"):
                continue
            for func, old, third in _CALL.findall(line):
                new = _TARGET.get(func) or third.strip().strip("'")
                if (old.strip(), new) == ("old", "new"):
                    continue  # a helper forwarding its own arguments (set_state -> note_state)
                moves.append((path.name, old.strip().strip("'"), new))
    return moves


def test_every_transition_in_the_scripts_is_legal() -> None:
    moves = _script_moves()
    # 19 moves once the retry-or-fail logic became one helper; fewer means the parser broke.
    assert len(moves) >= 19, "the parser found too few moves; were the helpers renamed?"
    states = {s.value for s in TaskState}
    for file, old, new in moves:
        assert new in states, (file, old, new)
        if old in states:
            assert can_transition(S(old), S(new)), (file, old, new)
        elif old == "nil":  # a new task: only submit creates tasks, in an initial state
            assert file == "submit.lua" and S(new) in INITIAL, (file, old, new)
        else:  # a variable old state: the helpers' own parameter, or cancel's non-terminal state
            assert (file, old) in {("_common.lua", "old"), ("cancel.lua", "state")}, (file, old, new)
            if file == "cancel.lua":
                assert new == "cancelled"
                assert all(S.CANCELLED in TRANSITIONS[s] for s in TaskState if s not in TERMINAL)


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
    """The running/scheduled counts the scripts keep per queue equal the state indexes."""
    await _mixed_workload(store, namespace)
    await submit(store, queue="mail", delay_s=60)
    await submit(store, queue="mail")
    await claim_one(store, queues=["mail"])
    truth: dict[str, Counter[str]] = defaultdict(Counter)
    for state in ("running", "scheduled"):
        for task_id in await store.redis.zrange(store.keys.state(state), 0, -1):
            truth[await store.redis.hget(store.keys.task(task_id), "queue")][state] += 1
    counted = {
        q["name"]: {"running": q["running"], "scheduled": q["scheduled"]} for q in await store.queue_stats()
    }
    assert counted == {
        q: {"running": truth[q]["running"], "scheduled": truth[q]["scheduled"]} for q in counted
    }
    assert counted["mail"] == {"running": 1, "scheduled": 1} and sum(truth["default"].values()) > 0


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_is_not_transient(state: TaskState) -> None:
    assert not TRANSITIONS[state] - {S.QUEUED}
