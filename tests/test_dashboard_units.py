"""The dashboard's pure helpers: formatting, time series, graph, demo loads, form checks, charts, errors."""

from __future__ import annotations

import socket

import orjson
import pytest
from pydantic import ValidationError

from dashboard_support import silent_server
from shoal import Client, RequestTimeout, ShoalError
from shoal.dashboard import charts, demo, forms, graph, series
from shoal.dashboard import format as fmt
from shoal.dashboard.api import ApiTarget, describe, target_from_env
from shoal.scheduler.schemas import BatchCreate
from shoal.sdk.answers import error_for

# ---------------------------------------------------------------- format


def test_durations_and_times_read_naturally() -> None:
    assert fmt.ago(100.0, 112.0) == "12 s ago"
    assert fmt.ago(300.0, 120.0) == "in 3 min"
    assert fmt.ago(None, 1.0) == "—"
    assert fmt.millis(0.42) == "0.4 ms"
    assert fmt.millis(35.2) == "35 ms"
    assert fmt.millis(1234) == "1.2 s"
    assert fmt.count(1234567) == "1 234 567"
    assert fmt.rate(5.83) == "5.8/s"
    assert fmt.rate(1234.0) == "1 234/s"
    assert fmt.duration(10.0, 15.5) == "5.5 s"
    assert fmt.duration(10.0, 10.004) == "4 ms"


def test_every_state_has_a_colour_badge_and_icon() -> None:
    for state in fmt.STATE_ORDER:
        assert fmt.STATE_COLORS[state].startswith("#")
        assert fmt.STATE_BADGE[state]
        assert fmt.STATE_ICON[state].startswith(":material/")
    assert fmt.state_markdown("upstream_failed") == ":orange[:material/block: upstream failed]"
    style = fmt.color_cell(fmt.STATE_COLORS)
    assert style("upstream failed") == "color: #f76808; font-weight: 600"
    assert style("unknown") == ""


# ---------------------------------------------------------------- series


def stats(succeeded: int, failed: int, queued: int = 0, throughput: dict | None = None) -> dict:
    return {
        "counts": {"succeeded": succeeded, "failed": failed, "queued": queued},
        "throughput": throughput or {},
        "queue_wait_ms": {"p50": 5.0, "p90": 9.0, "p99": None},
        "run_time_ms": {"p50": 100.0},
        "workers": 1,
    }


def test_samples_derive_rates_from_counts_when_the_server_gives_none() -> None:
    samples = series.new_samples()
    series.record(samples, series.Snapshot(at=100.0, stats=stats(10, 0, queued=5)))
    second = series.record(samples, series.Snapshot(at=102.0, stats=stats(18, 2, queued=1)))
    assert second["ok_per_s"] == 4.0
    assert second["failed_per_s"] == 1.0
    assert second["failure_rate"] == pytest.approx(0.2)
    assert second["state:queued"] == 1
    assert second["queue_wait_ms:p90"] == 9.0
    assert "queue_wait_ms:p99" not in second


def test_counts_trimmed_by_retention_never_give_negative_rates() -> None:
    samples = series.new_samples()
    series.record(samples, series.Snapshot(at=100.0, stats=stats(50, 5)))
    sample = series.record(samples, series.Snapshot(at=101.0, stats=stats(10, 1)))
    assert sample["ok_per_s"] == 0 and sample["failed_per_s"] == 0


def test_first_sample_takes_the_servers_last_minute_rates() -> None:
    throughput = {"per_s_1m": 3.0, "failed_per_s_1m": 0.5, "series": []}
    sample = series.record(
        series.new_samples(), series.Snapshot(at=1.0, stats=stats(1, 1, throughput=throughput))
    )
    assert (sample["ok_per_s"], sample["failed_per_s"]) == (2.5, 0.5)


