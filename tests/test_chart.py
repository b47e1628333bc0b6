"""The Helm chart, rendered by the real helm binary over every ci/*-values.yaml set.

Each set is rendered once (module-scoped fixture); the tests then check what a cluster would
receive: schema validity against Kubernetes releases, lint cleanliness, wiring between objects
(selectors, ports, names, environment), restricted security and the scaling/Redis switches.
"""

from __future__ import annotations

import base64
import json
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.helm_render import (
    CHART,
    CI_VALUES,
    CRD_GROUPS,
    NAMESPACE,
    RELEASE,
    SHOAL_COMPONENTS,
    Render,
    component_of,
    label_selector_string_matches,
    pod_labels,
    render,
    render_error,
    run_helm,
    selector_matches,
)

RENDERED_YAMLLINT = YamlLintConfig(
    """
extends: default
rules:
  line-length: {max: 160}
  indentation: {spaces: 2, indent-sequences: whatever}
  document-start: {present: true}
"""
)


def _min_kube_version() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    match = re.search(r"(\d+\.\d+)", chart["kubeVersion"])
    assert match, chart["kubeVersion"]
    return f"{match.group(1)}.0"


KUBE_VERSIONS = (_min_kube_version(), f"{latest_version()}.0")


def _values_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


@pytest.fixture(scope="module", params=CI_VALUES, ids=_values_id)
def rendered(request: pytest.FixtureRequest) -> Render:
    return render([request.param])


@pytest.fixture(scope="module")
def default() -> Render:
    return render([CHART / "ci" / "default-values.yaml"])


def _by_name(values_name: str) -> Render:
    return render([CHART / "ci" / f"{values_name}-values.yaml"])


# ---- lint and schemas -------------------------------------------------------------------------


def test_ci_value_sets_cover_the_features() -> None:
    names = {_values_id(p) for p in CI_VALUES}
    assert {
        "default",
        "external-redis",
        "ingress-tls",
        "monitoring",
        "scale-to-zero",
        "fixed-replicas",
    } <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=_values_id)
def test_helm_lint_strict(values: Path) -> None:
    done = run_helm(["lint", str(CHART), "--strict", "-f", str(values)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_every_object_validates_against_kubernetes_schemas(rendered: Render) -> None:
    crds = [doc for doc in rendered.docs if doc["apiVersion"].startswith(CRD_GROUPS)]
    for version in KUBE_VERSIONS:
        for doc in rendered.docs:
            if doc in crds:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} invalid on {version}: {path}: {error.message}"
                )


def test_custom_resources_are_well_formed(rendered: Render) -> None:
    for doc in rendered.docs:
        if not doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["spec"]


def test_rendered_yaml_passes_yamllint(rendered: Render) -> None:
    problems = [
        f"{p.line}:{p.column} {p.rule}: {p.desc}" for p in linter.run(rendered.text, RENDERED_YAMLLINT)
    ]
    assert problems == []


# ---- names, labels, selectors ---------------------------------------------------------------


