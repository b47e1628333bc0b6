"""Shoal's Prometheus alerts: valid rules, and each one fires when it should and only then.

The rules are taken from the PrometheusRule the chart renders (ci/monitoring-values.yaml), then
`promtool check rules` validates them and `promtool test rules` replays metric series through
Prometheus' own rule engine. The metric names must be the ones docs/contracts.md promises.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from tests.helm_render import CHART, NAMESPACE, render

ROOT = Path(__file__).resolve().parents[1]
TEAM = {"team": "platform"}  # monitoring-values.yaml adds it to every alert
SEL = f'namespace="{NAMESPACE}"'
METRIC_MODULES = (
    "shoal.scheduler.metrics",
    "shoal.scheduler.scaling.autoscaler",
    "shoal.scheduler.supervisor",
    "shoal.worker.metrics",
)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; scripts/install-test-tools.sh)")
    return path


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rule = render([CHART / "ci" / "monitoring-values.yaml"]).one("PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "shoal-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def _rules(rules_file: Path) -> list[dict[str, Any]]:
    return [r for group in yaml.safe_load(rules_file.read_text())["groups"] for r in group["rules"]]


def _contract_metrics() -> set[str]:
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    section = contracts.split("## Metric names", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\b(shoal_[a-z0-9_]+)", section))


def _metrics_in(expr: str) -> set[str]:
    names = set(re.findall(r"\b(shoal_[a-z0-9_]+)", expr))
    # Histogram series carry a suffix the contract leaves implicit.
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_promtool_accepts_the_rules(rules_file: Path) -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_alerts_cover_the_required_conditions(rules_file: Path) -> None:
    rules = {r["alert"]: r for r in _rules(rules_file)}
    assert {
        "ShoalQueueBacklogGrowing",
        "ShoalNoWorkers",
        "ShoalTaskFailureRateHigh",
        "ShoalLeaderMissing",
        "ShoalSchedulerLoopFailing",
    } <= set(rules)
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["labels"]["team"] == "platform"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alerts_and_dashboard_use_only_contract_metrics(rules_file: Path) -> None:
    known = _contract_metrics()
    assert "shoal_queue_depth" in known
    used = set().union(*(_metrics_in(r["expr"]) for r in _rules(rules_file)))
    assert used <= known, f"not in docs/contracts.md: {used - known}"
    dashboard = (CHART / "files" / "grafana-dashboard.json").read_text()
    assert _metrics_in(dashboard) <= known, f"not in docs/contracts.md: {_metrics_in(dashboard) - known}"


def _exported_metrics() -> set[str]:
    """Metric names in the services' own /metrics exposition (scheduler and autoscaler in the
    default registry, the worker in its own), read from the `# TYPE` lines."""
    for name in METRIC_MODULES:
        importlib.import_module(name)
    worker = importlib.import_module("shoal.worker.metrics")
    text = (generate_latest(REGISTRY) + generate_latest(worker.REGISTRY)).decode()
    return set(re.findall(r"^# TYPE (shoal_\w+) ", text, flags=re.MULTILINE))


def test_alerts_and_dashboard_use_only_metrics_the_services_export(rules_file: Path) -> None:
    exported = _exported_metrics()
    used = set().union(*(_metrics_in(r["expr"]) for r in _rules(rules_file)))
    used |= _metrics_in((CHART / "files" / "grafana-dashboard.json").read_text())
    assert used <= exported, f"no service exports {used - exported}"


def _alert(severity: str, value: str = "", **labels: str) -> dict[str, Any]:
    """An expected firing alert: the grouping labels of its expression, its severity, and the
    `$value` its annotations should show."""
    return {"labels": {"severity": severity, **TEAM, **labels}, "value": value}


_TEMPLATE = re.compile(r"\{\{ *\$(labels\.(?P<label>\w+)|value( *\| *humanizePercentage)?) *\}\}")


def _annotations(rule: dict[str, Any], labels: dict[str, str], value: str) -> dict[str, str]:
    """The rule's annotations as Prometheus should expand them for an alert with these labels."""

    def expand(match: re.Match[str]) -> str:
        return labels[match["label"]] if match["label"] else value

    return {key: _TEMPLATE.sub(expand, text) for key, text in rule["annotations"].items()}


def _case(
    name: str, series: dict[str, str], eval_time: str, alert: str, expected: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": expected}],
    }


def _depth(pod: str, values: str, queue: str = "default") -> tuple[str, str]:
    return f'shoal_queue_depth{{{SEL},queue="{queue}",priority="0",pod="{pod}"}}', values


def _finished(failed: str, succeeded: str) -> dict[str, str]:
    """shoal_tasks_finished_10m as two scheduler replicas export it (both read the same Redis)."""
    return {
        f'shoal_tasks_finished_10m{{{SEL},state="{state}",pod="{pod}"}}': values
        for pod in ("scheduler-a", "scheduler-b")
        for state, values in (("failed", failed), ("succeeded", succeeded))
    }