def test_samples_keep_queues_priorities_workers_and_desired_replicas() -> None:
    snap = series.Snapshot(
        at=5.0,
        stats=stats(0, 0),
        queues=[{"name": "io", "ready": 4, "by_priority": {"9": 1, "0": 3}}],
        workers=[
            {"state": "active", "concurrency": 4, "running": 3},
            {"state": "lost", "concurrency": 4, "running": 4},
        ],
        scaling={"desired": 3, "current": 1},
    )
    sample = series.record(series.new_samples(), snap)
    assert sample["ready:io"] == 4 and sample["prio:io:9"] == 1 and sample["prio:io:0"] == 3
    assert (sample["workers"], sample["slots"], sample["busy"]) == (1, 4, 3)
    assert sample["desired"] == 3


def test_series_are_bounded_and_sampled_once_per_interval() -> None:
    samples = series.new_samples()
    for i in range(series.MAX_SAMPLES + 10):
        series.record(samples, series.Snapshot(at=float(i), stats=stats(i, 0)))
    assert len(samples) == series.MAX_SAMPLES
    last = samples[-1]["ts"]
    assert not series.is_due(samples, last + 1.0, interval_s=2.0)
    assert series.is_due(samples, last + 1.5, interval_s=2.0)


def test_frame_fills_series_that_appear_later_with_zero() -> None:
    samples = series.new_samples()
    series.record(samples, series.Snapshot(at=1.0, queues=[{"name": "a", "ready": 2}]))
    series.record(
        samples, series.Snapshot(at=2.0, queues=[{"name": "a", "ready": 1}, {"name": "b", "ready": 7}])
    )
    frame = series.frame(samples, "ready:")
    assert list(frame["series"]) == ["a", "b", "a", "b"]
    assert list(frame["value"]) == [2, 0, 1, 7]


# ---------------------------------------------------------------- graph


def test_collect_related_walks_both_ways_and_stops_at_the_limit() -> None:
    tasks = {
        "a": {"id": "a", "depends_on": [], "dependents": ["b"]},
        "b": {"id": "b", "depends_on": ["a"], "dependents": ["c"]},
        "c": {"id": "c", "depends_on": ["b", "gone"]},
    }
    fetched: list[str] = []

    def fetch(task_id: str) -> dict | None:
        fetched.append(task_id)
        return tasks.get(task_id)

    found = graph.collect_related(tasks["b"], fetch)
    assert set(found) == {"a", "b", "c", "gone"}
    assert found["gone"] is None
    assert sorted(fetched) == ["a", "c", "gone"]  # each at most once
    assert len(graph.collect_related(tasks["b"], fetch, limit=2)) == 2


def test_dependency_dot_colours_links_and_marks_the_root() -> None:
    tasks = {
        "a1": {"id": "a1", "name": "extract", "state": "succeeded", "depends_on": []},
        "b2": {"id": "b2", "name": "load", "state": "running", "depends_on": ["a1", "zz"]},
        "zz": None,
    }
    dot = graph.dependency_dot("b2", tasks)
    assert '"a1" -> "b2";' in dot and '"zz" -> "b2";' in dot
    assert 'fillcolor="#2fb380"' in dot and 'fillcolor="#2d8cf0"' in dot
    assert 'URL="?task=a1"' in dot and 'target="_self"' in dot
    assert 'label="load\\nb2 · running"' in dot
    assert 'style="rounded,dashed"' in dot  # the vanished dependency
    root_line = next(line for line in dot.splitlines() if line.strip().startswith('"b2" ['))
    assert 'penwidth="3"' in root_line


