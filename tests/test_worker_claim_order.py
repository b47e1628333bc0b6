"""Weighted queues: SHOAL_QUEUES parsing and the claim order (services/shoal/worker/claim_order.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from shoal.core.settings import WorkerSettings, parse_queue_weights
from shoal.worker.claim_order import ClaimOrder


def test_weights_default_to_one_and_keep_the_configured_order() -> None:
    assert parse_queue_weights(" critical=5, default=2 ,bulk,") == {"critical": 5, "default": 2, "bulk": 1}
    settings = WorkerSettings(queues="critical=5,default=2,bulk")
    assert settings.queue_list == ["critical", "default", "bulk"]
    assert settings.queue_weights == {"critical": 5, "default": 2, "bulk": 1}


def test_queue_names_may_contain_colons() -> None:
    assert parse_queue_weights("team:a=3,team:b") == {"team:a": 3, "team:b": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a=0", "the weight of 'a' must be a whole number, 1-1000"),
        ("a=1001", "the weight of 'a' must be a whole number, 1-1000"),
        ("a=2.5", "the weight of 'a' must be a whole number"),
        ("a=", "the weight of 'a' must be a whole number"),
        ("a=-1", "the weight of 'a' must be a whole number"),
        ("a,b,a=2", "'a' is listed twice"),
        ("bad queue", "'bad queue' is not a queue name"),
        ("=3", "'=3' is not a queue name"),
        (" , ", "at least one queue"),
    ],
)
def test_bad_queue_lists_are_refused_with_the_reason(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkerSettings(queues=value)


def test_each_queue_comes_first_exactly_its_weight_per_cycle() -> None:
    order = ClaimOrder({"critical": 5, "default": 2, "bulk": 1})
    firsts = [order.next()[0] for _ in range(8 * 10)]
    assert Counter(firsts) == {"critical": 50, "default": 20, "bulk": 10}
    for start in range(0, 80, 8):  # and in every cycle of sum(weights) claims, not just overall
        assert Counter(firsts[start : start + 8]) == {"critical": 5, "default": 2, "bulk": 1}


def test_a_heavy_queue_does_not_come_first_in_one_long_run() -> None:
    order = ClaimOrder({"a": 3, "b": 1})
    firsts = "".join(order.next()[0] for _ in range(12))
    assert firsts == "aaba" * 3  # b's turn comes within every cycle, not after a run of every a


def test_every_queue_is_in_every_order_after_the_first() -> None:
    order = ClaimOrder({"a": 1, "b": 4, "c": 2})
    for _ in range(14):
        queues = order.next()
        assert sorted(queues) == ["a", "b", "c"]
        first = queues[0]
        i = ["a", "b", "c"].index(first)
        assert queues == (["a", "b", "c"][i:] + ["a", "b", "c"][:i])


def test_equal_weights_rotate() -> None:
    order = ClaimOrder({"x": 1, "y": 1, "z": 1})
    assert [order.next() for _ in range(4)] == [
        ["x", "y", "z"],
        ["y", "z", "x"],
        ["z", "x", "y"],
        ["x", "y", "z"],
    ]


def test_no_queue_or_a_zero_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one queue"):
        ClaimOrder({})
    with pytest.raises(ValueError, match="weight >= 1"):
        ClaimOrder({"a": 0})
