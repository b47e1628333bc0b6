"""Shoal's thin client of the Kubernetes API: the only module that imports `kubernetes`.

It offers just the calls Shoal makes (the worker Deployment's `scale` subresource, worker
pods, the leader Lease), each one async: the official client is synchronous, so every call
runs in a thread and never blocks the event loop. Overload and outages (429, 5xx, refused
connections) are retried with exponential backoff that honours `Retry-After`; every other
API error becomes one of Shoal's own `K8sError` types at this boundary, and the rest of
Shoal sees plain dataclasses, never the client's models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import random
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar

import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from shoal.core.errors import ShoalError
from shoal.core.kube_settings import KubeSettings, in_cluster

log = logging.getLogger(__name__)

T = TypeVar("T")

RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
]
"""Exactly the API verbs this module calls; the chart's Role must grant these and nothing more."""

POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
"""Pods with a lower cost are removed first when their ReplicaSet scales in."""

_CONNECT_TIMEOUT_S = 5.0


class K8sError(ShoalError):
    """A Kubernetes API call failed; `status` is the HTTP status (None when no answer came)."""

    def __init__(
        self, message: str, *, status: int | None = None, reason: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class K8sNotFound(K8sError):
    """404: the object (or its namespace) does not exist."""


class K8sConflict(K8sError):
    """409: the object already exists, or it changed since we read it (stale resourceVersion)."""


class K8sForbidden(K8sError):
    """403: our service account may not do this; the chart's Role lacks a rule (see RBAC_RULES)."""


class K8sGone(K8sError):
    """410: the resourceVersion a watch started from is too old; list again, then watch."""


class K8sUnavailable(K8sError):
    """The API server is overloaded (429), failing (5xx) or unreachable, and retries ran out."""


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried on 429, 5xx and connection errors."""

    attempts: int = 5
    """Tries in all, the first included."""
    base_delay_s: float = 0.2
    """Backoff before the second try; it doubles each time (with jitter)."""
    max_delay_s: float = 5.0
    """Upper bound of one backoff."""
    max_retry_after_s: float = 30.0
    """A server's `Retry-After` is honoured up to this many seconds."""

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after the failed try number `attempt` (1-based)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_retry_after_s)
        backoff = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        # Half fixed, half random: spreads the retries of many clients but keeps growing.
        return backoff / 2 + random.uniform(0, backoff / 2)


@dataclass(frozen=True)
class ScaleState:
    """The `scale` subresource of a Deployment."""

    desired: int
    """spec.replicas: what was asked for (by us or by `kubectl scale`)."""
    actual: int
    """status.replicas: pods that exist now."""
    selector: str
    """Label selector of the Deployment's pods."""


@dataclass(frozen=True)
class ContainerInfo:
    """What Shoal needs to know about one container of a pod."""

    name: str
    restart_count: int
    terminated_reason: str | None = None
    """Set while the container is terminated (e.g. `Error`, `OOMKilled`, `Completed`)."""
    exit_code: int | None = None
    """Exit code of the current termination, when terminated."""
    last_terminated_reason: str | None = None
    """Why the previous instance ended, after a restart."""
    started_at: float | None = None
    """When the running instance started (epoch seconds, whole seconds as Kubernetes reports)."""
    finished_at: float | None = None
    """When the current termination, or else the previous instance's, happened (epoch seconds)."""


@dataclass(frozen=True)
class PodInfo:
    """A pod as Shoal sees it."""

    name: str
    uid: str
    phase: str
    resource_version: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[ContainerInfo, ...] = ()
    deletion_timestamp: str | None = None
    """Set once the pod is being deleted (it is draining within its grace period)."""
    status_reason: str | None = None
    """Why the pod is in its phase, when Kubernetes says (e.g. `Evicted`)."""

    @property
    def restart_count(self) -> int:
        return sum(c.restart_count for c in self.containers)


@dataclass(frozen=True)
class PodList:
    pods: list[PodInfo]
    resource_version: str
    """Watch from here to see every change after this list."""


@dataclass(frozen=True)
class PodEvent:
    """One event of a pod watch. BOOKMARK events carry only a newer resourceVersion."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    resource_version: str
    pod: PodInfo | None = None


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a coordination.k8s.io/v1 Lease, plus the resourceVersion it was read at."""

    holder: str | None
    duration_s: int | None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None
    """Sent back on replace: the API server refuses (409) if the Lease changed meanwhile."""


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP-date: the API server never sends one; fall back to our own backoff


