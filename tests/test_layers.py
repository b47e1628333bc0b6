"""The import layers in .importlinter hold as written, and a contract catches what it forbids:
each case runs the real `lint-imports` on a copy of the package with one violating module added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """services/shoal copied into a directory of its own (without caches)."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "services" / "shoal", root / "shoal", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def lint_imports(source_root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.skip("lint-imports is not installed in this environment (requirements-dev.txt)")
    env = {**os.environ, "PYTHONPATH": str(source_root)}  # ahead of the editable install's path
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        # A module no list named: the contract covers the whole package.
        (
            "scheduler/sneaky.py",
            "import kubernetes\n",
            "only shoal.scheduler.kube imports the kubernetes client",
        ),
        (
            "worker/sneaky.py",
            "from kubernetes import client\n",
            "only shoal.scheduler.kube imports the kubernetes client",
        ),
        ("core/sneaky.py", "from shoal.scheduler import kube\n", "core imports no service"),
        (
            "dashboard/sneaky.py",
            "import shoal.worker.runtime\n",
            "core is shared; scheduler, worker and dashboard do not import each other",
        ),
        # What a producer imports must not drag the scheduler's or the dashboard's stack in.
        (
            "sdk/sneaky.py",
            "import fastapi\n",
            "the SDK imports no service, nor fastapi, streamlit or kubernetes",
        ),
        (
            "sdk/sneaky.py",
            "from shoal.scheduler import main\n",
            "the SDK imports no service, nor fastapi, streamlit or kubernetes",
        ),
    ],
)
def test_a_violating_module_breaks_its_contract(
    package_copy: Path, tmp_path: Path, module: str, source: str, contract: str
) -> None:
    root = tmp_path / "src"
    shutil.copytree(package_copy, root)
    (root / "shoal" / module).write_text(source)
    result = lint_imports(root, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout
    assert f"shoal.{module.removesuffix('.py').replace('/', '.')}" in result.stdout


def test_the_package_as_it_is_keeps_every_contract(package_copy: Path, tmp_path: Path) -> None:
    result = lint_imports(package_copy, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout
