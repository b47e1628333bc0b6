"""Every error Shoal raises on purpose, shared by the engine, the API and the SDK.

The server raises these; the API answers each with its `status`; the SDK turns an
answer back into the same class, so `except shoal.NotFound` works the same over HTTP
and over the direct Redis transport. This module imports nothing: `import shoal` stays light.
"""

from __future__ import annotations

from typing import Any


class ShoalError(Exception):
    """Base of every error Shoal raises on purpose.

    `detail` is what the server said (a message, or a list of validation errors with `loc`
    and `msg`); `status` is the HTTP status the API answers with (None: not an API answer).
    """

    status: int | None = None

    def __init__(self, message: str = "", *, detail: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else detail
        if status is not None:
            self.status = status


class ApiError(ShoalError):
    """The scheduler refused a request (an HTTP status >= 400 without a more precise class)."""

    status: int | None = 400


class NotFound(ApiError):
    """The task or worker named does not exist (or its retention ran out)."""

    status = 404


class Conflict(ApiError):
    """The operation is not legal in the object's current state (e.g. cancel a finished task)."""

    status = 409


class InvalidTask(ApiError):
    """A submission the scheduler refuses: invalid fields, bounds, unknown names or ids, cycles.

    `errors` lists the culprits when the server named them (`unknown_names`, `unknown_ids`, `cycle`).
    """

    status = 422

    def __init__(
        self,
        message: str = "",
        *,
        detail: Any = None,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, detail=detail, status=status)
        self.errors = errors or []


class Unauthorized(ApiError):
    """The API requires a bearer token (SHOAL_API_TOKEN) and the one sent is missing or wrong."""

    status = 401


class Forbidden(Unauthorized):
    """The token is known but may not do this: a read-only token asked to change something, or
    a token that may not act for people named one (`actor`)."""

    status = 403


class Unavailable(ShoalError):
    """The scheduler (or its Redis) could not be reached, or answered 502/503/504.

    `status` is 0 when no answer came at all. Requests that are safe to repeat were
    already retried before this was raised.
    """

    status = 0


class RequestTimeout(Unavailable):
    """The scheduler accepted the connection but did not answer in time."""


class TaskFailed(ShoalError):
    """A task ended without a result: `failed`, `cancelled` or `upstream_failed`.

    `error` is the remote error message and `traceback` the remote traceback (also
    chained as this exception's cause, so it is printed with it); `task` is the task
    as the scheduler answered it.
    """

    def __init__(self, task: Any) -> None:
        self.task = task
        self.task_id: str = task["id"]
        self.state: str = task["state"]
        self.error: str | None = task.get("error")
        self.traceback: str | None = task.get("traceback")
        what = {"failed": "failed", "cancelled": "was cancelled", "upstream_failed": "never ran"}
        message = f"task {task['name']} {self.task_id} {what.get(self.state, self.state)}"
        if self.error:
            message += f": {self.error}"
        super().__init__(message)
        if self.traceback:
            self.__cause__ = RemoteTraceback(self.traceback)


class RemoteTraceback(Exception):
    """The traceback of a task's failed attempt on its worker, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip()


class WaitTimeout(ShoalError, TimeoutError):
    """The task was not finished when the wait ended; `task` is how it stood then."""

    def __init__(self, task: Any, timeout_s: float) -> None:
        self.task = task
        self.timeout_s = timeout_s
        super().__init__(f"task {task['id']} is still {task['state']} after {timeout_s:g} s")