def _error_from_api(exc: ApiException, what: str) -> K8sError:
    status = exc.status or None
    reason, message = str(exc.reason or ""), ""
    try:
        body = orjson.loads(exc.body) if exc.body else {}
        if isinstance(body, dict):
            reason = str(body.get("reason") or reason)
            message = str(body.get("message") or "")
    except orjson.JSONDecodeError:
        message = str(exc.body)[:200]
    return _error_from_status(status, reason, f"{what}: {status} {reason} {message}".rstrip(), exc.headers)


def _error_from_status(status: int | None, reason: str, text: str, headers: Any = None) -> K8sError:
    kind: type[K8sError] = {
        403: K8sForbidden,
        404: K8sNotFound,
        409: K8sConflict,
        410: K8sGone,
    }.get(status or 0, K8sError)
    if status is not None and (status == 429 or status >= 500):
        kind = K8sUnavailable
    return kind(text, status=status, reason=reason, retry_after_s=_retry_after(headers))


def _retryable(error: K8sError) -> bool:
    return isinstance(error, K8sUnavailable)


def _microtime(moment: datetime | None) -> datetime | None:
    """A time for a MicroTime field (RFC 3339 with exactly six fraction digits, in UTC).

    The client writes datetimes with isoformat(), which drops a zero fraction; the API server's
    MicroTime parser requires it, so a time on an exact second is moved by one microsecond.
    """
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=1) if moment.microsecond == 0 else moment


