"""The one schema Python and Lua share: key and channel names, the task record's fields and
the sorted-set members are the same on both sides, and no script spells a name itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shoal.core import record
from shoal.core.keys import CHANNELS, FIXED, OTHER, PER_ID, SCRIPT_PER_ID, Keys
from shoal.core.scripts import LUA_DIR, PLAIN_SCRIPTS, channel_name, compile_lua, lua_name
from shoal.core.states import TaskState

SAMPLE_IDS = ["0123abcd", "q.with:odd-chars_9", "7"]


async def _run(
    redis_url: str, keys: Keys, body: str, *args: object, extra_keys: tuple[str, ...] = ()
) -> list:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        all_keys = [*keys.script_keys, *extra_keys]
        return list(await redis.eval(compile_lua(body), len(all_keys), *all_keys, *args))
    finally:
        await redis.aclose()


async def test_the_prelude_names_what_keys_names(redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    fixed = [lua_name(attr) for attr, _ in FIXED]
    states = [f"K_STATE['{s.value}']" for s in TaskState]
    per_id = [lua_name(attr) for attr in SCRIPT_PER_ID]
    channels = [channel_name(attr) for attr, template in CHANNELS if "{}" not in template]
    body = "local out = {" + ", ".join(fixed + states + per_id + channels) + "}\n"
    body += "for _, id in ipairs(ARGV) do out[#out + 1] = C_WAKE(id) end\nreturn out\n"
    worker = keys.worker("w-1")
    got = await _run(redis_url, keys, body, *SAMPLE_IDS, extra_keys=(worker,))
    expected = [*keys.script_keys, *(keys.state(s.value) for s in TaskState), worker, keys.events_channel]
    expected += [keys.wake(q) for q in SAMPLE_IDS]
    assert got == expected
    assert all(name.startswith(keys.prefix + ":") for name in got)


def test_every_name_is_spelled_once() -> None:
    keys = Keys("ns")
    attrs = [attr for attr, _ in FIXED + PER_ID + OTHER]
    suffixes = [suffix for _, suffix in FIXED + PER_ID + OTHER]
    assert len(set(attrs)) == len(attrs) and len(set(suffixes)) == len(suffixes)
    assert keys.script_keys == [f"{{ns}}:{suffix}" for _, suffix in FIXED]
    assert {keys.state(s.value) for s in TaskState} <= set(keys.script_keys)


async def test_the_prelude_lays_out_records_and_members_as_python_does(
    redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace)
    fields = {name: f"v{i}" for i, name in enumerate(record.FIELDS)}
    fields.update(
        queue="mail", name="send", created="0064499ab1c2d", vseq="1764230000123456", rank_offset="-60000000"
    )
    order = ", ".join(f"R_{f.upper()}" for f in record.FIELDS)
    body = (
        "local t = {string.match(ARGV[1], R_PATTERN)}\n"
        "return {#t, table.concat(t, R_SEP), index_member(ARGV[2], t), ready_member(ARGV[2], t), "
        + order
        + "}\n"
    )
    # The helpers themselves, from the shared file: what the scripts really run.
    common = (LUA_DIR / "_common.lua").read_text()
    helpers = "\n".join(
        re.search(rf"local function {name}\(id, t\)\n.*?\nend\n", common, re.S).group(0)  # type: ignore[union-attr]
        for name in ("index_member", "ready_member")
    )
    raw = record.encode(fields)
    got = await _run(redis_url, keys, helpers + body, raw, "t1")
    count, rebuilt, index_member, ready_member, *order = got
    assert count == len(record.FIELDS) and rebuilt == raw
    assert record.decode(rebuilt) == fields
    assert index_member == record.index_member("mail", "send", "0064499ab1c2d", "t1")
    assert ready_member == record.ready_member("mail", 1764230000123456, -60000000, "t1")
    assert record.index_member_id(index_member) == record.ready_member_id(ready_member) == "t1"
    assert order == list(range(1, len(record.FIELDS) + 1))


def test_members_sort_in_the_order_they_promise() -> None:
    # Claim order: lower virtual time first, a priority offset moves a task ahead.
    early, late, urgent = (
        record.ready_member("q", v, off, i) for v, off, i in ((10, 0, "a"), (20, 0, "b"), (20, 15, "c"))
    )
    assert sorted([late, early, urgent]) == [urgent, early, late]
    # A queue's range holds only that queue, whatever other queues share its prefix.
    low, high = record.prefix_range("q" + record.MEMBER_SEP)
    others = [record.ready_member(q, 5, 0, "x") for q in ("q-2", "q.a", "qq", "p")]
    assert all(not (low[1:] <= m < high[1:]) for m in others)
    assert all(low[1:] <= m < high[1:] for m in (early, late, urgent))


@pytest.mark.parametrize("path", sorted(LUA_DIR.glob("*.lua")), ids=lambda p: p.name)
def test_no_script_spells_a_key_name(path: Path) -> None:
    """Key names come from the prelude only: no string literal holds a suffix of the schema."""
    code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
    suffixes = {suffix.split("{}")[0].rstrip(":") for _, suffix in FIXED + PER_ID + OTHER + CHANNELS}
    literals = re.findall(r"'([^']*)'", code)
    spelled = [
        lit for lit in literals if lit.strip(":").split(":")[0] in suffixes and (":" in lit or "{" in lit)
    ]
    assert spelled == [], f"{path.name}: key names spelled in Lua: {spelled}"
    if path.stem not in PLAIN_SCRIPTS:  # those get their keys one by one, each named in their header
        assert not re.search(r"\bKEYS\[", code), "KEYS[i] only through the prelude"
