"""The chart's RBAC grants exactly the Kubernetes API calls the scheduler makes, and nothing more.

Two links are checked: the code's calls (found by reading services/shoal/scheduler/kube.py, the only
module that imports the client) equal `kube.RBAC_RULES`, and the rendered Role equals
`RBAC_RULES`, namespaced, with the fixed-name objects pinned by resourceNames.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from shoal.scheduler import kube
from tests.helm_render import CI_VALUES, NAMESPACE, RELEASE, ROOT, Render, render

Triple = tuple[str, str, str]
"""(apiGroup, resource, verb)"""

# The client classes kube.py builds, by the attribute it keeps them in, and their API group.
API_GROUPS = {"_apps": "apps", "_core": "", "_coordination": "coordination.k8s.io"}
# Generated client methods are `<action>_namespaced_<resource>`; the action is the RBAC verb.
ACTION_VERBS = {
    "read": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
}
RESOURCES = {
    "deployment_scale": "deployments/scale",
    "deployment": "deployments",
    "pod": "pods",
    "lease": "leases",
}
_METHOD = re.compile(r"^(?P<action>[a-z]+)_namespaced_(?P<resource>[a-z_]+)$")


def _triples(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _calls_in_kube_module() -> set[Triple]:
    """Every Kubernetes API call kube.py makes, from its source."""
    tree = ast.parse(Path(kube.__file__).read_text())
    found: set[Triple] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Attribute):
            continue
        holder = node.value
        if not (
            isinstance(holder.value, ast.Name) and holder.value.id == "self" and holder.attr in API_GROUPS
        ):
            continue
        match = _METHOD.match(node.attr)
        assert match, f"kube.py calls {holder.attr}.{node.attr}: teach this test its verb"
        resource = RESOURCES.get(match["resource"])
        verb = ACTION_VERBS.get(match["action"])
        assert resource and verb, f"unknown client method {node.attr}: add it to RESOURCES/ACTION_VERBS"
        found.add((API_GROUPS[holder.attr], resource, verb))
    for node in ast.walk(tree):
        if _is_watch_call(node):
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            api, match = node.func.value, _METHOD.match(node.func.attr)
            assert isinstance(api, ast.Attribute) and match, f"unexpected watch call {ast.unparse(node)}"
            found.add((API_GROUPS[api.attr], RESOURCES[match["resource"]], "watch"))
    return found


def _is_watch_call(node: ast.AST) -> bool:
    """A `list_*(..., watch=True)` call: the client turns it into a watch request."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if not node.func.attr.startswith("list_"):
        return False
    return any(
        k.arg == "watch" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords
    )


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def rendered(request: pytest.FixtureRequest) -> Render:
    return render([request.param])


def test_rbac_rules_list_exactly_what_the_kubernetes_module_calls() -> None:
    assert _calls_in_kube_module() == _triples(kube.RBAC_RULES)


def test_role_grants_exactly_rbac_rules(rendered: Render) -> None:
    assert _triples(rendered.one("Role")["rules"]) == _triples(kube.RBAC_RULES)


def test_role_pins_the_worker_deployment_and_the_lease_by_name(rendered: Render) -> None:
    config = rendered.one("ConfigMap", f"{RELEASE}-config")["data"]
    pinned = {
        (rule["resources"][0], verb): rule.get("resourceNames")
        for rule in rendered.one("Role")["rules"]
        for verb in rule["verbs"]
    }
    assert pinned["deployments/scale", "get"] == [config["SHOAL_WORKER_DEPLOYMENT"]]
    assert pinned["deployments/scale", "patch"] == [config["SHOAL_WORKER_DEPLOYMENT"]]
    assert pinned["leases", "get"] == [config["SHOAL_LEADER_LEASE_NAME"]]
    assert pinned["leases", "update"] == [config["SHOAL_LEADER_LEASE_NAME"]]
    # The API server cannot check a name on create, nor on list/watch of the pods.
    assert pinned["leases", "create"] is None
    assert pinned["pods", "watch"] is None


def test_no_cluster_wide_rbac(rendered: Render) -> None:
    kinds = {doc["kind"] for doc in rendered.docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for doc in rendered.of_kind("Role") + rendered.of_kind("RoleBinding"):
        assert doc["metadata"]["namespace"] == NAMESPACE


def test_role_binding_binds_the_scheduler_service_account(rendered: Render) -> None:
    binding = rendered.one("RoleBinding")
    role = rendered.one("Role")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    scheduler = [w for w in rendered.workloads() if w["metadata"]["name"] == f"{RELEASE}-scheduler"]
    assert scheduler[0]["spec"]["template"]["spec"]["serviceAccountName"] == account


def test_rbac_and_service_account_can_be_left_to_the_cluster_admin() -> None:
    out = render(
        set_values={"rbac.create": "false", "serviceAccount.create": "false", "serviceAccount.name": "ops-sa"}
    )
    assert not out.of_kind("Role") and not out.of_kind("RoleBinding") and not out.of_kind("ServiceAccount")
    scheduler = out.one("Deployment", f"{RELEASE}-scheduler")
    assert scheduler["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"


def _documented_rules() -> set[Triple]:
    """The RBAC table of docs/kubernetes.md: | API group | resource | verbs | used for |."""
    text = (ROOT / "docs" / "kubernetes.md").read_text().split("## RBAC", 1)[1].split("\n## ", 1)[0]
    found: set[Triple] = set()
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        group = re.sub(r'`(""|[^`]*)`.*', r"\1", cells[0]).replace('""', "")
        resource = cells[1].strip("`")
        found |= {(group, resource, verb.strip()) for verb in cells[2].split(",")}
    return found


def test_docs_list_exactly_the_rbac_rules() -> None:
    assert _documented_rules() == _triples(kube.RBAC_RULES)
