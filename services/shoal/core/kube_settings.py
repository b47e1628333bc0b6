"""Settings of the scheduler's Kubernetes side, read from `SHOAL_*` environment variables.

Which Deployment the autoscaler sizes, which pods are workers, where the leader Lease
lives and how the Lease is timed. `in_cluster()` tells whether this process runs in a pod.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where Kubernetes mounts a pod's service account token and namespace."""

# RFC 1123 label (namespaces) and subdomain (Deployment and Lease names), as the API server checks them.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# One requirement of a label selector: `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`.
_LABEL_KEY = r"([a-z0-9A-Z.\-]+/)?[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"^\s*(!?{_LABEL_KEY}"
    rf"|{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}"
    rf"|{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))\s*$"
)

_ENV = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore", env_file=None)


def in_cluster() -> bool:
    """True when this process runs in a Kubernetes pod with a service account to talk to the API."""
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and bool(os.environ.get("KUBERNETES_SERVICE_PORT"))
        and (SERVICE_ACCOUNT_DIR / "token").is_file()
    )


def _default_namespace() -> str:
    """the pod's own namespace (its service account's namespace file), else `default`"""
    try:
        return (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def split_label_selector(selector: str) -> list[str]:
    """The requirements of a label selector: commas inside `in (a,b)` do not split."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


class KubeSettings(BaseSettings):
    model_config = _ENV

    worker_deployment: str = "shoal-worker"
    """The worker Deployment whose `scale` subresource the autoscaler sets."""
    worker_pod_selector: str = "app.kubernetes.io/component=worker"
    """Label selector of the worker pods (the pod watcher and scale-in marking use it)."""
    k8s_namespace: str = Field(default_factory=_default_namespace)
    """Namespace of the worker Deployment and the leader Lease; in a pod, the pod's own namespace."""
    pod_name: str | None = None
    """This pod's name (downward API): the worker id of a worker, the Lease holder of a scheduler."""
    leader_election: Literal["auto", "redis", "kubernetes"] = "auto"
    """auto = a Kubernetes Lease when running in a cluster, the Redis lock elsewhere."""
    leader_lease_name: str = "shoal-scheduler-leader"
    """Name of the coordination.k8s.io/v1 Lease the scheduler replicas compete for."""
    leader_lease_duration_s: float = Field(default=15.0, gt=0, le=3600)
    """A Lease not renewed for this long may be taken over by another replica."""
    leader_renew_deadline_s: float = Field(default=10.0, gt=0, le=3600)
    """The leader steps down when it could not renew for this long (before others may take over)."""
    leader_retry_period_s: float = Field(default=2.0, gt=0, le=600)
    """How often candidates try to acquire and the leader renews."""
    k8s_request_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """Read timeout of one Kubernetes API request (watches use their own, longer one)."""

    @field_validator("worker_deployment", "leader_lease_name")
    @classmethod
    def _object_name(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError("must be a Kubernetes object name (lower-case RFC 1123 subdomain)")
        return value

    @field_validator("k8s_namespace")
    @classmethod
    def _namespace_name(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a Kubernetes namespace name (lower-case RFC 1123 label)")
        return value

    @field_validator("pod_name")
    @classmethod
    def _pod_name(cls, value: str | None) -> str | None:
        if value is not None and value.strip() == "":
            return None
        if value is not None and not _DNS_SUBDOMAIN.match(value):
            raise ValueError("must be a Kubernetes pod name")
        return value

    @field_validator("worker_pod_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not value.strip() or not all(_REQUIREMENT.match(part) for part in split_label_selector(value)):
            raise ValueError("must be a non-empty Kubernetes label selector, e.g. app=shoal,component=worker")
        return value.strip()

    @model_validator(mode="after")
    def _lease_timings_are_safe(self) -> KubeSettings:
        # The client-go rules: the leader must give up before anyone may take over, and must get
        # several renewal attempts in before it gives up.
        if self.leader_lease_duration_s <= self.leader_renew_deadline_s:
            raise ValueError("leader_lease_duration_s must be greater than leader_renew_deadline_s")
        if self.leader_renew_deadline_s <= 1.2 * self.leader_retry_period_s:
            raise ValueError("leader_renew_deadline_s must be greater than 1.2 * leader_retry_period_s")
        return self

    @property
    def leader_identity(self) -> str:
        """The Lease holder name: the pod name, else the host name (a pod's host name is its name)."""
        return self.pod_name or socket.gethostname()

    def resolved_leader_election(self) -> Literal["redis", "kubernetes"]:
        """The election backend to use: `auto` becomes `kubernetes` inside a cluster, else `redis`."""
        if self.leader_election == "auto":
            return "kubernetes" if in_cluster() else "redis"
        return self.leader_election
