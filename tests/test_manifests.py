"""k8s/: the plain manifests for `kubectl apply -f k8s/` users, kept equal to a fresh chart render.

They carry no Secret (users create it, k8s/README.md says how) and every reference to it must
be satisfiable by the command the README gives.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from tests.helm_render import NAMESPACE, ROOT, Render, helm

K8S_DIR = ROOT / "k8s"
MANIFEST = K8S_DIR / "shoal.yaml"


@pytest.fixture(scope="module")
def manifests() -> Render:
    return Render.parse(MANIFEST.read_text())


def test_k8s_manifests_equal_a_fresh_render(tmp_path: Path) -> None:
    helm()  # skips with the reason when helm cannot be had
    done = subprocess.run(
        ["sh", str(ROOT / "scripts" / "render-k8s.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fresh = (tmp_path / "shoal.yaml").read_text()
    assert fresh == MANIFEST.read_text(), (
        "k8s/ is stale: run `make k8s` (scripts/render-k8s.sh) and commit it"
    )


def test_k8s_manifests_hold_no_secret(manifests: Render) -> None:
    assert not manifests.of_kind("Secret")
    assert "helm.sh/hook" not in MANIFEST.read_text(), "helm test pods are not for kubectl users"


def test_every_secret_reference_is_created_by_the_readme_command(manifests: Render) -> None:
    readme = (K8S_DIR / "README.md").read_text()
    command = re.search(
        r"kubectl -n shoal create secret generic (\S+)((?: *\\\n *--from-literal=[^\n\\]+)+)", readme
    )
    assert command, "k8s/README.md must show `kubectl -n shoal create secret generic ...`"
    name = command.group(1)
    keys = set(re.findall(r"--from-literal=([a-z-]+)=", command.group(2)))
    refs = {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for _, spec in manifests.pod_specs()
        for container in spec["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    } | {
        (volume["secret"]["secretName"], item["key"])  # files from the Secret (the dashboard's accounts)
        for _, spec in manifests.pod_specs()
        for volume in spec.get("volumes", [])
        if "secret" in volume
        for item in volume["secret"].get("items", [])
    }
    assert refs, "the workloads must read the token and password from the Secret"
    assert refs == {(name, key) for key in keys}


def test_k8s_manifests_are_namespaced_and_valid(manifests: Render) -> None:
    for doc in manifests.docs:
        if doc["kind"].startswith("ValidatingAdmissionPolicy"):  # cluster-scoped
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE
        kubernetes_validate.validate(doc, f"{latest_version()}.0", strict=True)


def test_readme_says_how_the_manifests_are_generated() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    assert "scripts/render-k8s.sh" in readme
    assert "make k8s" in readme
    assert "kubectl apply -f k8s/" in readme