def _epoch_s(stamp: Any) -> float | None:
    """An RFC 3339 time from a raw API object (`2025-01-01T00:00:00Z`) in epoch seconds."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _pod_from_dict(obj: Mapping[str, Any]) -> PodInfo:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    containers = []
    for cs in status.get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or {}
        running = (cs.get("state") or {}).get("running") or {}
        last_terminated = (cs.get("lastState") or {}).get("terminated") or {}
        containers.append(
            ContainerInfo(
                name=str(cs.get("name", "")),
                restart_count=int(cs.get("restartCount") or 0),
                terminated_reason=(terminated.get("reason") or "Terminated") if terminated else None,
                exit_code=terminated.get("exitCode") if terminated else None,
                last_terminated_reason=(last_terminated.get("reason") or "Terminated")
                if last_terminated
                else None,
                started_at=_epoch_s(running.get("startedAt")),
                finished_at=_epoch_s((terminated or last_terminated).get("finishedAt")),
            )
        )
    return PodInfo(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        phase=str(status.get("phase") or "Unknown"),
        resource_version=str(meta.get("resourceVersion", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        containers=tuple(containers),
        deletion_timestamp=meta.get("deletionTimestamp"),
        status_reason=status.get("reason"),
    )


def _lease_from_model(lease: Any) -> LeaseRecord:
    spec = lease.spec
    return LeaseRecord(
        holder=(spec.holder_identity or None) if spec else None,
        duration_s=spec.lease_duration_seconds if spec else None,
        acquire_time=spec.acquire_time if spec else None,
        renew_time=spec.renew_time if spec else None,
        transitions=(spec.lease_transitions or 0) if spec else 0,
        resource_version=lease.metadata.resource_version,
    )


class KubeClient:
    """The Kubernetes API calls Shoal makes, in one namespace."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        namespace: str,
        *,
        retry: RetryPolicy | None = None,
        request_timeout_s: float = 10.0,
    ) -> None:
        self._api_client = api_client
        self.namespace = namespace
        self.retry = retry or RetryPolicy()
        self.request_timeout_s = request_timeout_s
        self._apps = k8s_client.AppsV1Api(api_client)
        self._core = k8s_client.CoreV1Api(api_client)
        self._coordination = k8s_client.CoordinationV1Api(api_client)

    # ---- construction -------------------------------------------------------------------------

    @staticmethod
    def _configuration() -> k8s_client.Configuration:
        configuration = k8s_client.Configuration()
        # Connection errors are retried by our own policy (with backoff), not silently by urllib3.
        configuration.retries = False
        return configuration

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None = None,
        *,
        context: str | None = None,
        namespace: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout_s: float = 10.0,
    ) -> Self:
        """A client from a kubeconfig file (default: $KUBECONFIG or ~/.kube/config).

        The namespace defaults to the one the context names, else `default`.
        """
        configuration = cls._configuration()
        try:
            path = path or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
            if namespace is None:
                contexts, current = k8s_config.list_kube_config_contexts(config_file=path)
                chosen = next((c for c in contexts if c["name"] == context), current) if context else current
                namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        except (ConfigException, OSError) as e:
            raise K8sError(f"cannot load the kubeconfig {path!r}: {e}") from e
        api_client = k8s_client.ApiClient(configuration)
        return cls(api_client, namespace, retry=retry, request_timeout_s=request_timeout_s)

    @classmethod
    def from_service_account(
        cls, namespace: str, *, retry: RetryPolicy | None = None, request_timeout_s: float = 10.0
    ) -> Self:
        """A client with this pod's service account (in-cluster configuration)."""
        configuration = cls._configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as e:
            raise K8sError(f"cannot load the in-cluster configuration: {e}") from e
        api_client = k8s_client.ApiClient(configuration)
        return cls(api_client, namespace, retry=retry, request_timeout_s=request_timeout_s)

    @classmethod
    def from_settings(cls, settings: KubeSettings) -> Self:
        """In a pod: the service account; elsewhere: the kubeconfig (for `make` against kind)."""
        if in_cluster():
            return cls.from_service_account(
                settings.k8s_namespace, request_timeout_s=settings.k8s_request_timeout_s
            )
        # Outside a cluster an explicit SHOAL_K8S_NAMESPACE wins, else the kubeconfig context's namespace.
        explicit = "k8s_namespace" in settings.model_fields_set
        return cls.from_kubeconfig(
            namespace=settings.k8s_namespace if explicit else None,
            request_timeout_s=settings.k8s_request_timeout_s,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._api_client.close()

    # ---- calling with retries -----------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        timeout = (_CONNECT_TIMEOUT_S, self.request_timeout_s)
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await asyncio.to_thread(fn, *args, _request_timeout=timeout, **kwargs)
            except ApiException as exc:
                error = _error_from_api(exc, what)
                if not _retryable(error) or attempt == self.retry.attempts:
                    raise error from exc
            except urllib3.exceptions.HTTPError as exc:
                error = K8sUnavailable(f"{what}: API server unreachable: {exc}")
                if attempt == self.retry.attempts:
                    raise error from exc
            delay = self.retry.delay(attempt, error.retry_after_s)
            log.warning(
                "kubernetes call failed, retrying",
                extra={"call": what, "status": error.status, "attempt": attempt, "delay_s": round(delay, 3)},
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ---- the worker Deployment's scale --------------------------------------------------------

    async def get_scale(self, deployment: str) -> ScaleState:
        """Desired and actual replicas of a Deployment (its `scale` subresource)."""
        scale = await self._call(
            f"get deployments/{deployment}/scale",
            self._apps.read_namespaced_deployment_scale,
            deployment,
            self.namespace,
        )
        return ScaleState(
            desired=int(scale.spec.replicas or 0) if scale.spec else 0,
            actual=int(scale.status.replicas or 0) if scale.status else 0,
            selector=(scale.status.selector or "") if scale.status else "",
        )

    async def get_replicas(self, deployment: str) -> int:
        """The Deployment's desired replica count (spec.replicas)."""
        return (await self.get_scale(deployment)).desired

    async def set_replicas(self, deployment: str, replicas: int) -> ScaleState:
        """Set the Deployment's desired replica count through its `scale` subresource."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be a non-negative integer, not {replicas!r}")
        scale = await self._call(
            f"patch deployments/{deployment}/scale",
            self._apps.patch_namespaced_deployment_scale,
            deployment,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )
        return ScaleState(
            desired=int(scale.spec.replicas or 0) if scale.spec else 0,
            actual=int(scale.status.replicas or 0) if scale.status else 0,
            selector=(scale.status.selector or "") if scale.status else "",
        )

    # ---- worker pods --------------------------------------------------------------------------

    def _pod(self, model: Any) -> PodInfo:
        return _pod_from_dict(self._api_client.sanitize_for_serialization(model))

    async def get_pod(self, name: str) -> PodInfo:
        pod = await self._call(f"get pods/{name}", self._core.read_namespaced_pod, name, self.namespace)
        return self._pod(pod)

    async def list_pods(self, selector: str) -> PodList:
        """The pods matching a label selector, and the resourceVersion to watch from."""
        pods = await self._call(
            f"list pods -l {selector}",
            self._core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
        )
        return PodList(
            pods=[self._pod(p) for p in pods.items or []],
            resource_version=str(pods.metadata.resource_version or "") if pods.metadata else "",
        )

    async def annotate_pod(self, name: str, annotations: Mapping[str, str | None]) -> PodInfo:
        """Set (or, with None, remove) annotations of a pod."""
        pod = await self._call(
            f"patch pods/{name}",
            self._core.patch_namespaced_pod,
            name,
            self.namespace,
            {"metadata": {"annotations": dict(annotations)}},
        )
        return self._pod(pod)

    async def set_pod_deletion_cost(self, name: str, cost: int) -> PodInfo:
        """Mark a pod cheaper (lower) or dearer to remove when the Deployment scales in."""
        return await self.annotate_pod(name, {POD_DELETION_COST: str(int(cost))})

    async def watch_pods(
        self, selector: str, resource_version: str, *, timeout_s: float = 300.0
    ) -> AsyncGenerator[PodEvent, None]:
        """Events of the pods matching `selector` after `resource_version`, until the server ends the
        watch (after about `timeout_s`) or the connection drops; then simply returns.

        Raises K8sGone when `resource_version` is too old (list again), other K8sErrors when the
        watch cannot start. Not retried here: the caller resumes from the last resourceVersion.
        Leave early only through `contextlib.aclosing(...)`, so that the connection closes at once.
        """
        loop = asyncio.get_running_loop()
        # A thread-safe queue read by polling would add latency; hand items to the loop instead.
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stopping = threading.Event()
        response: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def send(kind: str, item: Any) -> None:
            # RuntimeError: the loop closed while the watch was ending; nobody is listening.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(items.put_nowait, (kind, item))

        def pump() -> None:
            try:
                resp: Any = self._core.list_namespaced_pod(
                    self.namespace,
                    label_selector=selector,
                    resource_version=resource_version or None,
                    allow_watch_bookmarks=True,
                    timeout_seconds=max(1, int(timeout_s)),
                    watch=True,
                    _preload_content=False,
                    _request_timeout=(_CONNECT_TIMEOUT_S, timeout_s + 30),
                )
            except Exception as exc:
                send("error", exc)
                send("end", None)
                return
            response.put(resp)
            try:
                if stopping.is_set():
                    # The caller left while the request was in flight and found no response to
                    # shut down; reading on would hold the watch open until its next event.
                    return
                for line in iter_resp_lines(resp):
                    if stopping.is_set():
                        break
                    if line:
                        send("line", line)
            except Exception as exc:
                if not stopping.is_set():
                    log.info("pod watch connection dropped", extra={"error": repr(exc)})
            finally:
                # Close, not just release: a half-read stream must not go back into the pool.
                resp.close()
                resp.release_conn()
                send("end", None)

        thread = threading.Thread(target=pump, name="shoal-pod-watch", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = await items.get()
                if kind == "end":
                    return
                if kind == "error":
                    if isinstance(item, ApiException):
                        raise _error_from_api(item, f"watch pods -l {selector}") from item
                    raise K8sUnavailable(f"watch pods -l {selector}: {item}") from item
                event = self._pod_event(item)
                if event is not None:
                    yield event
        finally:
            stopping.set()
            if not response.empty():
                resp = response.get()
                with contextlib.suppress(ValueError, RuntimeError, OSError):  # already finished or released
                    resp.shutdown()  # unblocks the thread's read at once

    def _pod_event(self, line: str) -> PodEvent | None:
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("undecodable pod watch line skipped", extra={"line": line[:200]})
            return None
        kind, obj = raw.get("type"), raw.get("object") or {}
        if kind == "ERROR":
            status = obj.get("code")
            raise _error_from_status(
                status, str(obj.get("reason", "")), f"watch pods: {status} {obj.get('message', '')}"
            )
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if kind == "BOOKMARK":
            return PodEvent("BOOKMARK", rv)
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return None
        return PodEvent(kind, rv, _pod_from_dict(obj))

    # ---- the leader Lease ---------------------------------------------------------------------

    def _lease_body(self, name: str, record: LeaseRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace}
        if record.resource_version:
            metadata["resourceVersion"] = record.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder,
                "leaseDurationSeconds": record.duration_s,
                "acquireTime": _microtime(record.acquire_time),
                "renewTime": _microtime(record.renew_time),
                "leaseTransitions": record.transitions,
            },
        }

    async def get_lease(self, name: str) -> LeaseRecord:
        lease = await self._call(
            f"get leases/{name}", self._coordination.read_namespaced_lease, name, self.namespace
        )
        return _lease_from_model(lease)

    async def create_lease(self, name: str, record: LeaseRecord) -> LeaseRecord:
        """Create the Lease; K8sConflict if it exists already (someone else was first)."""
        lease = await self._call(
            f"create leases/{name}",
            self._coordination.create_namespaced_lease,
            self.namespace,
            self._lease_body(name, record),
        )
        return _lease_from_model(lease)

    async def replace_lease(self, name: str, record: LeaseRecord) -> LeaseRecord:
        """Replace the Lease; K8sConflict if it changed since `record.resource_version` was read."""
        lease = await self._call(
            f"update leases/{name}",
            self._coordination.replace_namespaced_lease,
            name,
            self.namespace,
            self._lease_body(name, record),
        )
        return _lease_from_model(lease)
