"""The chart's NetworkPolicies and its policy on the scheduler's pod patches, rendered by real helm.

NetworkPolicies are checked by evaluating their selectors against the pods the chart itself
renders (no CNI runs here). The ValidatingAdmissionPolicy's CEL expressions are evaluated
by a CEL interpreter (cel-python; no API server runs here, and kmock has no admission) on
the patch the scheduler really sends (`KubeClient.set_pod_deletion_cost`'s body) applied to
the worker pod the chart renders, and on the patches it must refuse. kubernetes-validate
checks the objects' schemas for every Kubernetes version the chart supports (test_chart.py).
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest

from helm_render import NAMESPACE, RELEASE, Render, component_of, pod_labels, render, selector_matches
from shoal.scheduler.kube import POD_DELETION_COST

INGRESS_NS = {"kubernetes.io/metadata.name": "ingress-nginx"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}


@pytest.fixture(scope="module")
def default() -> Render:
    return render()


def policy_for(rendered: Render, component: str) -> dict[str, Any]:
    pods = pod_labels(rendered.workload(component))
    [policy] = [
        p for p in rendered.of_kind("NetworkPolicy") if selector_matches(p["spec"]["podSelector"], pods)
    ]
    return dict(policy["spec"])


def peers(policy: dict[str, Any]) -> list[dict[str, Any]]:
    (rule,) = policy["ingress"]
    return list(rule["from"])


def ports(policy: dict[str, Any]) -> list[object]:
    (rule,) = policy["ingress"]
    return [p["port"] for p in rule["ports"]]


def test_every_component_has_exactly_one_ingress_policy(default: Render) -> None:
    for workload in default.workloads():
        policy = policy_for(default, component_of(workload))
        assert policy["policyTypes"] == ["Ingress"]


def test_the_api_is_open_to_the_ingress_controller_prometheus_and_this_namespace_only(
    default: Render,
) -> None:
    policy = policy_for(default, "scheduler")
    assert ports(policy) == ["http"]
    allowed = peers(policy)
    assert {"namespaceSelector": {"matchLabels": INGRESS_NS}, "podSelector": {}} in allowed
    assert {"namespaceSelector": {"matchLabels": MONITORING_NS}} in allowed
    assert {"podSelector": {}} in allowed  # the namespace's clients (no namespaceSelector: this namespace)
    local = [p["podSelector"] for p in allowed if "namespaceSelector" not in p and p["podSelector"]]
    reached_by = {
        component_of(w) for w in default.workloads() if any(selector_matches(s, pod_labels(w)) for s in local)
    }
    assert reached_by == {"dashboard"}
    assert not any("ipBlock" in p for p in allowed)


def test_without_namespace_clients_only_the_dashboard_and_helm_test_reach_the_api_locally() -> None:
    rendered = render(set_values={"networkPolicy.allowNamespaceClients": "false"})
    allowed = peers(policy_for(rendered, "scheduler"))
    assert {"podSelector": {}} not in allowed
    test_pod = rendered.one("Pod")
    local = [p["podSelector"] for p in allowed if "namespaceSelector" not in p]
    assert any(selector_matches(s, test_pod["metadata"]["labels"]) for s in local)


def test_the_dashboard_is_reachable_from_the_ingress_controller_only(default: Render) -> None:
    policy = policy_for(default, "dashboard")
    assert ports(policy) == ["http"]
    assert peers(policy) == [{"namespaceSelector": {"matchLabels": INGRESS_NS}, "podSelector": {}}]


def test_an_authenticating_proxy_can_be_let_in_to_the_dashboard() -> None:
    proxy = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}}}
    label = "networkPolicy.dashboardExtraFrom[0].podSelector.matchLabels." + r"app\.kubernetes\.io/name"
    rendered = render(set_values={label: "oauth2-proxy"})
    assert peers(policy_for(rendered, "dashboard"))[1:] == [proxy]


def test_worker_metrics_are_reachable_from_prometheus_only(default: Render) -> None:
    policy = policy_for(default, "worker")
    assert ports(policy) == ["metrics"]
    assert peers(policy) == [{"namespaceSelector": {"matchLabels": MONITORING_NS}}]


def test_the_selectors_of_the_peers_are_configurable() -> None:
    namespace_label = "networkPolicy.ingressNamespaceSelector.matchLabels." + r"kubernetes\.io/metadata\.name"
    rendered = render(
        set_values={
            namespace_label: "kube-system",
            "networkPolicy.ingressPodSelector.matchLabels.app": "traefik",
        }
    )
    assert peers(policy_for(rendered, "dashboard")) == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"app": "traefik"}},
        }
    ]


def test_with_network_policies_off_only_redis_keeps_its_own() -> None:
    rendered = render(set_values={"networkPolicy.enabled": "false"})
    assert [p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")] == [f"{RELEASE}-redis"]


# ---------------------------------------------------------------- the pod-patch admission policy


class PatchPolicy:
    """The rendered ValidatingAdmissionPolicy, evaluated as the API server would on an UPDATE."""

    def __init__(self, policy: dict[str, Any]) -> None:
        self.env = celpy.Environment()
        spec = policy["spec"]
        self.match = [self._program(c["expression"]) for c in spec["matchConditions"]]
        self.variables = [(v["name"], self._program(v["expression"])) for v in spec["variables"]]
        self.validations = [(self._program(v["expression"]), v["message"]) for v in spec["validations"]]

    def _program(self, expression: str) -> Any:
        return self.env.program(self.env.compile(expression))

    def denials(self, old: dict[str, Any], new: dict[str, Any], user: str) -> list[str] | None:
        """None if the policy does not apply to this request; else the messages of failed validations."""
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(new),
            "oldObject": celpy.json_to_cel(old),
            "request": celpy.json_to_cel({"userInfo": {"username": user}, "operation": "UPDATE"}),
        }
        if not all(bool(m.evaluate(activation)) for m in self.match):
            return None
        activation["variables"] = celpy.json_to_cel(
            {name: celpy_to_json(program.evaluate(activation)) for name, program in self.variables}
        )
        return [message for program, message in self.validations if not bool(program.evaluate(activation))]


def celpy_to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): celpy_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [celpy_to_json(v) for v in value]
    return str(value) if isinstance(value, str) else value


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies the client's patch body."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pod_of(rendered: Render, component: str, name: str) -> dict[str, Any]:
    template = rendered.workload(component)["spec"]["template"]
    metadata = {**template["metadata"], "name": name, "namespace": NAMESPACE}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


@pytest.fixture(scope="module")
def patch_policy(default: Render) -> tuple[PatchPolicy, str]:
    [policy] = default.of_kind("ValidatingAdmissionPolicy")
    [binding] = default.of_kind("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    account = default.workload("scheduler")["spec"]["template"]["spec"]["serviceAccountName"]
    return PatchPolicy(policy), f"system:serviceaccount:{NAMESPACE}:{account}"


def deletion_cost_patch(cost: int) -> dict[str, Any]:
    # The body KubeClient.set_pod_deletion_cost sends (through annotate_pod).
    return {"metadata": {"annotations": {POD_DELETION_COST: str(cost)}}}


def test_the_schedulers_deletion_cost_patch_on_a_worker_pod_is_allowed(
    default: Render, patch_policy: tuple[PatchPolicy, str]
) -> None:
    policy, scheduler = patch_policy
    worker = pod_of(default, "worker", "shoal-worker-abc")
    patched = merge_patch(worker, deletion_cost_patch(-5))
    assert policy.denials(worker, patched, scheduler) == []
    again = merge_patch(patched, deletion_cost_patch(7))  # changing it again
    assert policy.denials(patched, again, scheduler) == []
    removed = merge_patch(again, {"metadata": {"annotations": {POD_DELETION_COST: None}}})
    assert policy.denials(again, removed, scheduler) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metadata": {"labels": {"app.kubernetes.io/component": "scheduler"}}}, "spec, labels"),
        ({"metadata": {"labels": {"extra": "x"}}}, "spec, labels"),
        ({"metadata": {"annotations": {"other/annotation": "x"}}}, "change only"),
        ({"metadata": {"finalizers": ["x/y"]}}, "spec, labels"),
        ({"spec": {"nodeName": "elsewhere"}}, "spec, labels"),
    ],
    ids=["relabel-component", "add-label", "other-annotation", "finalizer", "spec"],
)
def test_any_other_change_to_a_worker_pod_is_denied(
    default: Render, patch_policy: tuple[PatchPolicy, str], change: dict[str, Any], message: str
) -> None:
    policy, scheduler = patch_policy
    worker = pod_of(default, "worker", "shoal-worker-abc")
    denied = policy.denials(worker, merge_patch(worker, change), scheduler)
    assert denied and any(message in m for m in denied), denied


def test_removing_another_annotation_is_denied(
    default: Render, patch_policy: tuple[PatchPolicy, str]
) -> None:
    policy, scheduler = patch_policy
    worker = merge_patch(
        pod_of(default, "worker", "shoal-worker-abc"), {"metadata": {"annotations": {"keep": "me"}}}
    )
    denied = policy.denials(
        worker, merge_patch(worker, {"metadata": {"annotations": {"keep": None}}}), scheduler
    )
    assert denied == [
        "the Shoal scheduler may remove only the controller.kubernetes.io/pod-deletion-cost annotation"
    ]


@pytest.mark.parametrize("component", ["scheduler", "dashboard", "redis"])
def test_the_deletion_cost_of_any_other_pod_is_denied(
    default: Render, patch_policy: tuple[PatchPolicy, str], component: str
) -> None:
    policy, scheduler = patch_policy
    pod = pod_of(default, component, f"shoal-{component}-0")
    assert policy.denials(pod, merge_patch(pod, deletion_cost_patch(1)), scheduler) == [
        "the Shoal scheduler may patch only this release's worker pods"
    ]
    other_release = merge_patch(
        pod_of(default, "worker", "w"), {"metadata": {"labels": {"app.kubernetes.io/instance": "b"}}}
    )
    assert policy.denials(other_release, merge_patch(other_release, deletion_cost_patch(1)), scheduler)


def test_other_users_are_not_subject_to_the_policy(
    default: Render, patch_policy: tuple[PatchPolicy, str]
) -> None:
    policy, _ = patch_policy
    worker = pod_of(default, "worker", "shoal-worker-abc")
    relabelled = merge_patch(worker, {"metadata": {"labels": {"team": "x"}}})
    assert (
        policy.denials(worker, relabelled, "system:serviceaccount:kube-system:deployment-controller") is None
    )


def test_the_policy_can_be_left_out() -> None:
    rendered = render(set_values={"rbac.restrictPodPatches": "false"})
    assert not rendered.of_kind("ValidatingAdmissionPolicy")
    assert not rendered.of_kind("ValidatingAdmissionPolicyBinding")
