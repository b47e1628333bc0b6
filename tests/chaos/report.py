"""The figures the chaos tests measure, collected per run and published as a table.

Each test adds one `Row`; at the end of the session the rows are written to
`run/chaos-report.json` (or $CHAOS_REPORT) and printed as the Markdown table that
docs/reliability.md shows.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("run") / "chaos-report.json"


@dataclass
class Row:
    case: str  # the test function
    fault: str
    tasks: int  # acknowledged tasks checked
    lost: int
    duplicates: int
    figures: dict[str, Any] = field(default_factory=dict)  # recovery times and other measurements

    @property
    def command(self) -> str:
        return f"make chaos PYTEST_ARGS='-k {self.case}'"


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def write(self) -> Path | None:
        if not self.rows:
            return None
        path = Path(os.environ.get("CHAOS_REPORT", DEFAULT_PATH))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{**asdict(r), "command": r.command} for r in self.rows], indent=2))
        return path

    def markdown(self) -> str:
        lines = [
            "| fault | tasks | lost | duplicates | figures | reproduce |",
            "|---|---:|---:|---:|---|---|",
        ]
        for r in self.rows:
            figures = "; ".join(f"{k} {_fmt(v)}" for k, v in r.figures.items())
            lines.append(f"| {r.fault} | {r.tasks} | {r.lost} | {r.duplicates} | {figures} | `{r.command}` |")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {v}" for k, v in value.items()) + ")"
    return str(value)
