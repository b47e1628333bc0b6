"""The key schema: the Lua prelude builds exactly the names `Keys` builds, and no script
spells a key name of its own."""

from __future__ import annotations

import re

import pytest
from redis.asyncio import Redis

from shoal.core.keys import CHANNELS, FIXED, PER_ID, Keys
from shoal.core.scripts import LUA_DIR, PLAIN_SCRIPTS, lua_name, lua_prelude

SAMPLE_IDS = ["0123abcd", "q.with:odd-chars_9", "7"]


async def test_the_prelude_builds_the_names_keys_builds(redis_url: str, namespace: str) -> None:
    keys = Keys(namespace)
    fixed = [lua_name(attr) for attr, _ in FIXED]
    per_id = [lua_name(attr) for attr, template in PER_ID + CHANNELS if "{}" in template]
    plain_channels = [lua_name(attr) for attr, template in CHANNELS if "{}" not in template]
    # The script returns every name the prelude binds, for each sample id.
    body = "local out = {" + ", ".join(fixed + plain_channels) + "}\n"
    body += "for _, id in ipairs(ARGV) do\n"
    body += "".join(f"  out[#out + 1] = {name}(id)\n" for name in per_id)
    body += "end\nreturn out\n"
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        got = await redis.eval(lua_prelude() + body, len(keys.script_keys), *keys.script_keys, *SAMPLE_IDS)
    finally:
        await redis.aclose()

    expected = list(keys.script_keys)
    expected += [getattr(keys, attr) for attr, template in CHANNELS if "{}" not in template]
    for ident in SAMPLE_IDS:
        expected += [getattr(keys, attr)(ident) for attr, template in PER_ID + CHANNELS if "{}" in template]
    assert got == expected
    assert all(name.startswith(keys.prefix + ":") for name in got)


def test_every_fixed_key_is_an_attribute_named_once() -> None:
    keys = Keys("ns")
    attrs = [attr for attr, _ in FIXED]
    suffixes = [suffix for _, suffix in FIXED]
    assert len(set(attrs)) == len(attrs) and len(set(suffixes)) == len(suffixes)
    assert keys.script_keys == [f"{{ns}}:{suffix}" for suffix in suffixes]


@pytest.mark.parametrize("path", sorted(LUA_DIR.glob("*.lua")), ids=lambda p: p.name)
def test_no_script_spells_a_key_name(path: object) -> None:
    """Key names come from the prelude only: no string literal that looks like a key suffix."""
    source = path.read_text()  # type: ignore[attr-defined]
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    suffixes = {suffix.split("{}")[0].rstrip(":") for _, suffix in FIXED + PER_ID + CHANNELS}
    literals = re.findall(r"'([^']*)'", code)
    spelled = [lit for lit in literals if lit.lstrip(":").split(":")[0] in suffixes and ":" in lit]
    assert spelled == [], f"{path}: key names spelled in Lua: {spelled}"
    assert not re.search(r"\bKEYS\[", code) or path.stem in PLAIN_SCRIPTS, "KEYS[i] only via the prelude"
