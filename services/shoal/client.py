"""ShoalClient: a small synchronous HTTP client of the scheduler API.

Used by the CLI, the tests, the benchmark and the dashboard. One keep-alive
connection pool per client; JSON through orjson; every error answer becomes a
`ShoalApiError` carrying the server's status and message.

    with ShoalClient() as shoal:                 # SHOAL_API_URL / SHOAL_API_TOKEN by default
        task = shoal.submit("echo", ["hello"])
        done = shoal.wait(task["id"], timeout_s=10)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import orjson

from shoal.core.settings import ApiSettings

API = "/api/v1"
SERVER_MAX_WAIT_S = 300.0  # the scheduler answers a wait after at most this long
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "upstream_failed"})


class ShoalApiError(Exception):
    """The scheduler refused a request (status >= 400), with its `detail` message."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ShoalConnectionError(ShoalApiError):
    """The scheduler could not be reached at all (status 0)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)


class ShoalClient:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if base_url is None or token is None:
            api = ApiSettings()
            base_url = base_url or api.api_url
            token = token if token is not None else api.api_token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "shoal-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ShoalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API call; the decoded JSON answer, or ShoalApiError."""
        content = None if body is None else orjson.dumps(body)
        headers = None if body is None else {"Content-Type": "application/json"}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                params=query or None,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.TransportError as error:
            raise ShoalConnectionError(f"cannot reach the scheduler at {self.base_url}: {error}") from error
        if response.status_code >= 400:
            raise ShoalApiError(response.status_code, _detail(response))
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return orjson.loads(response.content)
        return response.text

    # ------------------------------------------------------------------ tasks

    def submit(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        depends_on: Sequence[str] | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        delay_s: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit one task; the task as created (or as first created, for a known idempotency key)."""
        task = task_request(
            name,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            depends_on=depends_on,
            max_retries=max_retries,
            timeout_s=timeout_s,
            delay_s=delay_s,
            idempotency_key=idempotency_key,
        )
        return self.request("POST", f"{API}/tasks", body=task)  # type: ignore[no-any-return]

    def submit_batch(self, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Submit many tasks atomically (see `task_request`; items may carry `ref`); in order."""
        return self.request("POST", f"{API}/tasks/batch", body={"tasks": list(tasks)})["tasks"]  # type: ignore[no-any-return]

    def get(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"{API}/tasks/{task_id}")  # type: ignore[no-any-return]

    def wait(self, task_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The task once it is terminal, or as it stands when `timeout_s` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            chunk = max(0.0, min(deadline - time.monotonic(), SERVER_MAX_WAIT_S))
            task: dict[str, Any] = self.request(
                "GET",
                f"{API}/tasks/{task_id}/wait",
                params={"timeout_s": round(chunk, 3)},
                timeout=chunk + self.timeout,
            )
            if task["state"] in TERMINAL_STATES or time.monotonic() >= deadline:
                return task

    def list_tasks(
        self,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page, newest first: {"tasks": [...], "next_cursor": str | None}."""
        params = {"state": state, "queue": queue, "name": name, "limit": limit, "cursor": cursor}
        return self.request("GET", f"{API}/tasks", params=params)  # type: ignore[no-any-return]

    def iter_tasks(
        self, state: str | None = None, queue: str | None = None, name: str | None = None, page: int = 200
    ) -> Iterator[dict[str, Any]]:
        """Every matching task, following the cursor page by page."""
        cursor = None
        while True:
            result = self.list_tasks(state=state, queue=queue, name=name, limit=page, cursor=cursor)
            yield from result["tasks"]
            cursor = result["next_cursor"]
            if cursor is None:
                return

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self.request("POST", f"{API}/tasks/{task_id}/cancel")  # type: ignore[no-any-return]

    def retry(self, task_id: str) -> dict[str, Any]:
        return self.request("POST", f"{API}/tasks/{task_id}/retry")  # type: ignore[no-any-return]

    def explain(self, task_id: str) -> dict[str, Any]:
        """Why the task is where it is: {"state", "code", "reason", "details"}."""
        return self.request("GET", f"{API}/tasks/{task_id}/explain")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ system

    def workers(self) -> list[dict[str, Any]]:
        return self.request("GET", f"{API}/workers")["workers"]  # type: ignore[no-any-return]

    def drain_worker(self, worker_id: str) -> dict[str, Any]:
        return self.request("POST", f"{API}/workers/{worker_id}/drain")  # type: ignore[no-any-return]

    def queues(self) -> list[dict[str, Any]]:
        return self.request("GET", f"{API}/queues")["queues"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.request("GET", f"{API}/stats")  # type: ignore[no-any-return]

    def scaling(self) -> dict[str, Any]:
        return self.request("GET", f"{API}/scaling")  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        """/readyz's answer (`status` is "ready" or "not ready"); raises only if unreachable."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as error:
            raise ShoalConnectionError(f"cannot reach the scheduler at {self.base_url}: {error}") from error
        try:
            return orjson.loads(response.content)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError:
            raise ShoalApiError(response.status_code, response.text[:500]) from None

    def metrics(self) -> str:
        """The scheduler's Prometheus metrics, as text."""
        return self.request("GET", "/metrics")  # type: ignore[no-any-return]

    def events(
        self,
        since: float | None = None,
        last_event_id: str | None = None,
        read_timeout_s: float | None = 60.0,
    ) -> Iterator[dict[str, Any]]:
        """Events as they happen (each with its stream `id`), until the server ends the stream.

        `last_event_id` resumes after an event seen before; `since` replays from a time.
        The server sends a keep-alive comment every 15 s, so `read_timeout_s` detects a dead
        connection; None waits forever.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self.timeout, read=read_timeout_s)
        try:
            with self._http.stream(
                "GET",
                f"{API}/events",
                params={"since": since} if since is not None else None,
                headers=headers,
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ShoalApiError(response.status_code, _detail(response))
                yield from _parse_sse(response.iter_lines())
        except httpx.TransportError as error:
            raise ShoalConnectionError(f"event stream from {self.base_url} failed: {error}") from error


def task_request(
    name: str,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    ref: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A TaskCreate (or batch item, with `ref`) body; options left None take server defaults."""
    body: dict[str, Any] = {"name": name}
    if args:
        body["args"] = list(args)
    if kwargs:
        body["kwargs"] = dict(kwargs)
    if ref is not None:
        body["ref"] = ref
    for key, value in options.items():
        if value is not None:
            body[key] = list(value) if key == "depends_on" else value
    return body


def _detail(response: httpx.Response) -> Any:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:500] or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                event = orjson.loads("\n".join(data))
                data = []
                if isinstance(event, dict):
                    yield event
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
