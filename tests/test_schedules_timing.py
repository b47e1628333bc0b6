"""Schedule tick arithmetic (pure): cron in a timezone across DST, intervals, misfire decisions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shoal.core.schedules import (
    Schedule,
    ScheduleDefinition,
    ScheduleError,
    Timing,
    decide,
    definition_from_schedule,
    describe,
    tick_idempotency_key,
)

BERLIN = ZoneInfo("Europe/Berlin")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def local(ms_value: int, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromtimestamp(ms_value / 1000, tz)


def test_cron_is_read_in_its_timezone() -> None:
    timing = Timing("30 2 * * *", None, "Europe/Berlin")
    start = ms(datetime(2026, 1, 10, 12, 0, tzinfo=BERLIN))
    ticks = timing.upcoming(start, start, 3)
    assert [local(t).strftime("%d %H:%M") for t in ticks] == ["11 02:30", "12 02:30", "13 02:30"]
    # 02:30 in Berlin in winter is 01:30 UTC.
    assert local(ticks[0], ZoneInfo("UTC")).hour == 1


def test_cron_across_the_spring_dst_gap_runs_once_after_the_gap() -> None:
    # On 2026-03-29 Berlin clocks jump from 02:00 to 03:00: 02:30 does not exist that day.
    timing = Timing("30 2 * * *", None, "Europe/Berlin")
    start = ms(datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    ticks = [local(t) for t in timing.upcoming(start, start, 3)]
    assert [t.strftime("%d %H:%M") for t in ticks] == ["29 03:00", "30 02:30", "31 02:30"]


def test_hourly_cron_across_the_autumn_dst_change_keeps_every_real_hour() -> None:
    # On 2026-10-25 Berlin's 02:00-03:00 happens twice; an hourly job runs in both.
    timing = Timing("0 * * * *", None, "Europe/Berlin")
    start = ms(datetime(2026, 10, 25, 0, 30, tzinfo=BERLIN))
    ticks = timing.upcoming(start, start, 4)
    gaps = {b - a for a, b in itertools.pairwise(ticks)}
    assert gaps == {3_600_000}, "ticks one real hour apart through the repeated hour"


def test_six_field_cron_ticks_by_the_second_and_macros_work() -> None:
    assert Timing("*/2 * * * * *", None).next_after(10_001, 0) == 12_000
    daily = Timing("@daily", None, "UTC")
    start = ms(datetime(2026, 5, 1, 13, 0, tzinfo=UTC))
    assert local(daily.next_after(start, 0), ZoneInfo("UTC")) == datetime(2026, 5, 2, tzinfo=UTC)


def test_interval_ticks_count_from_the_anchor() -> None:
    timing = Timing(None, 10.0)
    assert timing.next_after(5_000, 1_000) == 11_000
    assert timing.next_after(11_000, 1_000) == 21_000  # strictly after
    assert timing.next_after(0, 1_000) == 1_000
    assert timing.latest_at_or_before(20_999, 1_000) == 11_000
    assert timing.latest_at_or_before(21_000, 1_000) == 21_000
    assert timing.latest_at_or_before(500, 1_000) is None


def test_cron_latest_tick_includes_the_instant_itself() -> None:
    timing = Timing("*/5 * * * *", None)
    on_tick = ms(datetime(2026, 1, 1, 0, 10, tzinfo=UTC))
    assert timing.latest_at_or_before(on_tick, 0) == on_tick
    assert timing.latest_at_or_before(on_tick - 1, 0) == on_tick - 300_000


def test_a_tick_within_the_grace_fires_as_usual() -> None:
    d = decide(Timing(None, 10.0), due_ms=30_000, now_ms=34_000, anchor_ms=0, misfire="skip", grace_s=5)
    assert (d.fire, d.next_run, d.missed) == (30_000, 40_000, 0)


def test_misfire_skip_enqueues_nothing_for_ticks_missed_past_the_grace() -> None:
    # Ticks at 0, 10, 20, 30 s were more than 5 s late at 40.5 s; 40 s is still on time.
    d = decide(Timing(None, 10.0), due_ms=0, now_ms=40_500, anchor_ms=0, misfire="skip", grace_s=5)
    assert d.fire is None
    assert d.missed == 4
    assert d.next_run == 40_000, "the on-time tick after the missed ones runs normally"
    assert d.note is not None and "skip" in d.note


def test_misfire_run_once_enqueues_the_latest_missed_tick_once() -> None:
    d = decide(Timing(None, 10.0), due_ms=0, now_ms=46_000, anchor_ms=0, misfire="run_once", grace_s=5)
    assert (d.fire, d.missed, d.next_run) == (40_000, 5, 50_000)


def test_missed_ticks_are_counted_up_to_a_bound() -> None:
    d = decide(Timing("* * * * *", None), due_ms=0, now_ms=10**9, anchor_ms=0, misfire="skip", grace_s=0)
    assert d.missed == 1000
    assert d.note is not None and "at least 1000" in d.note


def test_tick_keys_name_the_schedule_and_the_tick() -> None:
    assert tick_idempotency_key("nightly", 1_700_000_000_000) == "schedule:nightly:1700000000000"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "* * *"}, "Wrong number of fields"),
        ({"cron": "* * * * *", "every_s": 5}, "exactly one"),
        ({}, "exactly one"),
        ({"every_s": 0.1}, "every_s"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"cron": "* * * * *", "misfire": "catch_up"}, "misfire"),
    ],
)
def test_bad_timings_are_refused_with_a_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        ScheduleDefinition(id="s", task="noop", **fields).validate()  # type: ignore[arg-type]


def test_code_declarations_become_definitions_with_the_task_name_as_id() -> None:
    first = definition_from_schedule("report", "0 2 * * *")
    second = definition_from_schedule("report", Schedule(every_s=60, kwargs={"x": 1}), index=1)
    assert (first.id, first.cron, first.source) == ("report", "0 2 * * *", "code")
    assert (second.id, second.every_s, second.kwargs) == ("report.1", 60, {"x": 1})
    assert first.digest() != second.digest()
    assert first.digest() == definition_from_schedule("report", "0 2 * * *").digest()


def test_descriptions_read_as_words() -> None:
    assert (
        describe("30 2 * * 1-5", None, "Europe/Berlin") == "At 02:30 on Monday through Friday (Europe/Berlin)"
    )
    assert describe(None, 300, "UTC") == "Every 5 minutes"
    assert describe(None, 90, "UTC") == "Every 90 seconds"
