"""One version string, `shoal._version.__version__`: the package, the chart and every image tag follow it."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import yaml

import shoal
from shoal._version import __version__

ROOT = Path(__file__).resolve().parent.parent
# Files that name Shoal's image by tag (build commands, manifests, the example's base image).
IMAGE_TAGGED = [
    "Dockerfile",
    "k8s/shoal.yaml",
    "k8s/README.md",
    "docs/kubernetes.md",
    "charts/shoal/README.md",
    "examples/Dockerfile",
]
_SHOAL_IMAGE = re.compile(r"\bshoal:(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.]+)?)")


def test_the_package_reports_the_one_version() -> None:
    assert shoal.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert metadata.version("shoal") == __version__  # pyproject reads it (setuptools dynamic)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "shoal._version.__version__" in pyproject


def test_the_chart_runs_the_image_of_this_version() -> None:
    chart = yaml.safe_load((ROOT / "charts/shoal/Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/shoal/values.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert values["image"]["tag"] == ""  # so the image tag is the appVersion


def test_every_image_tag_written_down_is_this_version() -> None:
    for name in IMAGE_TAGGED:
        tags = set(_SHOAL_IMAGE.findall((ROOT / name).read_text() + "\n"))
        assert tags, f"{name} names no shoal:<version> image any more: update IMAGE_TAGGED"
        assert tags == {__version__}, f"{name} names shoal:{sorted(tags)}, the version is {__version__}"
