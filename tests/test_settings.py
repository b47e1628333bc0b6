"""Configuration refuses what cannot work: unknown `SHOAL_*` names, values that do not fit
together, and settings read anywhere but from the one `Settings` a service is given.
(tests/test_settings_reference.py checks that every settings class is a group of `Settings` and
that every `SHOAL_*` name the code mentions is documented, hence known.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.core.env_check import known_variables, unknown_variables, variable_names
from shoal.core.settings import Settings, SettingsError, TaskSettings, load_settings
from shoal.scheduler.operator import build_operator
from store_helpers import other_store

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "services" / "shoal"
KNOWN = known_variables(Settings.GROUPS)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without the SHOAL_* variables of the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("SHOAL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_a_typo_is_refused_naming_the_closest_valid_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHOAL_HEARTBAET_S", "1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems[0] == (
        "SHOAL_HEARTBAET_S is not a Shoal setting; did you mean SHOAL_HEARTBEAT_S?"
    )
    assert "SHOAL_UNKNOWN_SETTINGS=warn" in str(caught.value)


def test_warn_mode_starts_and_keeps_the_warning_for_the_log(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHOAL_CONCURENCY", "8")
    clean_env.setenv("SHOAL_UNKNOWN_SETTINGS", "warn")
    settings = load_settings()
    assert settings.warnings == ["SHOAL_CONCURENCY is not a Shoal setting; did you mean SHOAL_CONCURRENCY?"]
    assert settings.worker.concurrency == 32  # the typo changed nothing


def test_a_name_far_from_every_setting_points_at_the_list() -> None:
    (problem,) = unknown_variables({"SHOAL_ZZZ": "1", "PATH": "/bin"}, KNOWN)
    assert problem == "SHOAL_ZZZ is not a Shoal setting (docs/contracts.md lists the valid names)"


def test_every_field_of_every_group_is_a_valid_name(clean_env: pytest.MonkeyPatch) -> None:
    """Derived from the classes: a setting added to any group is known without a list to update."""
    for name, group in Settings.GROUPS.items():
        fields = variable_names(group)
        assert fields and fields <= KNOWN, name
        assert len(fields) == len(group.model_fields)
    assert "SHOAL_LEADER_RENEW_DEADLINE_S" in KNOWN and "SHOAL_HTTP_KEEP_ALIVE_S" in KNOWN


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"lease_s": 2, "heartbeat_s": 1.5},
            "SHOAL_HEARTBEAT_S (1.5) must be at most half of SHOAL_LEASE_S (2)",
        ),
        (
            {"heartbeat_s": 2, "worker_ttl_s": 3},
            "SHOAL_WORKER_TTL_S (3) must be at least twice SHOAL_HEARTBEAT_S (2)",
        ),
        (
            {"backoff_base_s": 30, "backoff_max_s": 10},
            "SHOAL_BACKOFF_BASE_S (30) must not exceed SHOAL_BACKOFF_MAX_S (10)",
        ),
    ],
)
def test_values_that_do_not_fit_together_are_refused(
    clean_env: pytest.MonkeyPatch, values: dict[str, float], message: str
) -> None:
    for name, value in values.items():
        clean_env.setenv(f"SHOAL_{name.upper()}", str(value))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith(message), problem
    TaskSettings(lease_s=2, heartbeat_s=1, worker_ttl_s=2, backoff_base_s=10, backoff_max_s=10)  # the edges


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**base, "SHOAL_REDIS_URL": "redis://127.0.0.1:1/0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("service", "argv"),
    [
        ("worker", [sys.executable, "-m", "shoal.worker"]),
        ("scheduler", [sys.executable, "-m", "shoal.scheduler", "--port", "0"]),
        ("scheduler", [sys.executable, "-m", "uvicorn", "shoal.scheduler.main:app", "--port", "0"]),
    ],
    ids=["worker", "scheduler", "scheduler-under-uvicorn"],
)
def test_a_service_with_a_typo_does_not_start(service: str, argv: list[str]) -> None:
    result = _run(argv, SHOAL_HEARTBAET_S="1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"shoal {service}: invalid configuration: "
        "SHOAL_HEARTBAET_S is not a Shoal setting; did you mean SHOAL_HEARTBEAT_S?"
    ), result.stderr
    assert "Traceback" not in result.stderr


async def test_the_operator_uses_the_settings_it_is_given_not_the_environment(
    namespace: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SHOAL_SCALER_BACKEND", "kubernetes")  # would need a cluster if it were read
    clean_env.setenv("SHOAL_LEADER_ELECTION", "kubernetes")
    settings = Settings()
    settings.scaling = settings.scaling.model_copy(update={"scaler_backend": "none"})
    settings.kube = settings.kube.model_copy(update={"leader_election": "redis"})
    async with other_store(namespace) as store:
        operator = build_operator(store, settings)
        try:
            assert operator.autoscaler.backend.name == "none"
            assert operator.kube is None
        finally:
            await operator.stop()
