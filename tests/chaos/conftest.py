"""Fixtures of the chaos suite: scale (CI or CHAOS_LONG=1), the report, a chaos run per test."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaos.harness import ChaosRun
from chaos.report import Report

LONG = os.environ.get("CHAOS_LONG") == "1"


@dataclass(frozen=True)
class Scale:
    """Workload size and fault count: short for CI, long behind CHAOS_LONG=1."""

    tasks: int
    batch: int
    faults: int
    submit_s: float  # the submission is spread over this long, so faults strike while it goes on

    @property
    def pace_s(self) -> float:
        return self.submit_s / -(-self.tasks // self.batch)

    @property
    def fault_every_s(self) -> float:
        return self.submit_s / self.faults


@pytest.fixture(scope="session")
def scale() -> Scale:
    if LONG:
        return Scale(tasks=6000, batch=100, faults=20, submit_s=40.0)
    return Scale(tasks=400, batch=20, faults=4, submit_s=5.0)


_REPORT = Report()


@pytest.fixture(scope="session")
def report() -> Report:
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = _REPORT.write()
    if path is not None:
        terminalreporter.write_sep("-", f"chaos figures (also in {path})")
        terminalreporter.write_line(_REPORT.markdown())


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Seeded per test (CHAOS_SEED to replay a run); the seed is printed on failure."""
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(2**32)))
    print(f"CHAOS_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
def chaos(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[ChaosRun]:
    with ChaosRun(redis_url, namespace, tmp_path) as run:
        yield run
