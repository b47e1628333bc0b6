"""The scaling policy on its own: worked cases, then properties over generated loads."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.scheduler.scaling.policy import Recommendation, ScalingDecision, ScalingInput, decide


def load(ready: int = 0, running: int = 0, current: int = 0, **kw: object) -> ScalingInput:
    base: dict[str, object] = {"concurrency": 32, "min_replicas": 0, "max_replicas": 10}
    base.update(kw)
    return ScalingInput(ready_by_queue={"default": ready}, running=running, current=current, **base)  # type: ignore[arg-type]


def run_steps(
    inp: ScalingInput, steps: int, interval: float = 5.0, start: float = 1000.0
) -> list[ScalingDecision]:
    """Apply each decision, as a backend would, and decide again `interval` seconds later."""
    decisions = []
    for i in range(steps):
        decision = decide(inp, start + i * interval)
        decisions.append(decision)
        inp = replace(inp, current=decision.desired, recent=decision.recent)
    return decisions


# (name, input, expected desired, expected direction, words the reason must contain)
CASES = [
    (
        "backlog capped at max",
        load(ready=312, running=40, current=6, max_replicas=10, max_step_up=10),
        10,
        "up",
        ["312 ready + 40 running need 11 workers of 32 slots", "capped at max 10", "6 -> 10"],
    ),
    (
        "scale up bounded by the step",
        load(ready=312, running=40, current=2, max_step_up=4),
        6,
        "up",
        ["need 11 workers", "2 -> 6", "at most +4"],
    ),
    (
        "activation from zero with one ready task",
        load(ready=1, current=0),
        1,
        "up",
        ["1 ready + 0 running need 1 worker of 32 slots", "activating from zero"],
    ),
    (
        "idle pool at zero stays at zero",
        load(current=0),
        0,
        "hold",
        ["0 ready + 0 running need 0 workers", "at 0"],
    ),
    ("min is kept while idle", load(current=2, min_replicas=2), 2, "hold", ["kept at min 2"]),
    ("below min goes straight to min", load(current=0, min_replicas=6), 6, "up", ["0 is below min 6"]),
    ("above max goes straight to max", load(ready=1000, current=15), 10, "down", ["above max 10"]),
    ("exact fit does not round up", load(ready=64, current=2), 2, "hold", ["need 2 workers", "at 2"]),
    ("one more task needs one more worker", load(ready=65, current=2), 3, "up", ["need 3 workers"]),
    (
        "arrivals keep more tasks in flight than run now",
        load(running=10, current=1, arrival_rate_per_s=20.0, mean_run_time_s=4.0),
        3,
        "up",
        ["~80 in flight (20/s x 4s run time, 10 running now)", "need 3 workers"],
    ),
    (
        "a trickle keeping less than one task busy does not pin a worker",
        load(current=0, arrival_rate_per_s=0.2, mean_run_time_s=2.0),
        0,
        "hold",
        ["0 ready + 0 running need 0 workers"],
    ),
    (
        "steady stream is not counted twice",
        load(running=80, current=3, arrival_rate_per_s=20.0, mean_run_time_s=4.0),
        3,
        "hold",
        ["0 ready + 80 running need 3 workers"],
    ),
    (
        "scheduled tasks due soon count as ready",
        load(ready=10, scheduled_due_soon=30, current=1),
        2,
        "up",
        ["10 ready + 30 due soon + 0 running need 2 workers"],
    ),
    (
        "need fell but was higher within the window: hold",
        load(ready=0, current=5, recent=(Recommendation(980.0, 5),)),
        5,
        "hold",
        ["holding 5: 5 workers needed within the last 60s"],
    ),
    (
        "need fell long ago: scale down one step",
        load(ready=0, current=5, recent=(Recommendation(900.0, 5), Recommendation(990.0, 0))),
        4,
        "down",
        ["scaling down 5 -> 4", "at most -1"],
    ),
    (
        "scale down only to the window's highest need",
        load(
            ready=0, current=6, max_step_down=5, recent=(Recommendation(900.0, 6), Recommendation(980.0, 4))
        ),
        4,
        "down",
        ["6 -> 4 (4 workers needed within the last 60s)"],
    ),
    ("no window: scale in at once", load(current=4, scale_down_window_s=0.0), 3, "down", ["4 -> 3"]),
    (
        "first decision of a new leader waits a window before scaling in",
        load(ready=0, current=4),
        4,
        "hold",
        ["holding 4"],
    ),
    (
        "manual change is respected during the hold",
        load(ready=1000, current=2, manual_change_at=900.0, manual_hold_s=300.0),
        2,
        "hold",
        ["need 32 workers", "keeping 2 set outside Shoal 100s ago for 200s more"],
    ),
    (
        "after the hold the policy resumes",
        load(ready=1000, current=2, manual_change_at=600.0, manual_hold_s=300.0),
        6,
        "up",
        ["2 -> 6"],
    ),
    (
        "several queues add up",
        ScalingInput(ready_by_queue={"a": 40, "b": 30}, running=0, current=1, concurrency=32),
        3,
        "up",
        ["70 ready + 0 running need 3 workers"],
    ),
]


@pytest.mark.parametrize(
    ("inp", "desired", "direction", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_worked_cases(inp: ScalingInput, desired: int, direction: str, words: list[str]) -> None:
    decision = decide(inp, now=1000.0)
    assert (decision.desired, decision.direction) == (desired, direction), decision.reason
    for word in words:
        assert word in decision.reason
    assert decision.current == inp.current


def test_manual_hold_is_flagged_and_serialised() -> None:
    decision = decide(load(ready=5, current=3, manual_change_at=990.0), now=1000.0)
    assert decision.manual_hold
    as_dict = decision.to_dict()
    assert as_dict == {
        "ts": 1000.0,
        "current": 3,
        "desired": 3,
        "needed": 1,
        "direction": "hold",
        "reason": decision.reason,
        "manual_hold": True,
    }


def test_load_drop_scales_in_only_after_the_window() -> None:
    busy = load(ready=300, current=0, max_step_up=10, scale_down_window_s=60.0)
    decisions = run_steps(busy, steps=3)
    assert [d.desired for d in decisions] == [10, 10, 10]
    idle = replace(busy, ready_by_queue={"default": 0}, current=10, recent=decisions[-1].recent)
    later = run_steps(idle, steps=40, start=1015.0)
    # The last busy recommendation was at t=1010: the first worker goes once it is a full
    # window old, at t=1070, then one per decision.
    assert all(d.desired == 10 for d in later if d.at < 1070.0)
    first_down = next(d for d in later if d.direction == "down")
    assert first_down.at == 1070.0
    assert [d.desired for d in later if d.direction == "down"] == list(range(9, -1, -1))
    assert [d.desired for d in later[-10:]] == [0] * 10


def test_window_state_stays_small_with_a_tiny_interval() -> None:
    inp = load(ready=0, current=0, scale_down_window_s=86_400.0)
    decisions = run_steps(inp, steps=500, interval=0.01)
    assert len(decisions[-1].recent) <= 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("running", -1, "running must be >= 0"),
        ("concurrency", 0, "concurrency must be >= 1"),
        ("max_replicas", 0, "max_replicas must be >= 1"),
        ("min_replicas", 11, "min_replicas (11) exceeds max_replicas (10)"),
        ("arrival_rate_per_s", math.nan, "arrival_rate_per_s must be a finite number"),
        ("ready_by_queue", {"q": -3}, "ready_by_queue['q'] must be >= 0"),
        ("max_step_down", 0, "max_step_down must be >= 1"),
    ],
)
def test_bad_input_is_refused_clearly(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        replace(load(), **{field: value})


def test_bad_time_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be a finite number"):
        decide(load(), now=math.inf)


# --- properties over generated loads -----------------------------------------------------------

limits = st.integers(min_value=1, max_value=40).flatmap(
    lambda mx: st.tuples(st.integers(min_value=0, max_value=mx), st.just(mx))
)
loads = st.builds(
    lambda lim, ready, running, current, conc, rate, run_s, up, down, window: ScalingInput(
        ready_by_queue={"default": ready},
        running=running,
        current=current,
        concurrency=conc,
        min_replicas=lim[0],
        max_replicas=lim[1],
        arrival_rate_per_s=rate,
        mean_run_time_s=run_s,
        max_step_up=up,
        max_step_down=down,
        scale_down_window_s=window,
    ),
    limits,
    st.integers(0, 100_000),
    st.integers(0, 5_000),
    st.integers(0, 60),
    st.integers(1, 256),
    st.floats(0, 1000, allow_nan=False),
    st.floats(0, 600, allow_nan=False),
    st.integers(1, 10),
    st.integers(1, 10),
    st.sampled_from([0.0, 5.0, 30.0, 60.0, 300.0]),
)


@given(loads, st.floats(0, 1e9, allow_nan=False))
def test_never_above_max_nor_below_min(inp: ScalingInput, now: float) -> None:
    decision = decide(inp, now)
    assert inp.min_replicas <= decision.desired <= inp.max_replicas
    assert decision.direction == (
        "up"
        if decision.desired > decision.current
        else "down"
        if decision.desired < decision.current
        else "hold"
    )


@given(loads)
def test_activation_from_zero(inp: ScalingInput) -> None:
    inp = replace(inp, current=0, ready_by_queue={"default": max(1, sum(inp.ready_by_queue.values()))})
    assert decide(inp, 50.0).desired >= 1


@given(loads)
@settings(max_examples=150)
def test_constant_load_never_oscillates(inp: ScalingInput) -> None:
    decisions = run_steps(inp, steps=120)
    desired = [inp.current] + [d.desired for d in decisions]
    moves = [b - a for a, b in itertools.pairwise(desired) if b != a]
    # Once it moves one way it never moves back: at most one direction over the whole run.
    assert all(m > 0 for m in moves) or all(m < 0 for m in moves)
    # And it settles: the last ten decisions are all the same.
    assert len(set(desired[-10:])) == 1


@given(loads)
def test_scale_up_reaches_the_need_within_a_bounded_number_of_intervals(inp: ScalingInput) -> None:
    first = decide(inp, 0.0)
    target = min(max(first.needed, inp.min_replicas), inp.max_replicas)
    if target <= inp.current:
        return
    bound = math.ceil((target - inp.current) / inp.max_step_up)
    decisions = run_steps(inp, steps=bound)
    assert decisions[-1].desired == target
    assert all(d.direction != "down" for d in decisions)


@given(loads, st.integers(0, 100_000))
def test_scale_up_is_never_delayed_by_the_window(inp: ScalingInput, burst: int) -> None:
    """A burst right after a busy period is met at once, whatever the window holds."""
    settled = run_steps(inp, steps=5)[-1]
    burst_inp = replace(
        inp, current=settled.desired, recent=settled.recent, ready_by_queue={"default": burst}
    )
    decision = decide(burst_inp, 1000.0 + 5 * 5.0)
    target = min(max(decision.needed, inp.min_replicas), inp.max_replicas)
    if target > settled.desired:
        assert decision.desired == min(target, settled.desired + inp.max_step_up)