CLUSTER_SCOPED = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def test_objects_carry_namespace_and_standard_labels(rendered: Render) -> None:
    for doc in rendered.docs:
        meta = doc["metadata"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta and NAMESPACE in meta["name"], meta["name"]
        else:
            assert meta["namespace"] == NAMESPACE, meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "shoal"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("shoal-")


def _selectors(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor"):
        return [spec["selector"]]
    if kind == "Service":
        return [{"matchLabels": spec["selector"]}]
    if kind == "NetworkPolicy":
        # Peers in other namespaces (ingress controller, Prometheus) select pods that are not ours.
        peers = [
            peer["podSelector"]
            for rule in spec.get("ingress", [])
            for peer in rule["from"]
            if "podSelector" in peer and "namespaceSelector" not in peer
        ]
        return [spec["podSelector"], *peers]
    return []


def test_selectors_use_only_stable_labels(rendered: Render) -> None:
    stable = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
    for doc in rendered.docs:
        for selector in _selectors(doc):
            keys = set(selector.get("matchLabels", {})) | {
                e["key"] for e in selector.get("matchExpressions", [])
            }
            assert keys <= stable, f"{doc['kind']}/{doc['metadata']['name']} selects on {keys - stable}"


def test_every_selector_selects_exactly_its_own_pods(rendered: Render) -> None:
    workloads = rendered.workloads()
    for workload in workloads:
        assert selector_matches(workload["spec"]["selector"], pod_labels(workload))
    for kind in ("Service", "PodDisruptionBudget", "PodMonitor"):
        for doc in rendered.of_kind(kind):
            selector = _selectors(doc)[0]
            matched = [w for w in workloads if selector_matches(selector, pod_labels(w))]
            assert len(matched) == 1, f"{kind}/{doc['metadata']['name']} selects {len(matched)} workloads"
            assert component_of(matched[0]) == component_of(doc)


def test_service_ports_exist_on_the_selected_containers(rendered: Render) -> None:
    for service in rendered.of_kind("Service"):
        component = component_of(service)
        assert component, f"Service {service['metadata']['name']} has no component label"
        workload = rendered.workload(component)
        container = workload["spec"]["template"]["spec"]["containers"][0]
        names = {port["name"] for port in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_names_stay_within_kubernetes_limits_for_a_long_release_name() -> None:
    long_release = "a-release-name-at-helms-limit-of-fifty-three-chars-xy"
    assert len(long_release) == 53
    out = render(release=long_release, set_values={"monitoring.grafanaDashboard.enabled": "true"})
    for statefulset in out.of_kind("StatefulSet"):
        # Its pods get the label controller-revision-hash=<name>-<10 chars>, itself limited to 63.
        assert len(statefulset["metadata"]["name"]) <= 52
    for doc in out.docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        for value in doc["metadata"]["labels"].values():
            assert len(str(value)) <= 63
    names = [doc["metadata"]["name"] for doc in out.docs]
    assert len(set(zip(names, (d["kind"] for d in out.docs), strict=True))) == len(names)


def test_fullname_override_renames_everything_consistently() -> None:
    out = render(set_values={"fullnameOverride": "tasks"})
    config = _config(out, "tasks")
    assert out.one("Deployment", "tasks-worker")
    assert config["SHOAL_WORKER_DEPLOYMENT"] == "tasks-worker"
    assert config["SHOAL_API_URL"] == "http://tasks-scheduler:8000"
    assert config["SHOAL_LEADER_LEASE_NAME"] == "tasks-scheduler-leader"


# ---- containers -----------------------------------------------------------------------------


def test_containers_run_the_documented_commands(default: Render) -> None:
    assert default.container("scheduler")["command"] == [
        "python",
        "-m",
        "shoal.scheduler",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert default.container("worker")["command"] == ["python", "-m", "shoal.worker"]
    # The dashboard behind its sign-in gate, never bare `streamlit run` (which has no gate).
    dashboard = default.container("dashboard")["command"]
    assert dashboard[:3] == ["python", "-m", "shoal.dashboard.server"]
    flags = dict(zip(dashboard[3::2], dashboard[4::2], strict=True))
    assert flags == {"--port": "8501", "--address": "0.0.0.0"}


def test_the_shoal_image_runs_every_service(rendered: Render) -> None:
    images = {rendered.container(c)["image"] for c in SHOAL_COMPONENTS if _has(rendered, c)}
    assert len(images) == 1
    assert images.pop() == "shoal:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def _config(rendered: Render, release: str = RELEASE) -> dict[str, str]:
    """The shared SHOAL_* settings (the chart's main ConfigMap)."""
    return rendered.one("ConfigMap", f"{release}-config")["data"]


def _has(rendered: Render, component: str) -> bool:
    return any(component_of(w) == component for w in rendered.workloads())


def test_probes_point_at_declared_ports(rendered: Render) -> None:
    for workload in rendered.workloads():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        ports = {port["name"] for port in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{workload['metadata']['name']} lacks {probe}"
            http = container[probe].get("httpGet")
            if http:
                assert http["port"] in ports


def test_probe_paths_match_each_service(default: Render) -> None:
    def paths(component: str) -> dict[str, str]:
        c = default.container(component)
        return {p: c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}

    assert paths("scheduler") == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert paths("worker") == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert set(paths("dashboard").values()) == {"/_stcore/health"}
    assert default.container("worker")["ports"] == [
        {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    ]


def test_every_container_has_requests_and_a_memory_limit(rendered: Render) -> None:
    for name, spec in rendered.pod_specs():
        for container in spec["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name


# ---- security ---------------------------------------------------------------------------------


def test_every_pod_and_container_is_restricted(rendered: Render) -> None:
    for name, spec in rendered.pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            assert not ctx.get("privileged"), name
            assert ctx.get("runAsUser", pod["runAsUser"]) != 0, name


def test_shoal_containers_get_a_writable_tmp(rendered: Render) -> None:
    for component in SHOAL_COMPONENTS:
        if not _has(rendered, component):
            continue
        spec = rendered.workload(component)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
    if _has(rendered, "dashboard"):
        # Streamlit writes under $HOME; the image's HOME is /tmp too, the chart makes it explicit.
        env = {e["name"]: e.get("value") for e in rendered.container("dashboard")["env"]}
        assert env["HOME"] == "/tmp"


def test_only_the_scheduler_gets_kubernetes_credentials(rendered: Render) -> None:
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    for workload in rendered.workloads():
        spec = workload["spec"]["template"]["spec"]
        if component_of(workload) == "scheduler":
            assert spec["serviceAccountName"] == account
            assert spec["automountServiceAccountToken"] is True
        else:
            assert spec["automountServiceAccountToken"] is False, workload["metadata"]["name"]
            assert "serviceAccountName" not in spec


def test_api_token_comes_from_the_secret_never_from_a_configmap(rendered: Render) -> None:
    for config_map in rendered.of_kind("ConfigMap"):
        assert "SHOAL_API_TOKEN" not in config_map["data"]
        assert "SHOAL_REDIS_PASSWORD" not in config_map["data"]
    tokens = {
        "scheduler": ("SHOAL_API_TOKEN", "SHOAL_API_READ_TOKEN", "SHOAL_API_DASHBOARD_TOKEN"),
        # The dashboard never holds the admin token: it acts with its own and viewers read.
        "dashboard": ("SHOAL_API_READ_TOKEN", "SHOAL_API_DASHBOARD_TOKEN"),
    }
    for component, names in tokens.items():
        if _has(rendered, component):
            env = {e["name"]: e for e in rendered.container(component)["env"]}
            for name in names:
                assert "secretKeyRef" in env[name]["valueFrom"], (component, name)
            if component == "dashboard":
                assert "SHOAL_API_TOKEN" not in env


# ---- scaling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", ["default", "scale-to-zero", "monitoring", "dev"])
def test_worker_deployment_has_no_replicas_while_the_autoscaler_owns_it(values_name: str) -> None:
    out = _by_name(values_name)
    worker = out.workload("worker")
    assert "replicas" not in worker["spec"]
    assert _config(out)["SHOAL_SCALER_BACKEND"] == "kubernetes"


def test_fixed_replicas_are_rendered_when_the_autoscaler_is_off() -> None:
    out = _by_name("fixed-replicas")
    assert out.workload("worker")["spec"]["replicas"] == 5
    data = _config(out)
    assert data["SHOAL_SCALER_BACKEND"] == "none"
    assert data["SHOAL_LEADER_ELECTION"] == "redis"


def test_scheduler_runs_two_replicas_spread_over_nodes(default: Render) -> None:
    scheduler = default.workload("scheduler")
    assert scheduler["spec"]["replicas"] == 2
    term = scheduler["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(term["labelSelector"], pod_labels(scheduler))


def test_worker_is_given_more_time_to_stop_than_it_takes_to_drain(rendered: Render) -> None:
    grace = float(_config(rendered)["SHOAL_GRACE_S"])
    assert rendered.workload("worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_pod_disruption_budgets_guard_scheduler_and_workers(default: Render) -> None:
    budgets = {component_of(p): p["spec"] for p in default.of_kind("PodDisruptionBudget")}
    assert budgets["scheduler"]["minAvailable"] == 1
    assert budgets["worker"]["maxUnavailable"] == 1
    assert budgets["worker"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# ---- configuration and environment ------------------------------------------------------------


def test_configmap_names_the_worker_deployment_pods_and_lease(rendered: Render) -> None:
    data = _config(rendered)
    worker = rendered.workload("worker")
    assert data["SHOAL_WORKER_DEPLOYMENT"] == worker["metadata"]["name"]
    selector = data["SHOAL_WORKER_POD_SELECTOR"]
    assert label_selector_string_matches(selector, pod_labels(worker))
    for other in rendered.workloads():
        if other is not worker:
            assert not label_selector_string_matches(selector, pod_labels(other)), other["metadata"]["name"]
    assert data["SHOAL_LEADER_LEASE_NAME"] == f"{RELEASE}-scheduler-leader"
    assert data["SHOAL_LOG_FORMAT"] in {"json", "text"}


def test_api_url_points_at_the_scheduler_service(rendered: Render) -> None:
    url = urlsplit(_config(rendered)["SHOAL_API_URL"])
    service = rendered.one("Service", url.hostname)
    assert component_of(service) == "scheduler"
    assert url.port == service["spec"]["ports"][0]["port"]


def test_pods_learn_their_name_and_namespace_from_the_downward_api(rendered: Render) -> None:
    for component in ("scheduler", "worker"):
        env = {e["name"]: e for e in rendered.container(component)["env"]}
        assert env["SHOAL_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["SHOAL_K8S_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_config_extra_and_large_numbers_render_as_the_services_expect() -> None:
    out = render(
        set_values={
            "config.extra.SHOAL_PRIORITY_AGING_S": "30",
            "config.retentionSeconds": "2592000",
            "worker.queues[0]": "emails",
            "worker.queues[1]": "reports",
            "worker.taskModules[0]": "myapp.tasks",
        }
    )
    data = _config(out)
    assert data["SHOAL_PRIORITY_AGING_S"] == "30"
    assert data["SHOAL_RETENTION_S"] == "2592000"
    assert data["SHOAL_QUEUES"] == "emails,reports"
    assert data["SHOAL_TASK_MODULES"] == "myapp.tasks"


def test_config_change_rolls_the_pods() -> None:
    before = render().workload("worker")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    after = render(set_values={"config.logLevel": "DEBUG"}).workload("worker")["spec"]["template"][
        "metadata"
    ]["annotations"]["checksum/config"]
    assert before != after


# ---- Redis ------------------------------------------------------------------------------------


def test_bundled_redis_is_upstream_with_aof_on_a_volume(default: Render) -> None:
    redis = default.workload("redis")
    assert redis["kind"] == "StatefulSet"
    container = redis["spec"]["template"]["spec"]["containers"][0]
    # The upstream image, pinned by digest (values.yaml redis.image.digest).
    assert re.fullmatch(r"redis:7(\.\d+)*@sha256:[0-9a-f]{64}", container["image"]), container["image"]
    conf = default.one("ConfigMap", f"{RELEASE}-redis")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf
    assert "appendfsync everysec" in conf
    assert "maxmemory-policy noeviction" in conf
    claim = redis["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == "data"
    # ACL users (tests/test_redis_acl.py runs them): the file is written at start, then Redis runs on it.
    assert container["command"] == ["sh", "-c"]
    assert container["args"] == [
        "sh /etc/redis/write-acl.sh /tmp/users.acl"
        " && exec redis-server /etc/redis/redis.conf --aclfile /tmp/users.acl"
    ]


def test_redis_with_one_password_when_acl_users_are_off() -> None:
    out = render(set_values={"redis.acl.enabled": "false"})
    container = out.workload("redis")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["/etc/redis/redis.conf", "--requirepass"]
    assert set(out.one("Secret", RELEASE)["data"]) == {"api-token", "redis-password"}
    env = {e["name"]: e for e in out.container("worker")["env"]}
    assert env["SHOAL_REDIS_URL"]["value"].startswith("redis://:$(SHOAL_REDIS_PASSWORD)@")


def test_redis_fsync_policy_and_persistence_are_configurable() -> None:
    out = render(set_values={"redis.appendfsync": "always", "redis.persistence.enabled": "false"})
    conf = out.one("ConfigMap", f"{RELEASE}-redis")["data"]["redis.conf"].splitlines()
    assert "appendfsync always" in conf
    redis = out.workload("redis")
    assert "volumeClaimTemplates" not in redis["spec"]
    volumes = {v["name"]: v for v in redis["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]


def test_redis_without_password_opens_protected_mode_only_behind_the_network_policy() -> None:
    out = render(set_values={"redis.auth.enabled": "false", "redis.acl.enabled": "false"})
    conf = out.one("ConfigMap", f"{RELEASE}-redis")["data"]["redis.conf"]
    assert "protected-mode no" in conf
    assert out.one("NetworkPolicy", f"{RELEASE}-redis")
    env = {e["name"]: e for e in out.container("scheduler")["env"]}
    assert env["SHOAL_REDIS_URL"]["value"] == f"redis://{RELEASE}-redis.{NAMESPACE}.svc:6379/0"
    assert "redis-password" not in out.one("Secret", RELEASE)["data"]


def test_external_redis_url_from_a_secret_replaces_the_statefulset() -> None:
    out = _by_name("external-redis")
    assert not out.of_kind("StatefulSet")
    assert f"{RELEASE}-redis" not in {p["metadata"]["name"] for p in out.of_kind("NetworkPolicy")}
    assert not out.of_kind("Secret"), "auth.existingSecret is set: the chart must not render its own"
    for component in ("scheduler", "worker"):
        env = {e["name"]: e for e in out.container(component)["env"]}
        assert env["SHOAL_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "shoal-redis-url",
            "key": "url",
        }
        assert "SHOAL_REDIS_PASSWORD" not in env
    env = {e["name"]: e for e in out.container("scheduler")["env"]}
    assert env["SHOAL_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "shoal-api", "key": "token"}
    for component in ("scheduler", "dashboard"):
        env = {e["name"]: e for e in out.container(component)["env"]}
        assert env["SHOAL_API_DASHBOARD_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "shoal-api",
            "key": "api-dashboard-token",
        }


def test_external_redis_plain_url() -> None:
    out = _by_name("external-redis-url")
    env = {e["name"]: e for e in out.container("worker")["env"]}
    assert env["SHOAL_REDIS_URL"]["value"] == "redis://redis.data.svc.cluster.local:6379/2"
    assert _config(out)["SHOAL_NAMESPACE"] == "shoal-prod"


def test_network_policy_lets_only_scheduler_and_workers_reach_redis(default: Render) -> None:
    policy = default.one("NetworkPolicy", f"{RELEASE}-redis")["spec"]
    redis = default.workload("redis")
    assert selector_matches(policy["podSelector"], pod_labels(redis))
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["redis"]
    allowed = {
        component_of(w)
        for w in default.workloads()
        if any(selector_matches(peer["podSelector"], pod_labels(w)) for peer in rule["from"])
    }
    assert allowed == {"scheduler", "worker"}
    assert all(set(peer) == {"podSelector"} for peer in rule["from"]), "no namespace-wide or IP peers"


# ---- exposure and monitoring -----------------------------------------------------------------


def test_ingress_routes_api_and_dashboard_with_tls() -> None:
    out = _by_name("ingress-tls")
    ingress = out.one("Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "shoal-example-com-tls", "hosts": ["shoal.example.com"]}]
    (rule,) = ingress["rules"]
    assert rule["host"] == "shoal.example.com"
    routes = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert routes["/api"] == {"name": f"{RELEASE}-scheduler", "port": {"name": "http"}}
    assert routes["/"] == {"name": f"{RELEASE}-dashboard", "port": {"name": "http"}}


def test_no_ingress_by_default(default: Render) -> None:
    assert not default.of_kind("Ingress")


def test_pods_carry_prometheus_scrape_annotations_by_default(default: Render) -> None:
    for component, port in (("scheduler", "8000"), ("worker", "9100")):
        annotations = default.workload(component)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port
        assert annotations["prometheus.io/path"] == "/metrics"


def test_monitoring_objects_target_the_right_pods_and_ports() -> None:
    out = _by_name("monitoring")
    monitor = out.one("ServiceMonitor")
    service = out.one("Service", f"{RELEASE}-scheduler")
    assert selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert not selector_matches(
        monitor["spec"]["selector"], out.one("Service", f"{RELEASE}-dashboard")["metadata"]["labels"]
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pod_monitor = out.one("PodMonitor")
    worker = out.container("worker")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in worker["ports"]}
    annotations = out.workload("worker")["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in annotations
    dashboard = out.one("ConfigMap", f"{RELEASE}-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["shoal.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text()
    )


def test_notes_tell_how_to_get_the_token_and_reach_the_api() -> None:
    done = run_helm(["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"])
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert f"get secret {RELEASE} -o jsonpath='{{.data.api-token}}'" in notes
    assert f"port-forward svc/{RELEASE}-scheduler 8000:8000" in notes
    assert f"deployment/{RELEASE}-worker between 0 and 10 pods" in notes


# ---- refused values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker.replicas": "-1"}, "/worker/replicas"),
        ({"worker.replicsa": "2"}, "replicsa"),
        ({"redis.appendfsync": "sometimes"}, "/redis/appendfsync"),
        ({"scheduler.leaderElection": "zookeeper"}, "/scheduler/leaderElection"),
        ({"ingress.apiPath": "api"}, "/ingress/apiPath"),
        ({"config.extra.PATH": "/evil"}, "'PATH' does not match pattern"),
        ({"worker.queues[0]": "bad queue"}, "/worker/queues/0"),
        ({"worker.queues[0]": "bulk=0"}, "/worker/queues/0"),
        ({"worker.queues[0]": "bulk=1001"}, "/worker/queues/0"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
        ({"monitoring.prometheusRule.failureRatio": "2"}, "failureRatio"),
    ],
)
def test_schema_refuses_bad_values_with_the_path(values: dict[str, str], message: str) -> None:
    assert message in render_error(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker.graceSeconds": "60"}, "must be larger than worker.graceSeconds"),
        ({"autoscaling.minReplicas": "5", "autoscaling.maxReplicas": "2"}, "must not exceed"),
        ({"config.heartbeatSeconds": "6"}, "at most half of config.leaseSeconds"),
        ({"redis.enabled": "false"}, "externalRedis.url or externalRedis.existingSecret is required"),
    ],
)
def test_template_refuses_combinations_that_would_break(values: dict[str, str], message: str) -> None:
    assert message in render_error(values)


# ---- the chart's Secret (without a cluster: see test_chart_secret.py for upgrades) -------------


def test_generated_secret_holds_random_token_and_password(default: Render) -> None:
    secret = default.one("Secret", RELEASE)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    alphabet = set(string.ascii_letters + string.digits)
    roles = ("scheduler", "worker", "probe")
    assert set(secret["data"]) == {"api-token", *(f"redis-{role}-password" for role in roles)}
    for key in secret["data"]:
        value = base64.b64decode(secret["data"][key]).decode()
        assert len(value) == 48
        assert set(value) <= alphabet


# ---- documentation of the values --------------------------------------------------------------


def _readme_rows() -> dict[str, Any]:
    rows = {}
    for line in (CHART / "README.md").read_text().split("## Values", 1)[1].splitlines():
        match = re.match(r"^\| `([^`]+)` \| `(.*)` \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = json.loads(match.group(2))
    return rows


def _leaves(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict) and values:
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: values}


def test_readme_values_table_documents_every_value_with_its_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = _readme_rows()
    assert len(rows) > 50
    for key, default in rows.items():
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"README documents {key}, absent from values.yaml"
            node = node[part]
        assert node == default, f"README default of {key} is {default!r}, values.yaml says {node!r}"
    for leaf in _leaves(values):
        assert any(leaf == key or leaf.startswith(key + ".") for key in rows), (
            f"{leaf} is not in the README table"
        )


def test_values_schema_types_every_documented_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in _readme_rows():
        node = schema
        for part in key.split("."):
            node = node.get("properties", {}).get(part) or {}
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        assert node.get("type") or node.get("oneOf"), f"values.schema.json does not type {key}"


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "shoal-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert "namespace" in variables
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'namespace="$namespace"' in target["expr"], (
                f"{panel['title']} ignores the namespace variable"
            )
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"panel {panel['title']} overlaps another"
        cells |= mine


def test_scheduler_leaves_the_service_before_it_stops(default: Render) -> None:
    scheduler = default.workload("scheduler")["spec"]["template"]["spec"]
    pause = int(scheduler["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert 0 < pause < scheduler["terminationGracePeriodSeconds"]