def test_a_big_fan_out_is_a_focused_view_with_the_rest_counted() -> None:
    children = [f"c{i:03d}" for i in range(120)]
    tasks: dict[str, dict] = {
        "p": {"id": "p", "name": "split", "state": "failed", "depends_on": ["up"], "dependents": children,
              "dependents_count": 120},
        "up": {"id": "up", "name": "fetch", "state": "succeeded", "depends_on": [], "dependents": ["p"]},
    }  # fmt: skip
    for c in children:
        tasks[c] = {"id": c, "name": "part", "state": "upstream_failed", "depends_on": ["p"]}
    found = graph.collect_related(tasks["p"], tasks.get)
    assert set(found) == {"p", "up", *children[: graph.PER_ROOT]}  # both directions, the nearest
    dot = graph.dependency_dot("p", found)
    assert '"up" -> "p";' in dot and f'"p" -> "{children[0]}";' in dot
    more = next(line for line in dot.splitlines() if '"p +dependents" [' in line)
    assert f"+{120 - graph.PER_ROOT} more" in more and 'URL="?task=p"' in more
    assert '"p" -> "p +dependents"' in dot
    # From a child, its parent is drawn, and the parent's other 119 dependents are one box.
    found = graph.collect_related(tasks["c050"], tasks.get)
    assert {"c050", "p", "up"} <= set(found) and len(found) <= 2 + 1 + graph.PER_NODE
    assert graph.hidden_links(tasks["p"], found) == (0, 120 - sum(c in found for c in children))


# ---------------------------------------------------------------- demo loads


BUILTINS = {"noop", "echo", "sleep", "fail", "flaky", "cpu"}


def test_mixed_load_uses_only_advertised_names_and_is_valid() -> None:
    tasks = demo.mixed_load(BUILTINS, 1000, ["default", "io"])
    assert len(tasks) == 1000
    assert {t["name"] for t in tasks} == BUILTINS
    assert {t["queue"] for t in tasks} == {"default", "io"}
    assert {t["priority"] for t in tasks} <= set(range(10))
    BatchCreate.model_validate({"tasks": tasks})  # the API's own schema accepts it
    assert demo.mixed_load(BUILTINS, 50) == demo.mixed_load(BUILTINS, 50)  # seeded
    only_echo = demo.mixed_load({"echo"}, 20)
    assert {t["name"] for t in only_echo} == {"echo"}
    with pytest.raises(ValueError, match="no live worker advertises"):
        demo.mixed_load({"something_else"}, 10)


def test_dag_load_is_a_valid_acyclic_batch_ending_in_one_join() -> None:
    tasks = demo.dag_load(BUILTINS, 50)
    assert len(tasks) == 50
    refs = [t["ref"] for t in tasks]
    assert len(set(refs)) == 50
    position = {ref: i for i, ref in enumerate(refs)}
    for i, task in enumerate(tasks):
        assert all(position[dep] < i for dep in task.get("depends_on", []))  # only earlier tasks: no cycle
    join = tasks[-1]
    assert join["ref"] == "join" and len(join["depends_on"]) >= 3
    depended_on = {dep for t in tasks for dep in t.get("depends_on", [])}
    assert all(t["ref"] in depended_on for t in tasks[:-1] if t["ref"] in join["depends_on"])
    BatchCreate.model_validate({"tasks": tasks})
    with pytest.raises(ValueError):
        demo.dag_load({"noop"}, 50)


# ---------------------------------------------------------------- the submit form


def build(**overrides: object) -> tuple[dict | None, list[forms.FormError]]:
    values: dict = {
        "name": "echo",
        "args_text": "[1, 2]",
        "kwargs_text": '{"x": 1}',
        "queue": "default",
        "priority": 0,
        "depends_text": "",
        "delay_s": 0.0,
        "max_retries": None,
        "timeout_s": None,
    }
    values.update(overrides)
    return forms.build_task(**values)


