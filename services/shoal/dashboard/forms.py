"""Checks the Submit form's fields before anything is sent, with messages a person can act on."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shoal.core.settings import NAME_PATTERN

_ID_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class FormError:
    field: str
    message: str


def parse_json_field(text: str, field: str, kind: type) -> tuple[Any, FormError | None]:
    """Parse `text` as JSON of type `kind` (list or dict); blank means empty."""
    empty = kind()
    if not text.strip():
        return empty, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return empty, FormError(
            field, f"{field} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})."
        )
    if not isinstance(value, kind):
        expected = 'a JSON list, e.g. [1, "two"]' if kind is list else 'a JSON object, e.g. {"key": 1}'
        return empty, FormError(field, f"{field} must be {expected}; got {type(value).__name__}.")
    return value, None


def parse_ids(text: str) -> tuple[list[str], FormError | None]:
    """Task ids separated by commas, spaces or new lines."""
    ids = [part for part in _ID_SPLIT.split(text.strip()) if part]
    bad = [i for i in ids if not NAME_PATTERN.match(i)]
    if bad:
        return [], FormError("depends_on", f"Not a task id: {', '.join(repr(b) for b in bad[:3])}.")
    return list(dict.fromkeys(ids)), None


def build_task(
    *,
    name: str,
    args_text: str,
    kwargs_text: str,
    queue: str,
    priority: int,
    depends_text: str,
    delay_s: float,
    max_retries: int | None,
    timeout_s: float | None,
) -> tuple[dict[str, Any] | None, list[FormError]]:
    """The TaskCreate body for the form's values, or the list of what is wrong with them."""
    errors: list[FormError] = []
    if not name or not NAME_PATTERN.match(name):
        errors.append(FormError("name", "Pick a task name (letters, digits and _ . : - only)."))
    if not NAME_PATTERN.match(queue or ""):
        errors.append(FormError("queue", "Queue must be 1-128 of letters, digits and _ . : -"))
    if not -100 <= priority <= 100:
        errors.append(FormError("priority", "Priority must be between -100 and 100."))
    if delay_s < 0:
        errors.append(FormError("delay_s", "Delay cannot be negative."))
    args, error = parse_json_field(args_text, "args", list)
    if error:
        errors.append(error)
    kwargs, error = parse_json_field(kwargs_text, "kwargs", dict)
    if error:
        errors.append(error)
    depends_on, error = parse_ids(depends_text)
    if error:
        errors.append(error)
    if errors:
        return None, errors
    body: dict[str, Any] = {
        "name": name,
        "args": args,
        "kwargs": kwargs,
        "queue": queue,
        "priority": priority,
        "depends_on": depends_on,
    }
    if delay_s:
        body["delay_s"] = float(delay_s)
    if max_retries is not None:
        body["max_retries"] = max_retries
    if timeout_s is not None:
        body["timeout_s"] = float(timeout_s)
    return body, []
