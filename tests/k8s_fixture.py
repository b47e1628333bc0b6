"""A Kubernetes API server for tests: kmock's emulator made strict where Shoal depends on it.

kmock 0.8 serves a stateful Kubernetes API over real HTTP, but without resourceVersions,
update conflicts, PUT, label selectors, subresources or watch resumption (see
../shared/TOOLING.md) -- exactly what leader election, scaling and the pod watcher rely on.

How it is built: `KubeApiEmulator` subclasses `kmock.KubernetesEmulator` and keeps what kmock
does well: the aiohttp server on 127.0.0.1, request parsing (resource, namespace, name,
subresource), the request log, the versioned object store (`emu.objects[res, ns, name]`
with `.history`), discovery and `Status` error bodies. It overrides `_handle` so that requests
for the resources it serves (pods, apps/v1 deployments, coordination.k8s.io/v1 leases) get
API-server semantics instead of kmock's plain dict merging:

- every write gets a new cluster-wide resourceVersion (plus uid, creationTimestamp,
  generation on create); a write (PUT or PATCH) that carries a stale
  `metadata.resourceVersion` is refused with 409 Conflict, a create of an existing name with
  409 AlreadyExists; no-op writes keep the resourceVersion, as the API server does;
- PUT (replace), merge and strategic-merge PATCH (maps merged, lists replaced; JSON patch
  and server-side apply are refused with 415), DELETE (immediate: no graceful deletion);
- the namespace of the URL is written into created objects (a mismatching one is a 400);
- label selectors (`=`, `==`, `!=`, `key`, `!key`, `in`, `notin`) on list and watch; field
  selectors are refused with 400 rather than silently ignored;
- the `scale` subresource of deployments (GET returns an autoscaling/v1 Scale with
  spec/status replicas and the selector; PATCH/PUT change only the Deployment's
  spec.replicas) and a `status` subresource (writes change only `.status`);
- watches that start from a resourceVersion (replaying what changed after it), from nothing
  (ADDED for every current object first), end after `timeoutSeconds` with a BOOKMARK when
  bookmarks were allowed, answer 410 Gone after `compact()`, and turn label changes into
  ADDED/DELETED for a selector, as the API server does.

Test controls, all callable from the test's thread: `inject_error()` (any status, optional
Retry-After, for N requests matching a method/path; or a write carried out whose answer is
lost), `inject_delay()` (a slow answer),
`drop_watches()` (end open watches, cleanly or by cutting the connection), `compact()`,
`paused()` (several changes at once), and `create/patch/replace/delete/get` to play kubelet
or kubectl without going through HTTP. `running_kube_api()` runs it on its
own event loop in a thread, so the synchronous official client can call it from any test.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import datetime
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import orjson
import yaml

from shoal.scheduler.kube import KubeClient, RetryPolicy

PODS = "v1/pods"
DEPLOYMENTS = "apps/v1/deployments"
LEASES = "coordination.k8s.io/v1/leases"

_SERVED: dict[str, tuple[str, str, set[str]]] = {
    # resource: (apiVersion, kind, subresources)
    PODS: ("v1", "Pod", {"status"}),
    DEPLOYMENTS: ("apps/v1", "Deployment", {"status", "scale"}),
    LEASES: ("coordination.k8s.io/v1", "Lease", set()),
}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def api_error(status: int, message: str, reason: str | None = None) -> kmock.KubernetesError:
    """A failure that kmock renders as a Kubernetes `Status` body with this HTTP status."""
    return kmock.KubernetesError(
        status=status, reason=reason or _REASONS.get(status, "Unknown"), message=message, details={}
    )


def _status_body(status: int, message: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(status, "Unknown"),
        "code": status,
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- label selectors ----------------------------------------------------------------------------

_SET_REQ = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector, matched as the API server matches it."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        reqs: list[tuple[str, str, frozenset[str]]] = []
        for part in _split(text or ""):
            if not part.strip():
                if text and text.strip():
                    raise ValueError(f"empty requirement in label selector {text!r}")
                continue
            if m := _SET_REQ.match(part):
                values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
                reqs.append((m.group(1), m.group(2), values))
            elif m := _EQ_REQ.match(part):
                reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
            elif m := _EXISTS_REQ.match(part):
                reqs.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
            else:
                raise ValueError(f"unable to parse requirement {part!r} of label selector {text!r}")
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.requirements:
            present, value = key in labels, labels.get(key)
            ok = {
                "=": present and value in values,
                "!=": not present or value not in values,
                "in": present and value in values,
                "notin": not present or value not in values,
                "exists": present,
                "!exists": not present,
            }[op]
            if not ok:
                return False
        return True


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _selector_string(deployment: Mapping[str, Any]) -> str:
    match_labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


# ---- the emulator -------------------------------------------------------------------------------


@dataclass
class _Fault:
    status: int | None  # None: answer normally, only later (delay_s)
    method: str | None
    path: str | None
    watch: bool | None
    times: int
    retry_after: str | None
    message: str
    delay_s: float = 0.0
    after_commit: bool = False  # serve the request first, then answer with the error instead


@dataclass
class _Change:
    rv: int
    resource: kmock.resource
    namespace: str | None
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass
class _Watcher:
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: str | None = None  # "clean" or "abrupt"
    dropped_at: int = 0  # the resourceVersion when it was dropped: later changes are not sent

    def notify(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop already closed: the watch is over
            self.loop.call_soon_threadsafe(self.wake.set)


@attrs.define(kw_only=True)
class KubeApiEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with resourceVersions, conflicts, PUT, selectors, subresources."""

    _state: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _changes: list[_Change] = attrs.field(factory=list, init=False)
    _change_rvs: list[int] = attrs.field(factory=list, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    _watchers: list[_Watcher] = attrs.field(factory=list, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for name, (_, kind, subresources) in _SERVED.items():
            self.resources[name] = kmock.ResourceInfo(
                namespaced=True, kind=kind, singular=kind.lower(), subresources=subresources
            )

    # ---- test controls (thread-safe) ----------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        return self._rv

    @property
    def open_watches(self) -> int:
        with self._state:
            return len(self._watchers)

    @property
    def request_log(self) -> list[kmock.Request]:
        """Every request received, oldest first (kmock's own record)."""
        return list(self._requests)

    def inject_error(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
        times: int = 1,
        retry_after: float | int | None = None,
        message: str = "injected by the test",
        after_commit: bool = False,
    ) -> None:
        """Answer the next `times` requests that match (method, a substring of the path, watch or not)
        with this HTTP status and a Status body, and a Retry-After header if given. With
        `after_commit` the request is carried out first and only its answer is lost (a proxy's
        504 after the API server committed the write)."""
        with self._state:
            self._faults.append(
                _Fault(
                    status=status,
                    method=method.upper() if method else None,
                    path=path,
                    watch=watch,
                    times=times,
                    retry_after=None if retry_after is None else str(retry_after),
                    message=message,
                    after_commit=after_commit,
                )
            )

    def inject_delay(
        self,
        delay_s: float,
        *,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` matching requests normally, but only after `delay_s` seconds."""
        with self._state:
            self._faults.append(
                _Fault(
                    status=None,
                    method=method.upper() if method else None,
                    path=path,
                    watch=watch,
                    times=times,
                    retry_after=None,
                    message="",
                    delay_s=delay_s,
                )
            )

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch: cleanly (as on a server timeout) or by cutting the connection."""
        with self._state:
            watchers = list(self._watchers)
            for watcher in watchers:
                watcher.dropped = "abrupt" if abrupt else "clean"
                watcher.dropped_at = self._rv
        for watcher in watchers:
            watcher.notify()
        return len(watchers)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the server still (requests wait) while the block makes several changes at once.

        Only for emulator calls: an HTTP request made inside the block would wait for itself.
        """
        with self._state:
            yield

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: older resourceVersions get 410 Gone."""
        with self._state:
            self._compacted_rv = self._rv
            self._changes.clear()
            self._change_rvs.clear()

    def close(self) -> None:
        """End all watches and refuse new ones (before the server shuts down)."""
        with self._state:
            self._closed = True
        self.drop_watches()

    async def wait_for_watches(self, count: int, within_s: float = 5.0) -> None:
        """Wait (in an async test) until at least `count` watches are open."""
        async with asyncio.timeout(within_s):
            # Watches open on the server's own loop in another thread: an asyncio.Event cannot span it.
            while self.open_watches < count:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    # get/patch/delete deliberately replace kmock's HTTP shortcuts of the same names: tests reach the
    # emulator over HTTP through the official client; these act in-process, as kubelet or kubectl would.
    def get(  # type: ignore[override]
        self, resource: str, name: str, namespace: str = "default"
    ) -> dict[str, Any] | None:
        with self._state:
            return self._current(kmock.resource(resource), namespace, name)

    def create(self, resource: str, body: Mapping[str, Any], namespace: str = "default") -> dict[str, Any]:
        return self._create(kmock.resource(resource), namespace, dict(body))

    def patch(  # type: ignore[override]
        self,
        resource: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str = "default",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self._patch(kmock.resource(resource), namespace, name, dict(patch), subresource)

    def replace(
        self, resource: str, name: str, body: Mapping[str, Any], namespace: str = "default"
    ) -> dict[str, Any]:
        return self._replace(kmock.resource(resource), namespace, name, dict(body), None)

    def delete(  # type: ignore[override]
        self, resource: str, name: str, namespace: str = "default"
    ) -> dict[str, Any]:
        return self._delete(kmock.resource(resource), namespace, name)

    # ---- request dispatch ---------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        fault = self._take_fault(request)
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.after_commit and request.resource in self._served():
            await self._serve(request)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return aiohttp.web.json_response(
                _status_body(fault.status, fault.message), status=fault.status, headers=headers
            )
        if request.resource is None or request.resource not in self._served():
            # Discovery, /version and any reactions a test declared: kmock's own dispatch.
            return await kmock.RawHandler._handle(self, request)
        return await self._serve(request)

    def _served(self) -> set[kmock.resource]:
        return {kmock.resource(name) for name in _SERVED}

    def _take_fault(self, request: kmock.Request) -> _Fault | None:
        is_watch = request.params.get("watch") in ("true", "1")
        with self._state:
            for fault in self._faults:
                if fault.method is not None and fault.method != request.method.value:
                    continue
                if fault.path is not None and fault.path not in request.url.path:
                    continue
                if fault.watch is not None and fault.watch != is_watch:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        res, ns, name, sub = request.resource, request.namespace, request.name, request.subresource
        method = request.method.value
        if sub is not None and sub not in _SERVED[self._key(res)][2]:
            raise api_error(404, f"the server could not find the requested resource ({sub})")
        if method == "GET" and request.params.get("watch") in ("true", "1"):
            return await self._watch(request, res, ns)
        if method == "GET" and name is None:
            return aiohttp.web.json_response(self._list(res, ns, request.params))
        if (name is None) != (method == "POST"):
            raise api_error(405, f"{method} is not supported on this URL")
        if ns is None:
            raise api_error(404, "namespaced resources need a namespace in the URL")
        if method == "POST":
            return aiohttp.web.json_response(self._create(res, ns, self._body(request)), status=201)
        assert name is not None
        if method == "GET":
            return aiohttp.web.json_response(self._read(res, ns, name, sub))
        if method == "PUT":
            return aiohttp.web.json_response(self._replace(res, ns, name, self._body(request), sub))
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                raise api_error(415, f"patch type {content_type!r} is not supported by this emulator")
            return aiohttp.web.json_response(self._patch(res, ns, name, self._body(request), sub))
        if method == "DELETE":
            return aiohttp.web.json_response(self._delete(res, ns, name))
        raise api_error(405, f"{method} is not supported")

    @staticmethod
    def _body(request: kmock.Request) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise api_error(400, "the request body must be a JSON object")
        return request.data

    @staticmethod
    def _key(res: kmock.resource) -> str:
        return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"

    def _describe(self, res: kmock.resource, name: str) -> str:
        return f'{res.plural}.{res.group} "{name}"' if res.group else f'{res.plural} "{name}"'

    # ---- the store (callers hold no lock; every method takes it) ------------------------------

    def _current(self, res: kmock.resource, ns: str | None, name: str) -> dict[str, Any] | None:
        with self._state:
            key = (res, ns, name)
            if key not in self.objects:
                return None
            obj = self.objects[key]
            return None if obj.deleted else copy.deepcopy(obj.raw)

    def _existing(self, res: kmock.resource, ns: str | None, name: str) -> dict[str, Any]:
        current = self._current(res, ns, name)
        if current is None:
            raise api_error(404, f"{self._describe(res, name)} not found")
        return current

    def _record(
        self,
        res: kmock.resource,
        ns: str | None,
        name: str,
        kind: str,
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Store a new version with the next resourceVersion and tell the watches."""
        with self._state:
            self._rv += 1
            key = (res, ns, name)
            shown = copy.deepcopy(new if new is not None else old)
            assert shown is not None
            shown.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
            if new is None:
                self.objects[key].delete()
            elif key not in self.objects:
                self.objects[key] = shown
            elif self.objects[key].deleted:
                self.objects[key].create(shown)
            else:
                self.objects[key].history.append(shown)
            self._changes.append(_Change(self._rv, res, ns, kind, shown, old))
            self._change_rvs.append(self._rv)
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.notify()
        return copy.deepcopy(shown)

    def _check_precondition(
        self, res: kmock.resource, name: str, body: Mapping[str, Any], current: dict
    ) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
            raise api_error(
                409,
                f"Operation cannot be fulfilled on {self._describe(res, name)}: the object has been "
                "modified; please apply your changes to the latest version and try again",
                "Conflict",
            )

    def _create(self, res: kmock.resource, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        api_version, kind, _ = _SERVED[self._key(res)]
        meta = dict(body.get("metadata") or {})
        name = meta.get("name")
        if not name:
            raise api_error(422, f"{kind} is invalid: metadata.name: Required value: name is required")
        if meta.get("namespace") not in (None, ns):
            raise api_error(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        with self._state:
            if self._current(res, ns, name) is not None:
                raise api_error(409, f"{self._describe(res, name)} already exists", "AlreadyExists")
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            meta.pop("resourceVersion", None)
            obj = {**copy.deepcopy(body), "apiVersion": api_version, "kind": kind, "metadata": meta}
            return self._record(res, ns, name, "ADDED", obj, None)

    def _update(self, res: kmock.resource, ns: str, name: str, current: dict, new: dict) -> dict[str, Any]:
        """Write `new` over `current`, keeping the identity fields; no-op writes change nothing."""
        meta = dict(new.get("metadata") or {})
        for kept in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            if kept in current["metadata"]:
                meta[kept] = current["metadata"][kept]
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new = {**new, "apiVersion": current["apiVersion"], "kind": current["kind"], "metadata": meta}
        if new == current:
            return current
        return self._record(res, ns, name, "MODIFIED", new, current)

    def _replace(
        self, res: kmock.resource, ns: str, name: str, body: dict[str, Any], sub: str | None
    ) -> dict[str, Any]:
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise api_error(400, "the name of the object does not match the name on the URL")
        with self._state:
            current = self._existing(res, ns, name)
            self._check_precondition(res, name, body, current)
            if sub == "scale":
                return self._write_scale(res, ns, name, current, body)
            if sub == "status":
                return self._update(res, ns, name, current, {**current, "status": body.get("status")})
            return self._update(res, ns, name, current, self._keep_status(res, current, copy.deepcopy(body)))

    def _patch(
        self, res: kmock.resource, ns: str, name: str, patch: dict[str, Any], sub: str | None
    ) -> dict[str, Any]:
        with self._state:
            current = self._existing(res, ns, name)
            self._check_precondition(res, name, patch, current)
            if sub == "scale":
                return self._write_scale(res, ns, name, current, merge_patch(self._scale(current), patch))
            if sub == "status":
                new_status = merge_patch(current.get("status") or {}, patch.get("status") or {})
                return self._update(res, ns, name, current, {**current, "status": new_status})
            return self._update(
                res, ns, name, current, self._keep_status(res, current, merge_patch(current, patch))
            )

    def _keep_status(self, res: kmock.resource, current: dict, new: dict) -> dict:
        """Writes to the main resource leave `.status` alone when it has a status subresource."""
        if "status" in _SERVED[self._key(res)][2]:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in current:
                new["status"] = current["status"]
        return new

    def _delete(self, res: kmock.resource, ns: str, name: str) -> dict[str, Any]:
        with self._state:
            current = self._existing(res, ns, name)
            return self._record(res, ns, name, "DELETED", None, current)

    def _read(self, res: kmock.resource, ns: str, name: str, sub: str | None) -> dict[str, Any]:
        current = self._existing(res, ns, name)
        return self._scale(current) if sub == "scale" else current

    @staticmethod
    def _scale(deployment: dict[str, Any]) -> dict[str, Any]:
        meta = deployment["metadata"]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": int((deployment.get("spec") or {}).get("replicas", 1))},
            "status": {
                "replicas": int((deployment.get("status") or {}).get("replicas", 0)),
                "selector": _selector_string(deployment),
            },
        }

    def _write_scale(
        self, res: kmock.resource, ns: str, name: str, current: dict, scale: dict[str, Any]
    ) -> dict[str, Any]:
        replicas = (scale.get("spec") or {}).get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise api_error(422, f"Scale.autoscaling {name!r} is invalid: spec.replicas: must be >= 0")
        new = merge_patch(current, {"spec": {"replicas": replicas}})
        return self._scale(self._update(res, ns, name, current, new))

    def _list(self, res: kmock.resource, ns: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        selector = self._selector(params)
        api_version, kind, _ = _SERVED[self._key(res)]
        with self._state:
            items = [
                obj.raw
                for (r, n, _), obj in self.objects.items()
                if r == res
                and (ns is None or n == ns)
                and not obj.deleted
                and selector.matches(_labels(obj.raw))
            ]
            return {
                "apiVersion": api_version,
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": copy.deepcopy(items),
            }

    @staticmethod
    def _selector(params: Mapping[str, str]) -> LabelSelector:
        if params.get("fieldSelector"):
            raise api_error(400, "field selectors are not supported by this emulator")
        try:
            return LabelSelector.parse(params.get("labelSelector"))
        except ValueError as e:
            raise api_error(400, str(e)) from e

    # ---- watch --------------------------------------------------------------------------------

    @staticmethod
    def _event(change: _Change, res: kmock.resource, ns: str | None, selector: LabelSelector) -> dict | None:
        if change.resource != res or (ns is not None and change.namespace != ns):
            return None
        old_match = change.old is not None and selector.matches(_labels(change.old))
        new_match = change.type != "DELETED" and selector.matches(_labels(change.obj))
        if change.type == "ADDED":
            kind = "ADDED" if new_match else None
        elif change.type == "DELETED":
            kind = "DELETED" if old_match else None
        else:  # a label change moves the object into or out of the selection
            kind = {(True, True): "MODIFIED", (True, False): "DELETED", (False, True): "ADDED"}.get(
                (old_match, new_match)
            )
        return None if kind is None else {"type": kind, "object": change.obj}

    async def _watch(
        self, request: kmock.Request, res: kmock.resource, ns: str | None
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        selector = self._selector(params)
        since = params.get("resourceVersion") or "0"
        if not since.isdigit():
            raise api_error(400, f"invalid resourceVersion {since!r}")
        timeout = float(params.get("timeoutSeconds") or 1800)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        watcher = _Watcher(asyncio.get_running_loop())
        with self._state:
            if self._closed:
                raise api_error(503, "the server is shutting down")
            gone = since != "0" and int(since) < self._compacted_rv
            if since == "0":  # no resourceVersion: the current state first, then what changes
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(obj.raw)}
                    for (r, n, _), obj in self.objects.items()
                    if r == res
                    and (ns is None or n == ns)
                    and not obj.deleted
                    and selector.matches(_labels(obj.raw))
                ]
                position = self._rv
            else:
                initial, position = [], int(since)
            self._watchers.append(watcher)

        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            if gone:
                error = _status_body(
                    410, f"too old resource version: {since} ({self._compacted_rv})", "Expired"
                )
                await self._send(response, {"type": "ERROR", "object": error})
                return await self._finish(response, watcher)
            for event in initial:
                await self._send(response, event)
            while True:
                watcher.wake.clear()
                with self._state:
                    start = bisect.bisect_right(self._change_rvs, position)
                    pending = self._changes[start:]
                    position = max(position, self._rv)
                    if watcher.dropped:
                        pending = [c for c in pending if c.rv <= watcher.dropped_at]
                        position = min(position, max(watcher.dropped_at, int(since)))
                for change in pending:
                    shown = self._event(change, res, ns, selector)
                    if shown is not None:
                        await self._send(response, shown)
                remaining = deadline - asyncio.get_running_loop().time()
                if watcher.dropped or remaining <= 0:
                    break
                transport = request._raw_request.transport
                if transport is None or transport.is_closing():
                    break  # the client went away
                with contextlib.suppress(TimeoutError):
                    # Also wakes up now and then to notice a client that went away.
                    await asyncio.wait_for(watcher.wake.wait(), timeout=min(remaining, 0.5))
            if bookmarks and watcher.dropped != "abrupt":
                bookmark = {
                    "kind": _SERVED[self._key(res)][1],
                    "metadata": {"resourceVersion": str(position)},
                }
                await self._send(response, {"type": "BOOKMARK", "object": bookmark})
        except ConnectionError:
            pass
        finally:
            # The test server cancels the handler when its client goes away: unregister regardless.
            self._unregister(watcher)
        return await self._finish(response, watcher, request)

    async def _finish(
        self, response: aiohttp.web.StreamResponse, watcher: _Watcher, request: kmock.Request | None = None
    ) -> aiohttp.web.StreamResponse:
        self._unregister(watcher)
        if watcher.dropped == "abrupt" and request is not None and request._raw_request is not None:
            transport = request._raw_request.transport
            if transport is not None:
                transport.abort()  # no terminating chunk: the client sees a broken stream
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    def _unregister(self, watcher: _Watcher) -> None:
        with self._state:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    @staticmethod
    async def _send(response: aiohttp.web.StreamResponse, event: dict[str, Any]) -> None:
        await response.write(orjson.dumps(event) + b"\n")


# ---- objects complete enough for the official client's models -----------------------------------


def deployment(name: str, replicas: int = 1, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    labels = dict(labels or {"app.kubernetes.io/component": "worker"})
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "shoal:test"}]},
            },
        },
        "status": {"replicas": replicas},
    }


def pod(
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    phase: str = "Running",
    restarts: int = 0,
    container: str = "worker",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": dict(labels or {"app.kubernetes.io/component": "worker"})},
        "spec": {"containers": [{"name": container, "image": "shoal:test"}]},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": container,
                    "image": "shoal:test",
                    "imageID": "",
                    "ready": phase == "Running",
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": _now()}},
                }
            ],
        },
    }


# ---- running it ---------------------------------------------------------------------------------

FAST_RETRY = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=5.0)


@dataclass
class KubeApi:
    """A running emulator: its URL, a kubeconfig pointing at it, and a way to get a KubeClient."""

    emu: KubeApiEmulator
    url: str
    kubeconfig: Path
    namespace: str

    def client(self, retry: RetryPolicy = FAST_RETRY, request_timeout_s: float = 5.0) -> KubeClient:
        return KubeClient.from_kubeconfig(
            str(self.kubeconfig), retry=retry, request_timeout_s=request_timeout_s
        )


def write_kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    """A kubeconfig whose only context points at `server` (with a dummy token)."""
    context: dict[str, str] = {"cluster": "test", "user": "test"}
    if namespace is not None:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "test", "context": context}],
            }
        )
    )
    return path


@contextlib.contextmanager
def running_kube_api(tmp_path: Path, namespace: str = "default") -> Iterator[KubeApi]:
    """Serve a KubeApiEmulator on 127.0.0.1 from its own thread and event loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        box["stop"] = asyncio.Event()
        async with KubeApiEmulator() as emu, kmock.Server(emu) as server:
            box["emu"], box["url"] = emu, str(server.url).rstrip("/")
            ready.set()
            await box["stop"].wait()
            emu.close()
            await asyncio.sleep(0.05)  # let the ended watches send their last chunk

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True, name="kube-api")
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the Kubernetes API emulator did not start")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", box["url"], namespace)
    try:
        yield KubeApi(emu=box["emu"], url=box["url"], kubeconfig=kubeconfig, namespace=namespace)
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        loop.close()
