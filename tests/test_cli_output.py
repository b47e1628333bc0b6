"""What the CLI prints for people: task data never sends control sequences to the terminal."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from shoal.cli_output import Output, field

HOSTILE = "boom \x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m\x08\x9b"


def _printed(as_json: bool, show: Callable[[Output], None]) -> str:
    out = io.StringIO()
    show(Output(as_json, out))
    return out.getvalue()


def test_tables_records_and_blocks_carry_no_control_character() -> None:
    for show in (
        lambda o: o.table([{"error": HOSTILE}], [field("error")], ""),
        lambda o: o.record([("error", HOSTILE)]),
        lambda o: o.block("traceback", f"line 1\n{HOSTILE}\n\tline 3"),
        lambda o: o.generic([HOSTILE]),
    ):
        text = _printed(False, show)
        assert not any(not c.isprintable() and c not in "\n\t" for c in text), repr(text)
        assert "boom ?]0;owned??[2J?[31mred?[0m??" in text


def test_json_keeps_the_exact_text() -> None:
    text = _printed(True, lambda o: o.json({"error": HOSTILE}))
    assert "\x1b" not in text  # JSON escapes it
    assert json.loads(text)["error"] == HOSTILE
