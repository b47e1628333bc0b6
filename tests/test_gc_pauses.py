"""Every garbage collection of the scheduler is timed (`shoal_gc_pause_seconds`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from shoal.scheduler.gc_pauses import watch_gc_pauses


@pytest.fixture
def watching() -> Iterator[None]:
    callbacks = list(gc.callbacks)
    watch_gc_pauses()
    watch_gc_pauses()  # idempotent: one callback, each collection counted once
    gc.disable()  # only the test's own collections run
    try:
        yield
    finally:
        gc.enable()
        gc.callbacks[:] = callbacks


def full_collections() -> float:
    return REGISTRY.get_sample_value("shoal_gc_pause_seconds_count", {"generation": "2"}) or 0.0


def test_each_collection_is_counted_once_with_its_wall_time(watching: None) -> None:
    before = full_collections()
    cycles = []
    for _ in range(20_000):  # garbage only the collector can free: reference cycles
        node: list[object] = []
        node.append(node)
        cycles.append(node)
    del cycles, node
    gc.collect()
    gc.collect()
    assert full_collections() == before + 2
    longest = REGISTRY.get_sample_value("shoal_gc_pause_longest_seconds")
    assert longest is not None and longest > 0
