"""The task detail under AppTest: results of every JSON kind, and task text that must stay text.

A real scheduler on this test's Redis namespace; tasks end through the real store (a worker's
claim and complete), so the page reads exactly what the API answers.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from api_fixtures import *  # noqa: F403 - the api / api_factory fixtures
from dashboard_fixtures import *  # noqa: F403 - shoal, dashboard_without_sign_in
from dashboard_support import finish_tasks, no_exceptions, open_page
from shoal import Client, task_request
from shoal.dashboard.untrusted import displayed_text
from shoal.dashboard.values import FOLD_CHARS

# One task per kind of JSON value a task can return, and how the page names its kind.
LONG = "line\n" * (FOLD_CHARS // 4)
RESULTS: dict[str, tuple[Any, str]] = {
    "null": (None, "null"),
    "true": (True, "boolean"),
    "zero": (0, "number"),
    "float": (1.07, "number"),
    "negative": (-3, "number"),
    "string": ("ok", "string of 2 characters"),
    "empty string": ("", "string of 0 characters"),
    "markdown string": ("**not bold** [no link](http://127.0.0.1:9/x)", "string of 44 characters"),
    "empty list": ([], "list of 0 items"),
    "list": ([1, "two", None, False], "list of 4 items"),
    "empty object": ({}, "object of 0 keys"),
    "object": ({"a": 1, "nested": {"b": [1, 2]}}, "object of 2 keys"),
    "long string": (LONG, f"string of {len(LONG):,} characters"),
    "large list": (list(range(500)), "list of 500 items"),
}

EVIL = (
    "boom ![pixel](http://127.0.0.1:9/pixel.png) [click me](http://127.0.0.1:9/phish) "
    "**bold** :red[red] :material/home: $x^2$ <img src=x> www.example.com"
)
# Markdown that would be read as such: a link or image target, a directive, LaTeX, raw HTML.
MARKUP = ("](", ":red[", "$x", "<img", ":material/home:")

pytestmark = pytest.mark.usefixtures("dashboard_without_sign_in")


def _result_column(at: Any) -> Any:
    """The right-hand column of the Details tab, where the result is drawn."""
    return at.tabs[0].columns[1]


def test_every_kind_of_result_is_shown_by_an_element_that_can_draw_it(
    shoal: Client, redis_url: str, namespace: str
) -> None:
    ids = {kind: shoal.submit_request(task_request("echo"))["id"] for kind in RESULTS}
    finish_tasks(redis_url, namespace, results={ids[kind]: value for kind, (value, _) in RESULTS.items()})
    at = open_page("tasks")
    for kind, (value, named) in RESULTS.items():
        at.query_params["task"] = ids[kind]
        at.run()
        no_exceptions(at)
        column = _result_column(at)
        caption = column.caption[-1].value
        assert caption.split(" · ")[0] == named, kind
        if isinstance(value, str):
            # The string itself, character for character, in a box that never reads Markdown.
            (box,) = column.code
            assert (box.value, box.language) == (value, "plaintext"), kind
            assert not column.json
        elif isinstance(value, list | dict) and value:
            (tree,) = column.json
            assert json.loads(tree.value) == value, kind
            assert not column.code
        else:  # st.json cannot draw these: null, booleans, numbers, [] and {}
            (box,) = column.code
            shown = json.loads(box.value)
            assert shown == value and type(shown) is type(value), kind
            assert not column.json
    # Big values start folded; small ones open.
    at.query_params["task"] = ids["large list"]
    at.run()
    assert _result_column(at).json[0].proto.max_expand_depth == 1
    assert "folded" in _result_column(at).caption[-1].value
    at.query_params["task"] = ids["object"]
    at.run()
    assert _result_column(at).json[0].proto.max_expand_depth == 0
    at.query_params["task"] = ids["long string"]
    at.run()
    assert "scroll" in _result_column(at).caption[-1].value


def _markup_elements(at: Any) -> list[str]:
    """Every text the page passes to Streamlit's Markdown renderer."""
    kinds = ("markdown", "caption", "info", "warning", "success", "error", "subheader", "title")
    return [e.value for kind in kinds for e in at.get(kind)]


def test_a_task_error_with_markdown_is_shown_as_text(shoal: Client, redis_url: str, namespace: str) -> None:
    task = shoal.submit_request(task_request("fail", max_retries=0))
    finish_tasks(redis_url, namespace, errors={task["id"]: EVIL})
    at = open_page("tasks", {"task": task["id"]})
    no_exceptions(at)

    # The explanation quotes the error: the reader sees its exact characters ...
    why = next(e.value for e in at.error if "failed for good" in displayed_text(e.value))
    assert EVIL in displayed_text(why)
    # ... and nothing the Markdown renderer would turn into a link, image, colour or formula.
    for text in _markup_elements(at):
        unescaped = re.sub(r"\\.", "", text)  # what is left once escaped characters are taken out
        for markup in MARKUP:
            assert markup not in unescaped, (markup, text)
    # The Error tab holds the full message in a text box.
    assert EVIL in [c.value for c in at.tabs[1].code]


def test_names_and_ids_in_sentences_are_escaped(shoal: Client) -> None:
    # Names are [A-Za-z0-9_.:-]: enough for emphasis, shortcodes and a bare domain.
    task = shoal.submit_request(task_request("__bold__", queue="www.example.com"))
    at = open_page("tasks", {"task": task["id"]})
    no_exceptions(at)
    assert displayed_text(at.subheader[0].value).endswith("__bold__")
    assert "__bold__" not in at.subheader[0].value
    # st.badge is Markdown too: `:blue-badge[<label>]`.
    badge = next(m.value for m in at.markdown if m.value.startswith(":blue-badge[queue "))
    assert displayed_text(badge.removeprefix(":blue-badge[").removesuffix("]")) == "queue www.example.com"
    at = open_page("tasks", {"task": "no-such_task_"})
    no_exceptions(at)
    assert "There is no task no-such_task_ " in displayed_text(at.warning[0].value)
    assert "_task_" not in at.warning[0].value