def test_a_good_form_becomes_a_task_body() -> None:
    body, errors = build(depends_text="a1, b2\nb2  c3", delay_s=5.0, max_retries=2, priority=-3)
    assert errors == []
    assert body == {
        "name": "echo",
        "args": [1, 2],
        "kwargs": {"x": 1},
        "queue": "default",
        "priority": -3,
        "depends_on": ["a1", "b2", "c3"],
        "delay_s": 5.0,
        "max_retries": 2,
    }
    blank, _ = build(args_text="  ", kwargs_text="")
    assert blank is not None and blank["args"] == [] and blank["kwargs"] == {}


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"args_text": "[1,"}, "args", "args is not valid JSON"),
        ({"args_text": '{"a": 1}'}, "args", "args must be a JSON list"),
        ({"kwargs_text": "[1]"}, "kwargs", "kwargs must be a JSON object"),
        ({"name": ""}, "name", "Pick a task name"),
        ({"name": "bad name!"}, "name", "Pick a task name"),
        ({"queue": "no spaces"}, "queue", "Queue must be"),
        ({"priority": 101}, "priority", "between -100 and 100"),
        ({"depends_text": "ok-id, not/an/id"}, "depends_on", "Not a task id: 'not/an/id'"),
        ({"delay_s": -1.0}, "delay_s", "cannot be negative"),
    ],
)
def test_bad_fields_are_named_with_what_to_do(overrides: dict, field: str, words: str) -> None:
    body, errors = build(**overrides)
    assert body is None
    assert [e.field for e in errors] == [field]
    assert words in errors[0].message


# ---------------------------------------------------------------- chart frames


def test_throughput_and_failure_rate_frames() -> None:
    data = {"throughput": {"series": [{"ts": 1000, "succeeded": 30, "failed": 10}, {"ts": 1010}]}}
    frame = charts.throughput_frame(data)
    assert frame[frame["state"] == "succeeded"]["per_s"].tolist() == [3.0, 0.0]
    rates = charts.failure_rate_frame(frame)
    assert rates["failure_rate"].tolist() == [0.25]  # the empty bucket is left out
    assert charts.failure_rate_frame(charts.throughput_frame({})).empty
    filling = charts.throughput_frame(data, now=1015.0)  # the bucket of 1010 is not complete yet
    assert frame["time"].nunique() == 2 and filling["time"].nunique() == 1


def test_idle_minutes_before_the_first_finish_are_trimmed_to_one_minute() -> None:
    buckets = [{"ts": 1000 + 10 * i} for i in range(30)]
    buckets[20]["succeeded"] = 4
    frame = charts.throughput_frame({"throughput": {"series": buckets}})
    assert frame["time"].nunique() == 10  # from the first busy bucket on
    idle = [{"ts": 1000 + 10 * i} for i in range(30)]
    assert charts.throughput_frame({"throughput": {"series": idle}})["time"].nunique() == 6


def test_timeline_has_each_attempt_with_the_wait_before_it() -> None:
    task = {
        "created_at": 100.0,
        "started_at": 110.0,
        "finished_at": None,
        "state": "running",
        "attempts": 2,
        "worker_id": "w2",
        "history": [
            {
                "attempt": 1,
                "worker_id": "w1",
                "state": "failed",
                "error": "boom",
                "started_at": 101.0,
                "finished_at": 102.0,
            }
        ],
    }
    frame = charts.timeline_frame(task, now=115.0)
    assert frame["lane"].tolist() == ["attempt 1", "attempt 1", "attempt 2", "attempt 2"]
    assert frame["kind"].tolist() == ["waiting", "failed", "waiting", "running"]
    assert frame["seconds"].tolist() == [1.0, 1.0, 8.0, 5.0]  # the backoff between them is the 8 s
    assert frame["detail"].tolist()[1] == "w1: boom"
    assert charts.timeline_chart(frame).to_dict()["layer"]


def test_timeline_shows_the_backoff_a_retrying_task_is_in_now() -> None:
    history = [{"attempt": 1, "worker_id": "w1", "state": "failed", "started_at": 11.0, "finished_at": 12.0}]
    task = {"created_at": 10.0, "state": "scheduled", "attempts": 1, "started_at": 11.0, "history": history}
    frame = charts.timeline_frame(task, now=20.0)
    assert frame["lane"].tolist()[-1] == "attempt 2"
    assert frame[["kind", "seconds"]].values.tolist()[-1] == ["waiting", 8.0]


