"""Loads the Lua transition scripts once; each runs by SHA and reloads itself on NOSCRIPT."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

LUA_DIR = Path(__file__).with_name("lua")
SCRIPT_NAMES = ("submit", "claim", "complete", "heartbeat", "release", "reap", "promote", "cancel", "retry")


def load_source(name: str) -> str:
    """The script body with the shared helpers prepended."""
    common = (LUA_DIR / "_common.lua").read_text()
    return common + "\n" + (LUA_DIR / f"{name}.lua").read_text()


def load_plain(name: str) -> str:
    """A script that does not use the shared task helpers (e.g. the leader lock)."""
    return (LUA_DIR / f"{name}.lua").read_text()


class Scripts:
    """One registered script per transition (redis-py's Script retries EVALSHA after NOSCRIPT)."""

    def __init__(self, redis: Redis) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, redis.register_script(load_source(name)))

    submit: AsyncScript
    claim: AsyncScript
    complete: AsyncScript
    heartbeat: AsyncScript
    release: AsyncScript
    reap: AsyncScript
    promote: AsyncScript
    cancel: AsyncScript
    retry: AsyncScript
