"""The wheel built from this repository, installed into a fresh virtualenv outside it, as a user would.

Built and installed once per test session (pip's cache makes the dependencies quick); every
command runs from a directory with no checkout on its path. The user's tasks run on the
installed `shoal worker` against the real Redis; the producer uses the direct transport, so the
base install (no scheduler or dashboard extras) is all that is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REDIS_URL
from shoal._version import __version__

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    shoal: Path
    home: Path  # an empty working directory outside the repository

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in _clean_env().items() if not k.startswith("SHOAL_")}
        return {**env, **extra}

    def run(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), "-c", textwrap.dedent(code)],
            cwd=self.home,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )


def _clean_env() -> dict[str, str]:
    # Without PYTHONPATH: pip would take the checkout on it for an installed shoal and skip it.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = dist.glob("shoal-*.whl")
    target = base / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    # uv (from the dev lock) installs the wheel and the dependencies its metadata names, as pip
    # would, in a tenth of the CPU (the suite is CPU-bound: pip took about 20 CPU-s here).
    install = subprocess.run(
        [str(Path(sys.executable).with_name("uv")), "pip", "install", "--python", str(python), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    home = base / "home"
    home.mkdir()
    return Installed(wheel, python, target / "bin" / "shoal", home)


def test_the_wheel_holds_only_the_shoal_package_typed(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"shoal"}
    assert "shoal/py.typed" in names and "shoal/core/lua/submit.lua" in names


def test_import_shoal_works_and_services_does_not_exist(installed: Installed) -> None:
    done = installed.run(
        """
        import importlib.util, sys
        import shoal
        print(shoal.__version__, shoal.__file__)
        assert importlib.util.find_spec("services") is None, "a top-level services module is installed"
        heavy = {"fastapi", "streamlit", "kubernetes"} & set(sys.modules)
        assert not heavy, heavy
        for extra in ("fastapi", "streamlit", "kubernetes"):
            assert importlib.util.find_spec(extra) is None, f"the base install brought {extra}"
        """
    )
    assert done.returncode == 0, done.stderr
    version, location = done.stdout.split()
    assert version == __version__
    assert str(ROOT) not in location and "site-packages" in location


def test_the_command_is_installed_and_names_the_missing_extras(installed: Installed) -> None:
    helped = subprocess.run([str(installed.shoal), "--help"], cwd=installed.home, env=installed.env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert helped.returncode == 0 and "worker" in helped.stdout
    scheduler = subprocess.run([str(installed.shoal), "scheduler"], cwd=installed.home, env=installed.env(),
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert scheduler.returncode == 2
    assert "pip install 'shoal[scheduler]'" in scheduler.stderr and "Traceback" not in scheduler.stderr


USER_TASKS = """
import shoal


@shoal.task(queue="wheel")
def add(a: int, b: int) -> int:
    return a + b


@shoal.task(queue="wheel", max_retries=0)
def explode(why: str) -> None:
    raise ValueError(why)
"""

PRODUCER = """
import os, sys
import shoal
import usertasks

with shoal.Client(redis_url=os.environ["REDIS_URL"], namespace=os.environ["NS"]) as client:
    handle = client.submit(usertasks.add, 2, 3)
    value = handle.result(timeout=60)
    print(type(value).__name__, value)
    try:
        client.run(usertasks.explode, "no fuel")
    except shoal.TaskFailed as failed:
        print("failed:", failed.error)
        print("traceback mentions the user's file:", "usertasks.py" in (failed.traceback or ""))
"""


@pytest.fixture
def user_worker(installed: Installed, namespace: str) -> Iterator[dict[str, str]]:
    (installed.home / "usertasks.py").write_text(USER_TASKS)
    env = {
        "PYTHONPATH": str(installed.home),  # the user's code, and nothing of this repository
        "SHOAL_REDIS_URL": REDIS_URL,
        "SHOAL_NAMESPACE": namespace,
        "SHOAL_TASK_MODULES": "usertasks",
        "SHOAL_QUEUES": "wheel",
        "SHOAL_WORKER_PORT": "0",
        "SHOAL_PROCESS_POOL_SIZE": "1",
    }
    worker = subprocess.Popen([str(installed.shoal), "worker"], cwd=installed.home, env=installed.env(**env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield {"REDIS_URL": REDIS_URL, "NS": namespace, "PYTHONPATH": str(installed.home)}
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()


def test_a_users_tasks_run_on_the_installed_worker_with_typed_results(
    installed: Installed, user_worker: dict[str, str]
) -> None:
    started = time.monotonic()
    done = installed.run(PRODUCER, SHOAL_VALIDATE_TASK_NAMES="false", **user_worker)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "int 5",
        "failed: ValueError: no fuel",
        "traceback mentions the user's file: True",
    ]
    assert time.monotonic() - started < 120