CASES = [
    # Backlog: grows 10 tasks a minute past the threshold of 100.
    _case(
        "growing backlog alerts",
        dict([_depth("scheduler-a", "0+10x60")]),
        "45m",
        "ShoalQueueBacklogGrowing",
        [_alert("warning", "450", namespace=NAMESPACE, queue="default")],
    ),
    _case(
        "a large but steady backlog does not",
        dict([_depth("scheduler-a", "500x60")]),
        "45m",
        "ShoalQueueBacklogGrowing",
        [],
    ),
    _case(
        "two scheduler replicas reporting one queue are not added up",
        dict([_depth("scheduler-a", "60+0.1x60"), _depth("scheduler-b", "60+0.1x60")]),
        "45m",
        "ShoalQueueBacklogGrowing",
        [],
    ),
    # No workers: work waits and nobody heartbeats; scale-to-zero with empty queues stays quiet.
    _case(
        "work waiting with no worker alerts",
        {f'shoal_workers{{{SEL},pod="scheduler-a"}}': "0x30", **dict([_depth("scheduler-a", "5x30")])},
        "20m",
        "ShoalNoWorkers",
        [_alert("critical", namespace=NAMESPACE)],
    ),
    _case(
        "scaled to zero with nothing queued is fine",
        {f'shoal_workers{{{SEL},pod="scheduler-a"}}': "0x30", **dict([_depth("scheduler-a", "0x30")])},
        "20m",
        "ShoalNoWorkers",
        [],
    ),
    _case(
        "workers present is fine",
        {f'shoal_workers{{{SEL},pod="scheduler-a"}}': "3x30", **dict([_depth("scheduler-a", "50x30")])},
        "20m",
        "ShoalNoWorkers",
        [],
    ),
    # Failure rate: tasks that failed for good among those that finished in the last 10 minutes,
    # as two scheduler replicas report them (the same values from Redis, never added up).
    _case(
        "a third of the finished tasks failing for good alerts",
        _finished(failed="300x30", succeeded="600x30"),
        "30m",
        "ShoalTaskFailureRateHigh",
        [_alert("warning", "33.33%", namespace=NAMESPACE)],
    ),
    _case(
        "attempts that fail and then succeed on a retry do not",
        {
            **_finished(failed="0x30", succeeded="900x30"),
            f'shoal_worker_tasks_failed_total{{{SEL},queue="default",task="t",pod="w1"}}': "0+300x30",
            f'shoal_worker_tasks_succeeded_total{{{SEL},queue="default",task="t",pod="w1"}}': "0+300x30",
        },
        "30m",
        "ShoalTaskFailureRateHigh",
        [],
    ),
    _case(
        "one failure in a quiet hour does not",
        _finished(failed="1x30", succeeded="0x30"),
        "30m",
        "ShoalTaskFailureRateHigh",
        [],
    ),
    _case(
        "a few failures among many successes do not",
        _finished(failed="20x30", succeeded="2000x30"),
        "30m",
        "ShoalTaskFailureRateHigh",
        [],
    ),
    # Leader: both replicas report 0, or none is scraped at all.
    _case(
        "no replica leading alerts",
        {
            f'shoal_leader{{{SEL},pod="scheduler-a"}}': "0x20",
            f'shoal_leader{{{SEL},pod="scheduler-b"}}': "0x20",
        },
        "10m",
        "ShoalLeaderMissing",
        [_alert("critical", namespace=NAMESPACE)],
    ),
    _case(
        "scheduler not scraped at all alerts",
        {'shoal_workers{namespace="elsewhere",pod="x"}': "1x20"},
        "10m",
        "ShoalLeaderMissing",
        [_alert("critical", namespace=NAMESPACE)],
    ),
    _case(
        "one leader is healthy",
        {
            f'shoal_leader{{{SEL},pod="scheduler-a"}}': "1x20",
            f'shoal_leader{{{SEL},pod="scheduler-b"}}': "0x20",
        },
        "10m",
        "ShoalLeaderMissing",
        [],
    ),
    # Loops: the reaper failing every minute, against one failure that the restart cured.
    _case(
        "a loop failing again and again alerts",
        {f'shoal_scheduler_loop_failures_total{{{SEL},loop="reaper",pod="scheduler-a"}}': "0+1x30"},
        "20m",
        "ShoalSchedulerLoopFailing",
        [_alert("warning", "15", namespace=NAMESPACE, loop="reaper")],
    ),
    _case(
        "one failure cured by its restart does not",
        {f'shoal_scheduler_loop_failures_total{{{SEL},loop="reaper",pod="scheduler-a"}}': "0x10 1x20"},
        "20m",
        "ShoalSchedulerLoopFailing",
        [],
    ),
    # Replicas: the autoscaler wants 5, only 2 run for longer than 15 minutes.
    _case(
        "desired replicas not reached alerts",
        {
            f'shoal_worker_replicas_desired{{{SEL},pod="scheduler-a"}}': "5x30",
            f'shoal_worker_replicas_actual{{{SEL},pod="scheduler-a"}}': "2x30",
        },
        "20m",
        "ShoalWorkerReplicasNotReached",
        [_alert("warning", namespace=NAMESPACE)],
    ),
    _case(
        "scaling up that completes in time does not",
        {
            f'shoal_worker_replicas_desired{{{SEL},pod="scheduler-a"}}': "5x30",
            f'shoal_worker_replicas_actual{{{SEL},pod="scheduler-a"}}': "2x5 5x25",
        },
        "20m",
        "ShoalWorkerReplicasNotReached",
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_alert_fires_exactly_when_it_should(case: dict[str, Any], rules_file: Path, tmp_path: Path) -> None:
    promtool = _promtool()
    rules = {r["alert"]: r for r in _rules(rules_file)}
    (check,) = case["alert_rule_test"]
    rule = rules[check["alertname"]]
    check = {
        **check,
        "exp_alerts": [
            {"exp_labels": e["labels"], "exp_annotations": _annotations(rule, e["labels"], e["value"])}
            for e in check["exp_alerts"]
        ],
    }
    test = {**case, "alert_rule_test": [check]}
    tests_file = tmp_path / "alerts-test.yaml"
    tests_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": [test]}, sort_keys=False
        )
    )
    done = subprocess.run([promtool, "test", "rules", str(tests_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
