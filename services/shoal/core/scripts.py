"""Loads the Lua transition scripts once; each runs by SHA and reloads itself on NOSCRIPT.

Every script is the publish helper for its deployment (`publish_prelude`), the generated
prelude (`lua_prelude`: key names from `shoal.core.keys`, record fields and member formats
from `shoal.core.record`), then the shared helpers (`lua/_common.lua`, for scripts that change
state), then its own file, with the schema's names written in (`inline_constants`). On a Redis
Cluster events and wake-ups go out as shard messages (SPUBLISH), which stay on the namespace's
shard; elsewhere as plain PUBLISH (the only kind Redis 6.2 has).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from redis.commands.core import AsyncScript

from shoal.core import record
from shoal.core.keys import CHANNELS, FIXED, SCRIPT_PER_ID
from shoal.core.redis_client import AnyRedis
from shoal.core.states import INITIAL, TRANSITIONS, TaskState

LUA_DIR = Path(__file__).with_name("lua")
# Scripts that change state (prelude + _common.lua + their file).
SCRIPT_NAMES = (
    "submit", "claim", "complete", "heartbeat", "release", "reap", "promote", "cancel", "retry",
    "fanout", "trim",
)  # fmt: skip
# Scripts that change no task's state: prelude + their file (`list` reads; `publish` sends an
# event from Python: PUBLISH cannot go into a cluster pipeline; `progress` stores a running
# attempt's progress report, fenced, and publishes it).
# `audit` records who did an action, after it.
READ_SCRIPT_NAMES = ("list", "publish", "progress", "audit")
# Scripts that touch no task and get no prelude: each lists its own keys in KEYS (see its header).
PLAIN_SCRIPTS = (
    "leader_renew",
    "leader_release",
    "schedule_put",
    "schedule_advance",
    "schedule_pause",
    "schedule_delete",
)

# Edges (dependents released or cascaded) one script call handles at most; the rest waits in
# the `fanout` list for the next call. Measured with `python -m bench.scale`: a chunk of 200
# cost Redis 1.4x the CPU of an ordinary worker call (claim or complete of 200 tasks) in the
# same run; at 100, 0.96x (Redis CPU per call, both measured at load 11).
FANOUT_CHUNK = 100
# The dependencies' results a claim hands to one task (`results_to`) at most, as JSON bytes:
# a claim copies them into its reply, so they bound what one task adds to it.
MAX_DEPENDENCY_RESULTS_BYTES = 1_000_000


def lua_name(attr: str) -> str:
    """The Lua identifier of a key of the schema: `live_queues` -> `K_LIVE_QUEUES`."""
    return "K_" + attr.upper()


def channel_name(attr: str) -> str:
    """The Lua identifier of a channel of the schema: `wake` -> `C_WAKE`."""
    return "C_" + attr.removesuffix("_channel").upper()


def _lua_string(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in "'\\" else f"\\{ord(c)}" for c in text)
    return f"'{escaped}'"


@cache
def lua_constants() -> dict[str, str]:
    """Names the scripts use for the schema, and the Lua expression each stands for.

    They are written into the script text when it is loaded, not bound to locals: a Lua
    function that captures a local pays for it every time the script runs (Redis runs the
    whole file, defining every helper, on each call), and a key name or field number is
    used by nearly every helper."""
    out = {lua_name(attr): f"KEYS[{i}]" for i, (attr, _suffix) in enumerate(FIXED, start=1)}
    out["K_FIXED_COUNT"] = str(len(FIXED))
    for i, attr in enumerate(SCRIPT_PER_ID, start=len(FIXED) + 1):
        out[lua_name(attr)] = f"KEYS[{i}]"  # only when the caller passes it
    for i, field in enumerate(record.FIELDS, start=1):
        out[f"R_{field.upper()}"] = str(i)
    sep = record.SEP
    out["R_COUNT"] = str(len(record.FIELDS))
    out["R_SEP"] = _lua_string(sep)
    out["R_PATTERN"] = _lua_string("^" + f"([^{sep}]*){sep}" * (len(record.FIELDS) - 1) + "(.*)$")
    out["M_SEP"] = _lua_string(record.MEMBER_SEP)
    out["CREATED_HEX_DIGITS"] = str(record.CREATED_HEX_DIGITS)
    out["CREATED_FORMAT"] = f"'%0{record.CREATED_HEX_DIGITS}x'"
    out["READY_HEX_DIGITS"] = str(record.READY_HEX_DIGITS)
    out["READY_FORMAT"] = f"'%0{record.READY_HEX_DIGITS}x'"
    out["READY_OFFSET"] = str(record.READY_OFFSET)
    out["FANOUT_CHUNK"] = str(FANOUT_CHUNK)
    out["MAX_DEPENDENCY_RESULTS_BYTES"] = str(MAX_DEPENDENCY_RESULTS_BYTES)
    out["KEPT_ATTEMPT_LOGS"] = str(record.KEPT_ATTEMPT_LOGS)
    out["AUDIT_KEPT"] = str(record.AUDIT_KEPT)
    out["AUDIT_LOGGED_IDS"] = str(record.AUDIT_LOGGED_IDS)
    return out


_NAME = re.compile(r"\b[A-Z][A-Z0-9_]*\b")


def inline_constants(source: str) -> str:
    """`source` with every schema name of `lua_constants` replaced by what it stands for."""
    constants = lua_constants()
    return _NAME.sub(lambda m: constants.get(m.group(0), m.group(0)), source)


@cache
def lua_prelude() -> str:
    """The Lua the schema needs as values at run time: the per-state key tables, the legal
    transitions, the channel names (key names and record fields are inlined instead)."""
    lines = ["-- Generated by shoal.core.scripts from shoal.core.keys, .record and .states."]
    states = ", ".join(f"{s.value} = {lua_name('state_' + s.value)}" for s in TaskState)
    lines.append(f"local K_STATE = {{{states}}}")

    # The legal transitions (shoal.core.states) as 'old>new'; '' is "not created yet". set_state
    # checks every move against them (one flat table: the cheapest to build on every call).
    moves = [("", s) for s in INITIAL] + [
        (old, new) for old, targets in TRANSITIONS.items() for new in targets
    ]
    legal = ", ".join(f"['{old}>{new}'] = true" for old, new in sorted(moves))
    lines.append(f"local TRANSITIONS = {{{legal}}}")
    # Channels are not keys; their names share the namespace prefix of the keys.
    events_suffix = dict(FIXED)["events"]
    lines.append(f"local C_PREFIX = string.sub(K_EVENTS, 1, #K_EVENTS - {len(events_suffix) + 1})")
    for attr, template in CHANNELS:
        if "{}" in template:
            head, tail = template.split("{}")
            body = f"C_PREFIX .. {_lua_string(':' + head)} .. id"
            body += f" .. {_lua_string(tail)}" if tail else ""
            lines.append(f"local function {channel_name(attr)}(id) return {body} end")
        else:
            lines.append(f"local {channel_name(attr)} = C_PREFIX .. {_lua_string(':' + template)}")
    return "\n".join(lines) + "\n"


def publish_prelude(sharded: bool) -> str:
    """The one place that decides how scripts publish: `publish(channel, message)`."""
    command = "SPUBLISH" if sharded else "PUBLISH"
    return (
        "-- Prepended by scripts.py: shard channels on a Redis Cluster, plain channels elsewhere.\n"
        f"local function publish(channel, message) return redis.call('{command}', channel, message) end\n"
    )


def compile_lua(body: str, common: bool = False, sharded_pubsub: bool = False) -> str:
    """A runnable script: the publish helper, the prelude, the shared helpers when `common`,
    then `body`, with the schema's names inlined."""
    parts = [publish_prelude(sharded_pubsub), lua_prelude()]
    if common:
        parts.append((LUA_DIR / "_common.lua").read_text())
    parts.append(body)
    return inline_constants("\n".join(parts))


