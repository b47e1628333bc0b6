"""Flow rules and key templates (pure): what is accepted, what is refused and why."""

from __future__ import annotations

import pytest

from shoal.core.flow import FlowError, Rate, Rule, render_key, template_fields


def test_keys_render_from_keyword_and_positional_arguments() -> None:
    assert render_key("tenant:{tenant_id}", [], {"tenant_id": 42}) == "tenant:42"
    assert render_key("{0}/{region}", ["acme", 1], {"region": "eu"}) == "acme/eu"
    assert render_key("shared", [], {}) == "shared"


@pytest.mark.parametrize(
    ("template", "args", "kwargs", "message"),
    [
        ("tenant:{tenant_id}", [], {}, "needs keyword argument 'tenant_id'"),
        ("{2}", ["a"], {}, "needs positional argument 2"),
        ("{user.__class__}", [], {"user": "x"}, "must name an argument plainly"),
        ("{user[0]}", [], {"user": "x"}, "must name an argument plainly"),
        ("{user!r}", [], {"user": "x"}, "must name an argument plainly"),
        ("{user:>10}", [], {"user": "x"}, "must name an argument plainly"),
        ("{user}", [], {"user": {"id": 1}}, "must be a string or a number"),
        ("{user}", [], {"user": "a\nb"}, "without control characters"),
        ("{x}" * 3, [], {"x": "y" * 100}, "1-200 characters"),
        ("{unclosed", [], {}, "key template"),
    ],
)
def test_bad_templates_and_arguments_are_refused_with_the_reason(
    template: str, args: list[object], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(FlowError, match=message):
        render_key(template, args, kwargs)


def test_template_fields_are_listed() -> None:
    assert template_fields("t:{tenant}:{0}") == ["tenant", "0"]


def test_rules_check_their_scope_and_bounds() -> None:
    rule = Rule("key:tenant:42", concurrency=5, rate=Rate(10, 60), weight=3)
    assert (rule.kind, rule.target, rule.rate.period_ms if rule.rate else 0) == ("key", "tenant:42", 60_000)
    assert str(Rate(10, 60)) == "10 per 60 s"
    for scope, message in (
        ("tenant:42", "must be queue:<queue>"),
        ("queue:bad name", "queue must be"),
        ("key:", "flow key must be"),
    ):
        with pytest.raises(FlowError, match=message):
            Rule(scope, concurrency=1)
    with pytest.raises(FlowError, match="weight applies to flow keys only"):
        Rule("queue:q", weight=2)
    with pytest.raises(FlowError, match="rate limit must be"):
        Rate(0, 1)
    with pytest.raises(FlowError, match="rate period"):
        Rate(1, 0)
