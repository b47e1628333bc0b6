"""The charts' history kept by the scheduler: the leader's sample loop on real Redis, answered by
GET /api/v1/stats/history, and a new dashboard tab (AppTest) that starts with it drawn."""

from __future__ import annotations

import asyncio
import time

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer, work_once
from dashboard_fixtures import *  # noqa: F403 - shoal
from dashboard_support import no_exceptions, open_page
from shoal import Client, task_request
from shoal.core.samples import HISTORY_KEPT
from shoal.core.settings import Settings
from shoal.core.store import Store
from shoal.dashboard import live
from shoal.scheduler.loops import LeaderLoops


async def test_the_leader_keeps_samples_and_the_api_answers_them_oldest_first(
    api: ApiServer, client: Client, store: Store
) -> None:
    loops = LeaderLoops(store, Settings())  # not started: its sample loop's body is called by hand
    client.submit_batch([task_request("echo", queue="hist") for _ in range(3)])
    await loops._sample()
    await work_once(store, queues=("hist",))
    await loops._sample()
    # The test's scheduler leads too and takes its own samples (every 10 s): look for ours in order.
    samples = client.request("GET", "/api/v1/stats/history")["samples"]
    before = next(i for i, s in enumerate(samples) if s["state:queued"] == 3 and s.get("ready:hist") == 3)
    after = next(s for s in samples[before + 1 :] if s["state:succeeded"] == 3)
    assert after["state:queued"] == 0 and "ready:hist" not in after  # an emptied queue is not listed
    assert after["ok_per_s"] > 0 and after["ts"] > samples[before]["ts"]  # a rate from the change
    assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)  # oldest first
    one = client.request("GET", "/api/v1/stats/history", params={"limit": 1})["samples"]
    assert one == (await store.chart_samples(1))


async def test_samples_are_capped(store: Store) -> None:
    for i in range(HISTORY_KEPT + 5):
        await store.record_chart_sample({"ts": float(i)}, HISTORY_KEPT)
    kept = await store.chart_samples(HISTORY_KEPT + 5)
    assert [s["ts"] for s in kept] == [float(i) for i in range(5, HISTORY_KEPT + 5)]


async def test_a_new_tab_starts_with_the_schedulers_history(shoal: Client, store: Store) -> None:
    loops = LeaderLoops(store, Settings())
    shoal.submit_batch([task_request("echo", queue="hist") for _ in range(2)])
    await loops._sample()
    await loops._sample()
    history = await store.chart_samples(10)
    # The tab adds a sample of its own once one is due (one refresh interval after the newest):
    # on a fast machine the page opened before that, and the tab had nothing to add yet.
    await asyncio.sleep(max(0.0, history[-1]["ts"] + live.DEFAULT_INTERVAL_S - time.time()))
    at = open_page("overview")
    no_exceptions(at)
    series = list(at.session_state["_series"])
    # The scheduler's samples first (in order; its leader may have added one since), then the tab's.
    assert [s["ts"] for s in series[: len(history)]] == [s["ts"] for s in history]
    assert len(series) > len(history) and history[-1]["state:queued"] == 2
    assert series[-1]["ts"] > history[-1]["ts"]
