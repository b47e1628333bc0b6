"""skaffold.yaml, checked by structure: no skaffold binary or schema can be installed here.

It must be a current (v4beta) config that builds the image from the repository's Dockerfile,
deploys charts/shoal with a values file that exists and renders, maps the built image onto the
chart's image values, and forwards the API and dashboard Services that the chart creates.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.helm_render import ROOT, render

SKAFFOLD = ROOT / "skaffold.yaml"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


def test_is_a_current_skaffold_config(config: dict[str, Any]) -> None:
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
    assert config["kind"] == "Config"


def test_builds_the_image_from_the_dockerfile(config: dict[str, Any]) -> None:
    (artifact,) = config["build"]["artifacts"]
    context = ROOT / artifact.get("context", ".")
    assert (context / artifact["docker"]["dockerfile"]).is_file()
    assert artifact["image"] == "shoal"
    assert config["build"]["local"]["push"] is False


def test_deploys_the_chart_with_dev_values_that_render(config: dict[str, Any]) -> None:
    (release,) = config["deploy"]["helm"]["releases"]
    chart = ROOT / release["chartPath"]
    assert (chart / "Chart.yaml").is_file()
    values = [ROOT / path for path in release["valuesFiles"]]
    assert all(path.is_file() for path in values)
    image = artifact_image(config)
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    assert release["setValueTemplates"]["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"
    rendered = render(values, release=release["name"], namespace=release["namespace"])
    assert rendered.workload("scheduler")["spec"]["replicas"] == 1


def artifact_image(config: dict[str, Any]) -> str:
    return config["build"]["artifacts"][0]["image"]


def test_port_forwards_api_and_dashboard_services_that_exist(config: dict[str, Any]) -> None:
    (release,) = config["deploy"]["helm"]["releases"]
    rendered = render(
        [ROOT / p for p in release["valuesFiles"]], release=release["name"], namespace=release["namespace"]
    )
    forwards = {(f["resourceName"], f["port"]): f for f in config["portForward"]}
    for service_name, port in (
        (f"{release['name']}-scheduler", 8000),
        (f"{release['name']}-dashboard", 8501),
    ):
        forward = forwards[service_name, port]
        assert forward["resourceType"] == "service"
        assert forward["localPort"] == port
        assert forward["namespace"] == release["namespace"]
        service = rendered.one("Service", service_name)
        assert port in [p["port"] for p in service["spec"]["ports"]]
