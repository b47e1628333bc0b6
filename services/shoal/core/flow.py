"""Flow control rules: concurrency and rate limits on a queue, a task name or a flow key, and
the flow key of a task rendered from a template over its arguments.

A *scope* names what a rule limits: `queue:<queue>`, `name:<task name>` or `key:<flow key>`.
A rule has an optional concurrency limit (tasks of the scope running at once, across all
workers) and an optional rate (starts per period, in any sliding window of the period),
and, for keys, a weight in the round robin of a queue's keys. The claim script enforces
them; see docs/flow-control.md.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.core.settings import NAME_PATTERN

SCOPE_KINDS = ("queue", "name", "key")
MAX_KEY_CHARS = 200
MAX_CONCURRENCY = 1_000_000
MAX_RATE = 100_000  # starts per period: the sliding window keeps one entry per start
MAX_PERIOD_S = 86_400.0
MIN_PERIOD_S = 0.001
MAX_WEIGHT = 1000
KEY_PATTERN = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_FIELD = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|\d{1,3})$")


class FlowError(ValueError):
    """A rule or key template that cannot work; the message says why."""


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` starts in any window of `period_s` seconds."""

    limit: int
    period_s: float

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_RATE:
            raise FlowError(f"a rate limit must be 1-{MAX_RATE} starts per period")
        if not MIN_PERIOD_S <= self.period_s <= MAX_PERIOD_S:
            raise FlowError(f"a rate period must be {MIN_PERIOD_S:g}-{MAX_PERIOD_S:g} seconds")

    @property
    def period_ms(self) -> int:
        return max(1, round(self.period_s * 1000))

    def __str__(self) -> str:
        return f"{self.limit} per {self.period_s:g} s"


@dataclass(frozen=True, slots=True)
class Rule:
    """The limits of one scope. None: no limit of that kind."""

    scope: str
    concurrency: int | None = None
    rate: Rate | None = None
    weight: int = 1

    def __post_init__(self) -> None:
        check_scope(self.scope)
        if self.concurrency is not None and not 0 <= self.concurrency <= MAX_CONCURRENCY:
            raise FlowError(f"concurrency must be 0-{MAX_CONCURRENCY} (0 holds every task of the scope)")
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise FlowError(f"weight must be 1-{MAX_WEIGHT}")
        if self.weight != 1 and not self.scope.startswith("key:"):
            raise FlowError("a weight applies to flow keys only (key:<key>)")

    @property
    def kind(self) -> str:
        return self.scope.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.scope.split(":", 1)[1]


def check_scope(scope: str) -> str:
    kind, sep, target = scope.partition(":")
    if not sep or kind not in SCOPE_KINDS:
        raise FlowError(f"scope {scope!r} must be queue:<queue>, name:<task name> or key:<flow key>")
    if kind == "key":
        check_key(target)
    elif not NAME_PATTERN.match(target):
        raise FlowError(f"scope {scope!r}: {kind} must be 1-128 of [A-Za-z0-9_.:-]")
    return scope


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise FlowError(f"a flow key must be 1-{MAX_KEY_CHARS} characters without control characters")
    return key


def template_fields(template: str) -> list[str]:
    """The argument names (or positions) a key template uses; FlowError for anything else.

    Only plain fields are allowed (`{tenant_id}`, `{0}`): no attribute or index access and no
    conversions, so a template can never reach into an argument's object graph.
    """
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FlowError(f"key template {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not _FIELD.match(field) or spec or conversion:
            raise FlowError(
                f"key template {template!r}: {{{field}}} must name an argument plainly "
                "(a keyword like {tenant_id} or a position like {0})"
            )
        fields.append(field)
    return fields


def render_key(template: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The flow key of a task from a template over its arguments: `"tenant:{tenant_id}"` with
    kwargs {"tenant_id": 42} is `tenant:42`. A template without fields is the key itself."""
    values: dict[str, str] = {}
    for field in template_fields(template):
        if field.isdigit():
            index = int(field)
            if index >= len(args):
                raise FlowError(f"key template {template!r} needs positional argument {index}")
            value = args[index]
        elif field in kwargs:
            value = kwargs[field]
        else:
            raise FlowError(f"key template {template!r} needs keyword argument {field!r}")
        if not isinstance(value, str | int | float):
            raise FlowError(f"key template {template!r}: argument {field!r} must be a string or a number")
        values[field] = str(value)
    out: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return check_key("".join(out))
