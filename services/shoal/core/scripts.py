"""The Lua transition scripts: one library of Redis Functions, or one script each on Redis 6.2.

Every script is the publish helper for its deployment (`publish_prelude`), the generated
prelude (`lua_prelude`: key names from `shoal.core.keys`, record fields and member formats
from `shoal.core.record`), then the shared helpers (`lua/_common.lua`, for scripts that change
state), then its own file, with the schema's names written in (`inline_constants`). On a Redis
Cluster events and wake-ups go out as shard messages (SPUBLISH), which stay on the namespace's
shard; elsewhere as plain PUBLISH (the only kind Redis 6.2 has).

Where the server has Redis Functions (Redis 7.0+, Valkey), all of them are one library
(`library_source`), loaded once per server (FUNCTION LOAD, which also reaches replicas and
persists) and called with FCALL: the prelude and the shared helpers are defined when the
library loads instead of on every call (that was about a third of a single-task submit's
instructions). Elsewhere each script runs by EVALSHA. `TransitionScript` hides which.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from shoal.core import record
from shoal.core.keys import CHANNELS, FIXED, SCRIPT_PER_ID
from shoal.core.redis_client import AnyRedis, SyncRedis
from shoal.core.states import INITIAL, TRANSITIONS, TaskState

log = logging.getLogger(__name__)

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
# Read scripts that write nothing: as functions they are flagged so (they run on a replica
# and when the server is out of memory, as the script does).
NO_WRITES = ("list",)
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
def lua_prelude(library: bool = False) -> str:
    """The Lua the schema needs as values at run time: the per-state key tables, the legal
    transitions, the channel names (key names and record fields are inlined instead).

    `bind(keys, argv)` starts every call: KEYS and ARGV are locals of the chunk (a function of
    a library gets them as arguments, a script as globals) and the names made from them."""
    lines = ["-- Generated by shoal.core.scripts from shoal.core.keys, .record and .states."]
    lines.append("local KEYS, ARGV" if library else "local KEYS, ARGV = KEYS, ARGV")
    lines.append("local K_STATE, C_PREFIX")

    # The legal transitions (shoal.core.states) as 'old>new'; '' is "not created yet". set_state
    # checks every move against them (one flat table: the cheapest to build on every call).
    moves = [("", s) for s in INITIAL] + [
        (old, new) for old, targets in TRANSITIONS.items() for new in targets
    ]
    legal = ", ".join(f"['{old}>{new}'] = true" for old, new in sorted(moves))
    lines.append(f"local TRANSITIONS = {{{legal}}}")
    # Channels are not keys; their names share the namespace prefix of the keys.
    events_suffix = dict(FIXED)["events"]
    named = []
    for attr, template in CHANNELS:
        if "{}" in template:
            head, tail = template.split("{}")
            body = f"C_PREFIX .. {_lua_string(':' + head)} .. id"
            body += f" .. {_lua_string(tail)}" if tail else ""
            lines.append(f"local function {channel_name(attr)}(id) return {body} end")
        else:
            lines.append(f"local {channel_name(attr)}")
            named.append(f"  {channel_name(attr)} = C_PREFIX .. {_lua_string(':' + template)}")
    states = ", ".join(f"{s.value} = {lua_name('state_' + s.value)}" for s in TaskState)
    lines += [
        "local function bind(keys, argv, place)",
        "  if place then keys = place(keys) end  -- only the keys the script uses: at their places",
        "  KEYS, ARGV = keys, argv",
        f"  K_STATE = {{{states}}}",
        f"  C_PREFIX = string.sub(K_EVENTS, 1, #K_EVENTS - {len(events_suffix) + 1})",
        *named,
        "end",
    ]
    return "\n".join(lines) + "\n"


def publish_prelude(sharded: bool) -> str:
    """The one place that decides how scripts publish: `publish(channel, message)`."""
    command = "SPUBLISH" if sharded else "PUBLISH"
    return (
        "-- Prepended by scripts.py: shard channels on a Redis Cluster, plain channels elsewhere.\n"
        f"local function publish(channel, message) return redis.call('{command}', channel, message) end\n"
    )


def compile_lua(
    body: str, common: bool = False, sharded_pubsub: bool = False, layout: Sequence[int] | None = None
) -> str:
    """A runnable script: the publish helper, the prelude, the shared helpers when `common`,
    then `body`, with the schema's names inlined. `layout`: the script gets only these keys of
    FIXED (0-based positions, `key_layout`), else all of them."""
    parts = [publish_prelude(sharded_pubsub), lua_prelude()]
    if common:
        parts.append((LUA_DIR / "_common.lua").read_text())
    parts.append(f"bind(KEYS, ARGV{_lua_layout(layout)})" + ("\nbegin()" if common else ""))
    parts.append(body)
    return inline_constants("\n".join(parts))


def _lua_layout(layout: Sequence[int] | None) -> str:
    """`, place` for bind: a function that puts the keys passed (those of `layout`, then the
    worker's) at their places in FIXED, in one table constructor (sized once: the cheapest)."""
    if layout is None:
        return ""
    at = {pos: j for j, pos in enumerate(layout, start=1)}
    slots = [f"k[{at[i]}]" if i in at else "nil" for i in range(len(FIXED))]
    slots += [f"k[{len(layout) + 1 + j}]" for j in range(len(SCRIPT_PER_ID))]
    return ", function(k) return {" + ", ".join(slots) + "} end"


_HELPER = re.compile(r"^local function (\w+)\(", re.M)
_KEY_NAME = re.compile(r"\bK_[A-Z0-9_]+\b")
_WORD = re.compile(r"\b\w+\b")


@cache
def _common_helpers() -> dict[str, str]:
    """Each top-level function of _common.lua -> its text (up to the next one)."""
    text = (LUA_DIR / "_common.lua").read_text()
    starts = [(m.start(), m.group(1)) for m in _HELPER.finditer(text)]
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return {name: text[start:end] for (start, name), end in zip(starts, ends, strict=True)}


@cache
def key_layout(name: str) -> tuple[int, ...]:
    """The positions in FIXED of the keys script `name` may touch: every K_ name in its file
    and in the helpers of _common.lua it mentions (and those they mention), K_STATE standing
    for every state's index, K_EVENTS for the channels' prefix. A script call costs per key
    it passes (about 1,400 instructions each, whether the script uses it or not), so each
    passes only these. Mentions are read from the text, so the set can only be too large."""
    helpers = _common_helpers() if name in SCRIPT_NAMES else {}
    texts, seen = [(LUA_DIR / f"{name}.lua").read_text()], set()
    i = 0
    while i < len(texts):
        for word in _WORD.findall(texts[i]):
            if word in helpers and word not in seen:
                seen.add(word)
                texts.append(helpers[word])
        i += 1
    names = {m for text in texts for m in _KEY_NAME.findall(text)} | {lua_name("events")}
    if "K_STATE" in names:
        names |= {lua_name(f"state_{s.value}") for s in TaskState}
    return tuple(i for i, (attr, _) in enumerate(FIXED) if lua_name(attr) in names)


_LIBRARY_NAME = "__LIBRARY__"  # stands for the library's name until its text is known


@cache
def library_source(sharded_pubsub: bool = False) -> tuple[str, str]:
    """(name, code) of the library of Redis Functions that holds every script of SCRIPT_NAMES
    and READ_SCRIPT_NAMES: the prelude and the shared helpers once, then each script's file
    as the body of a function `<name>_<script>`, which binds its call and (if it changes
    state) begins it first, as a script's own prelude does.

    The name is `shoal_` and a hash of the code: versions of Shoal that share a server (a
    rolling upgrade) each call their own library."""
    common = (LUA_DIR / "_common.lua").read_text()
    parts = [publish_prelude(sharded_pubsub), lua_prelude(library=True), common]
    for name in (*SCRIPT_NAMES, *READ_SCRIPT_NAMES):
        parts.append(f"local place_{name} = {_lua_layout(key_layout(name))[2:]}")
        start = f"bind(keys, args, place_{name})" + (" begin()" if name in SCRIPT_NAMES else "")
        flags = ", flags = {'no-writes'}" if name in NO_WRITES else ""
        parts += [
            f"local function run_{name}()",
            (LUA_DIR / f"{name}.lua").read_text(),
            "end",
            f"redis.register_function{{function_name = '{_LIBRARY_NAME}_{name}',",
            f"  callback = function(keys, args) {start} return run_{name}() end{flags}}}",
        ]
    code = inline_constants("\n".join(parts))
    library = "shoal_" + hashlib.sha1(code.encode()).hexdigest()[:16]
    return library, f"#!lua name={library}\n" + code.replace(_LIBRARY_NAME, library)


def load_source(name: str, sharded_pubsub: bool = False) -> str:
    """A state-changing script: the prelude, the shared helpers, then its own file."""
    body = (LUA_DIR / f"{name}.lua").read_text()
    return compile_lua(body, common=True, sharded_pubsub=sharded_pubsub, layout=key_layout(name))


def load_read_source(name: str, sharded_pubsub: bool = False) -> str:
    """A script that changes no task: the prelude, then its own file."""
    body = (LUA_DIR / f"{name}.lua").read_text()
    return compile_lua(body, sharded_pubsub=sharded_pubsub, layout=key_layout(name))


def select_keys(layout: Sequence[int], keys: Sequence[str]) -> list[str]:
    """Of a namespace's `keys` (FIXED in order, then the worker's key if any), those of `layout`."""
    return [keys[i] for i in layout] + list(keys[len(FIXED) :])


def load_plain(name: str) -> str:
    """A script of PLAIN_SCRIPTS: no prelude, no shared task helpers (the leader lock, schedules)."""
    if name not in PLAIN_SCRIPTS:
        raise ValueError(f"{name} is not a plain script")
    return (LUA_DIR / f"{name}.lua").read_text()


def _is_missing(exc: ResponseError) -> bool:
    """The server does not have what was called (a flushed or new node), or this user may not
    call functions: load it (or turn to EVALSHA) and call again."""
    text = str(exc).lower()
    return (
        isinstance(exc, NoScriptError)
        or "function not found" in text
        or (isinstance(exc, NoPermissionError) and "fcall" in text)
        or _no_functions(exc)
    )


def _no_functions(exc: ResponseError) -> bool:
    """FUNCTION LOAD refused because the server has no functions (Redis 6.2): scripts then run
    by EVALSHA, as before functions."""
    return "unknown command" in str(exc).lower()


# Loading is the scheduler's alone (shoal.core.acl): a library is replaced by its name, so a
# role that may load one could change the code every other role runs. A role that may not
# calls the library the scheduler loaded, and turns to EVALSHA for good if it finds none.
_MAY_NOT_LOAD = (
    "this user may not load the scripts as functions: it calls those the scheduler loads "
    "(EVALSHA while none is there)"
)
_TURNED = "the scripts' library is not on the server and this process does not load it: EVALSHA for %d s"
FUNCTIONS_AGAIN_S = 30  # how long a process that may not load the library runs EVALSHA when it finds none


class Library:
    """Whether the server runs the scripts as functions (decided on first use, by loading them)."""

    def __init__(self, redis: AnyRedis, sharded_pubsub: bool, may_load: bool = True) -> None:
        self.redis = redis
        self.name, self.code = library_source(sharded_pubsub)
        # None: not known yet (one that may not load calls FCALL until the server says no)
        self.functions: bool | None = None if may_load else True
        self.may_load = may_load
        self._again_at: float | None = None  # when to try FCALL again (one that may not load)
        self._lock = asyncio.Lock()

    def refused(self, exc: ResponseError) -> None:
        """A call met `exc` (one `_is_missing` accepts): a server without functions is one for good."""
        if _no_functions(exc):
            self.functions, self._again_at = False, None

    async def ready(self) -> bool:
        """Whether calls go out as FCALL; loads the library on first use."""
        if self._again_at is not None and time.monotonic() >= self._again_at:
            self.functions, self._again_at = True, None
        if self.functions is None:
            async with self._lock:
                if self.functions is None:
                    try:
                        await self.load()
                    except NoPermissionError:
                        log.info(_MAY_NOT_LOAD)
                        self.may_load = False
                    except ResponseError as exc:
                        if not _no_functions(exc):
                            raise
                        log.info("Redis Functions unavailable (%s): the scripts run by EVALSHA", exc)
                        self.functions = False
                        return False
                    self.functions = True
        return self.functions

    async def recover(self) -> None:
        """After a call found the library missing: load it again, or turn to EVALSHA for a while."""
        if self.functions and self.may_load:
            await self.load()
        elif self.functions:
            log.warning(_TURNED, FUNCTIONS_AGAIN_S)
            self.functions, self._again_at = False, time.monotonic() + FUNCTIONS_AGAIN_S

    async def load(self) -> None:
        """FUNCTION LOAD, unless the server has it already (the name says its exact code; the
        server checks the name before it compiles anything)."""
        try:
            await self.redis.function_load(self.code)
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise


class TransitionScript:
    """One script of the library: `await script(keys=..., args=...)`, or `command(keys, args)`
    in a pipeline (after `await script.ready()`; on `missing(error)`, `await script.reload()`)."""

    def __init__(self, library: Library, name: str, source: str) -> None:
        self.library = library
        self.name = name
        self.function = f"{library.name}_{name}"
        self.script = source  # the same script for EVALSHA
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.layout = key_layout(name)
        self._selected: tuple[Sequence[str], list[str]] = ((), [])

    def select(self, keys: Sequence[str]) -> list[str]:
        """The keys this script is passed, of the namespace's (`select_keys`)."""
        known, selected = self._selected
        if keys is not known:  # a store passes the same list each time
            selected = select_keys(self.layout, keys)
            self._selected = (keys, selected)
        return selected

    async def ready(self) -> None:
        await self.library.ready()

    def head(self) -> tuple[str, str]:
        """FCALL and the function's name, or EVALSHA and the script's SHA (after `ready`)."""
        return ("FCALL", self.function) if self.library.functions else ("EVALSHA", self.sha)

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The call's arguments for `execute_command` (FCALL or EVALSHA, as the library decided),
        `keys` being the namespace's (FIXED in order, then the worker's key if any)."""
        passed = self.select(keys)
        return (*self.head(), len(passed), *passed, *args)

    def missing(self, exc: ResponseError) -> bool:
        """Whether `exc` means: `reload` and call again."""
        if not _is_missing(exc):
            return False
        self.library.refused(exc)
        return True

    async def reload(self) -> None:
        """After `missing`: the library loaded again, or this script (then by EVALSHA)."""
        if self.library.functions:
            await self.library.recover()
        if not self.library.functions:
            await self.library.redis.script_load(self.script)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        await self.ready()
        try:
            return await self.library.redis.execute_command(*self.command(keys, args))
        except ResponseError as exc:
            if not self.missing(exc):
                raise
        await self.reload()
        return await self.library.redis.execute_command(*self.command(keys, args))


class SyncTransitionScript:
    """`TransitionScript` on a synchronous client (the SDK's direct transport submits with one)."""

    def __init__(self, redis: SyncRedis, name: str, sharded_pubsub: bool = False) -> None:
        self.redis = redis
        self.library, self.code = library_source(sharded_pubsub)
        self.function = f"{self.library}_{name}"
        self.script = (load_source if name in SCRIPT_NAMES else load_read_source)(name, sharded_pubsub)
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()
        self.layout = key_layout(name)
        self.functions: bool | None = None
        self.may_load = True
        self._lock = threading.Lock()

    def _load(self) -> None:
        try:
            self.redis.function_load(self.code)
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    def ready(self) -> bool:
        """Whether calls go out as FCALL; loads the library on first use."""
        with self._lock:
            if self.functions is None:
                try:
                    self._load()
                except NoPermissionError:
                    log.info(_MAY_NOT_LOAD)
                    self.may_load = False
                except ResponseError as exc:
                    if not _no_functions(exc):
                        raise
                    log.info("Redis Functions unavailable (%s): the scripts run by EVALSHA", exc)
                    self.functions = False
                    return False
                self.functions = True
            return self.functions

    def head(self) -> tuple[str, str]:
        return ("FCALL", self.function) if self.ready() else ("EVALSHA", self.sha)

    def missing(self, exc: ResponseError) -> bool:
        """Whether `exc` means: `reload` and call again."""
        if not _is_missing(exc):
            return False
        if _no_functions(exc):
            self.functions = False
        return True

    def reload(self) -> None:
        """After `missing`: the library loaded again, or this script (then by EVALSHA)."""
        if self.ready() and self.may_load:
            self._load()
        elif self.functions:
            log.warning(_TURNED)
            self.functions = False
        if not self.functions:
            self.redis.script_load(self.script)

    def select(self, keys: Sequence[str]) -> list[str]:
        return select_keys(self.layout, keys)

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        passed = self.select(keys)
        try:
            return self.redis.execute_command(*self.head(), len(passed), *passed, *args)
        except ResponseError as exc:
            if not self.missing(exc):
                raise
        self.reload()  # the head may have turned from FCALL to EVALSHA
        return self.redis.execute_command(*self.head(), len(passed), *passed, *args)


class Scripts:
    """Every transition script, called as a function of one library or by EVALSHA."""

    def __init__(self, redis: AnyRedis, sharded_pubsub: bool = False, load_library: bool = True) -> None:
        """`load_library`: False for a process whose Redis user may not load it (a worker)."""
        self.library = Library(redis, sharded_pubsub, may_load=load_library)
        for name in SCRIPT_NAMES:
            setattr(self, name, TransitionScript(self.library, name, load_source(name, sharded_pubsub)))
        for name in READ_SCRIPT_NAMES:
            setattr(self, name, TransitionScript(self.library, name, load_read_source(name, sharded_pubsub)))

    submit: TransitionScript
    claim: TransitionScript
    complete: TransitionScript
    heartbeat: TransitionScript
    release: TransitionScript
    reap: TransitionScript
    promote: TransitionScript
    cancel: TransitionScript
    retry: TransitionScript
    fanout: TransitionScript
    trim: TransitionScript
    list: TransitionScript
    publish: TransitionScript
    progress: TransitionScript
    audit: TransitionScript
