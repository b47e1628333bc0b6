"""The lock files the install uses agree with the pins we asked for, and every package is hashed.

requirements.txt / requirements-dev.txt name what we want (pins of the direct dependencies);
requirements.lock / requirements-dev.lock, written by `make lock`, are what `make install` and
the Dockerfile install with `pip --require-hashes`. A pin edited without re-locking fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)", re.M)


def pins(path: Path) -> dict[str, str]:
    return {m.group(1).lower().replace("_", "-"): m.group(3) for m in PIN.finditer(path.read_text())}


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every package in a lock file."""
    out: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        match = PIN.match(block)
        if match:
            out[match.group(1).lower().replace("_", "-")] = (match.group(3), block.count("--hash=sha256:"))
    return out


def test_every_pin_is_locked_at_its_version() -> None:
    for wanted, lock in (
        ("requirements.txt", "requirements.lock"),
        ("requirements-dev.txt", "requirements-dev.lock"),
    ):
        have = locked(ROOT / lock)
        for name, version in pins(ROOT / wanted).items():
            assert name in have, f"{name} of {wanted} is not in {lock}: run `make lock`"
            assert have[name][0] == version, f"{name}: {wanted} pins {version}, {lock} has {have[name][0]}"


def test_every_locked_package_is_hashed() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        packages = locked(ROOT / lock)
        assert len(packages) > 20
        assert [name for name, (_, hashes) in packages.items() if hashes == 0] == []


def test_development_installs_the_versions_production_runs() -> None:
    runtime, development = locked(ROOT / "requirements.lock"), locked(ROOT / "requirements-dev.lock")
    assert {n: v for n, (v, _) in runtime.items()} == {n: development[n][0] for n in runtime}


def test_the_installer_bootstraps_hashed_at_the_version_the_dev_lock_locks() -> None:
    bootstrap = locked(ROOT / "requirements-bootstrap.lock")
    assert set(bootstrap) == {"uv"} and bootstrap["uv"][1] > 0
    assert bootstrap["uv"][0] == locked(ROOT / "requirements-dev.lock")["uv"][0], "run `make lock`"


def test_the_install_takes_the_locks_with_hashes_required() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert (
        "pip install -q --disable-pip-version-check --require-hashes -r requirements-bootstrap.lock"
        in makefile
    )
    assert (
        "$(UV) pip install -q --compile-bytecode --python $(PY) --require-hashes -r requirements-dev.lock"
        in (makefile)
    )