def test_timeline_of_a_task_that_never_ran_is_its_wait() -> None:
    frame = charts.timeline_frame({"created_at": 10.0, "state": "queued", "history": []}, now=14.0)
    assert frame[["lane", "kind", "seconds"]].values.tolist() == [["waiting", "waiting", 4.0]]


def test_replicas_frame_carries_the_last_decision_to_now() -> None:
    history = [
        {"ts": 20.0, "current": 2, "desired": 4},
        {"ts": 10.0, "current": 0, "desired": 2},
    ]
    samples = [{"ts": 25.0, "workers": 3}]
    frame = charts.replicas_frame(history, samples, now=30.0)
    desired = frame[frame["series"] == "desired"]["value"].tolist()
    assert desired == [2, 4, 4]
    assert frame[frame["series"] == "workers up"]["value"].tolist() == [3]
    for chart in (charts.replicas_chart(frame), charts.throughput_chart(charts.throughput_frame({}))):
        assert chart.to_dict()["mark"]  # builds a valid Vega-Lite spec


# ---------------------------------------------------------------- errors in words


TARGET = ApiTarget(url="http://127.0.0.1:1", token=None, timeout_s=0.3)


def test_target_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_API_URL", "http://shoal.example:8000/")
    monkeypatch.setenv("SHOAL_API_TOKEN", "  ")
    monkeypatch.setenv("SHOAL_DASHBOARD_TIMEOUT_S", "2.5")
    assert target_from_env() == ApiTarget("http://shoal.example:8000", None, 2.5)
    # A setting that cannot work is refused, naming it (the app shows it instead of its pages).
    monkeypatch.setenv("SHOAL_DASHBOARD_TIMEOUT_S", "not a number")
    with pytest.raises(ValidationError, match="dashboard_timeout_s"):
        target_from_env()


@pytest.mark.parametrize(
    ("status", "detail", "kind", "words"),
    [
        (401, "Not authenticated", "auth", "refused the dashboard's token (401)"),
        (404, "task x not found", "http", "Not found while reading: task x not found"),
        (409, "task is terminal", "http", "Not possible now (reading): task is terminal"),
        (
            422,
            [{"loc": ["body", "tasks", 0, "name"], "msg": "String should match pattern"}],
            "http",
            "tasks.0.name: String should match pattern",
        ),
        (503, "redis down", "http", "Check the scheduler's logs and that Redis is up"),
    ],
)
def test_api_errors_become_advice(status: int, detail: object, kind: str, words: str) -> None:
    answer = orjson.dumps({"detail": detail})
    problem = describe(error_for(status, "application/json", answer), TARGET, "reading")
    assert problem.kind == kind and problem.status == status
    assert words in problem.message


def test_an_unreachable_api_is_told_apart_from_a_slow_one() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", token="", timeout_s=0.3) as client,
        pytest.raises(ShoalError) as refused,
    ):
        client.stats()
    problem = describe(refused.value, TARGET, "reading stats")
    assert problem.kind == "unreachable" and problem.blocks_everything
    assert "Cannot reach the Shoal API" in problem.message

    with (
        silent_server() as url,
        Client(url, token="", timeout_s=0.3) as client,
        pytest.raises(ShoalError) as slow,
    ):
        client.stats()
    problem = describe(slow.value, TARGET, "reading stats")
    assert problem.kind == "timeout"
    assert "did not answer within 0.3 s" in problem.message


def test_unexpected_errors_are_still_words() -> None:
    problem = describe(ValueError("odd"), TARGET, "drawing")
    assert problem.message == "Unexpected error while drawing: ValueError: odd"
    assert describe(RequestTimeout("slow"), TARGET, "x").kind == "timeout"
