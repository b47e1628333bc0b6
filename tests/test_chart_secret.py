"""The chart's Secret (API token, Redis password) is generated once and kept across upgrades.

The chart reads the live Secret with Helm's `lookup`, which only talks to a cluster. No cluster
runs here, so the real helm binary renders with `--dry-run=server` against kmock's Kubernetes
API emulator over real HTTP: helm discovers the API, checks ownership of existing objects and
GETs the Secret exactly as during `helm upgrade`. kmock stands in for the API server only; its
discovery is completed below where kmock 0.8 answers differently from a real server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import string
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.helm_render import CHART, RELEASE, Render, run_helm
from tests.k8s_fixture import write_kubeconfig

KUBE_VERSION = {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "platform": "linux/amd64"}
# kmock 0.8 reports the core group as "/v1" and an old server version; a real API server says:
CORE_RESOURCES = [
    ("secrets", "Secret"),
    ("configmaps", "ConfigMap"),
    ("services", "Service"),
    ("serviceaccounts", "ServiceAccount"),
    ("pods", "Pod"),
    ("persistentvolumeclaims", "PersistentVolumeClaim"),
]
CORE_DISCOVERY = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "v1",
    "resources": [
        {
            "name": plural,
            "singularName": kind.lower(),
            "namespaced": True,
            "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
        for plural, kind in CORE_RESOURCES
    ],
}


@dataclass
class ApiServer:
    emulator: kmock.KubernetesEmulator
    kubeconfig: Path

    def put_secret(
        self, namespace: str, name: str, data: dict[str, str], owned_by_release: bool = True
    ) -> None:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if owned_by_release:
            # What `helm install` leaves on the objects it creates.
            metadata["labels"] = {"app.kubernetes.io/managed-by": "Helm"}
            metadata["annotations"] = {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": namespace,
            }
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        self.emulator.objects["v1/secrets", namespace, name] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "data": encoded,
        }

    def render_secret(self, namespace: str, *set_args: str) -> dict[str, str]:
        """The chart's Secret as `helm upgrade` would apply it, decoded."""
        args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--dry-run=server"]
        # kmock serves no OpenAPI document; the objects are schema-checked in test_chart.py instead.
        args += ["--disable-openapi-validation", "--show-only", "templates/secret.yaml", *set_args]
        done = run_helm(args, env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        assert done.returncode == 0, done.stderr
        secret = Render.parse(done.stdout).one("Secret")
        return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    loop, ready = asyncio.new_event_loop(), threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        box["stop"] = asyncio.Event()
        try:
            async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
                with warnings.catch_warnings():
                    # kmock 0.8 reads its bundled discovery data with a deprecated importlib call.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    emulator.resources.load_bundled()
                emulator["get /api/v1"] << CORE_DISCOVERY
                emulator["get /version"] << KUBE_VERSION
                box["emulator"], box["url"] = emulator, str(server.url).rstrip("/")
                ready.set()
                await box["stop"].wait()
        except Exception as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "kmock did not start"
    if "error" in box:
        raise box["error"]
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", box["url"])
    yield ApiServer(box["emulator"], kubeconfig)
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(10)
    loop.close()


@pytest.fixture
def namespace() -> str:
    """A namespace of the emulated cluster that no other test uses."""
    return f"ns-{uuid.uuid4().hex[:10]}"


ROLES = ("scheduler", "worker", "probe")  # the bundled Redis' ACL users


def _is_generated(value: str) -> bool:
    return len(value) == 48 and set(value) <= set(string.ascii_letters + string.digits)


def test_upgrade_keeps_the_live_token_and_password(api_server: ApiServer, namespace: str) -> None:
    live = {
        "api-token": "token-given-at-install-1234",
        **{f"redis-{role}-password": f"{role}-password-given-at-install" for role in ROLES},
    }
    api_server.put_secret(namespace, RELEASE, live)
    assert api_server.render_secret(namespace) == live
    assert api_server.render_secret(namespace) == live


def test_first_install_generates_fresh_random_values(api_server: ApiServer, namespace: str) -> None:
    first = api_server.render_secret(namespace)
    second = api_server.render_secret(namespace)
    assert set(first) == {"api-token", *(f"redis-{role}-password" for role in ROLES)}
    assert all(_is_generated(value) for value in (*first.values(), *second.values()))
    assert first["api-token"] != second["api-token"], "nothing was installed yet: each render draws anew"


def test_a_key_added_by_an_upgrade_is_generated_and_the_rest_kept(
    api_server: ApiServer, namespace: str
) -> None:
    # Installed with redis.enabled=false (no password), upgraded to the bundled Redis.
    api_server.put_secret(namespace, RELEASE, {"api-token": "token-given-at-install-1234"})
    data = api_server.render_secret(namespace)
    assert data["api-token"] == "token-given-at-install-1234"
    assert all(_is_generated(data[f"redis-{role}-password"]) for role in ROLES)


def test_only_the_release_namespace_is_looked_up(api_server: ApiServer, namespace: str) -> None:
    api_server.put_secret(f"{namespace}-other", RELEASE, {"api-token": "someone-elses-token-123"})
    assert api_server.render_secret(namespace)["api-token"] != "someone-elses-token-123"


def test_a_foreign_secret_of_the_same_name_is_not_taken_over(api_server: ApiServer, namespace: str) -> None:
    api_server.put_secret(namespace, RELEASE, {"api-token": "not-helms-token-12345"}, owned_by_release=False)
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--dry-run=server"]
    done = run_helm(
        [*args, "--disable-openapi-validation"], env={**os.environ, "KUBECONFIG": str(api_server.kubeconfig)}
    )
    assert done.returncode != 0
    assert "cannot be imported into the current release" in done.stderr