def load_source(name: str, sharded_pubsub: bool = False) -> str:
    """A state-changing script: the prelude, the shared helpers, then its own file."""
    return compile_lua((LUA_DIR / f"{name}.lua").read_text(), common=True, sharded_pubsub=sharded_pubsub)


def load_read_source(name: str, sharded_pubsub: bool = False) -> str:
    """A script that changes no task: the prelude, then its own file."""
    return compile_lua((LUA_DIR / f"{name}.lua").read_text(), sharded_pubsub=sharded_pubsub)


def load_plain(name: str) -> str:
    """A script of PLAIN_SCRIPTS: no prelude, no shared task helpers (the leader lock, schedules)."""
    if name not in PLAIN_SCRIPTS:
        raise ValueError(f"{name} is not a plain script")
    return (LUA_DIR / f"{name}.lua").read_text()


class Scripts:
    """One registered script per transition (redis-py's Script retries EVALSHA after NOSCRIPT)."""

    def __init__(self, redis: AnyRedis, sharded_pubsub: bool = False) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, redis.register_script(load_source(name, sharded_pubsub)))
        for name in READ_SCRIPT_NAMES:
            setattr(self, name, redis.register_script(load_read_source(name, sharded_pubsub)))

    submit: AsyncScript
    claim: AsyncScript
    complete: AsyncScript
    heartbeat: AsyncScript
    release: AsyncScript
    reap: AsyncScript
    promote: AsyncScript
    cancel: AsyncScript
    retry: AsyncScript
    fanout: AsyncScript
    trim: AsyncScript
    list: AsyncScript
    publish: AsyncScript
    progress: AsyncScript
    audit: AsyncScript
