"""`Handle[R]` and `AsyncHandle[R]`: a submitted task, its state, and its typed result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shoal.core.states import TaskState
from shoal.errors import TaskFailed, WaitTimeout
from shoal.sdk.records import Explanation, TaskInfo

if TYPE_CHECKING:
    from shoal.sdk.aclient import AsyncClient
    from shoal.sdk.client import Client

R = TypeVar("R")


def outcome(info: TaskInfo, timeout_s: float | None) -> Any:
    """The result of a finished task; TaskFailed for one that ended without, WaitTimeout if not done."""
    state = info["state"]
    if state == "succeeded":
        return info["result"]
    if state in ("failed", "cancelled", "upstream_failed"):
        raise TaskFailed(info)
    raise WaitTimeout(info, timeout_s if timeout_s is not None else 0.0)


class _Pending:
    """A handle's place in a batch that is not submitted yet."""

    __slots__ = ("ref",)

    def __init__(self, ref: str) -> None:
        self.ref = ref


class _HandleBase:
    __slots__ = ("_id", "_info", "_pending", "name")

    def __init__(
        self, task_id: str | None, name: str, info: TaskInfo | None = None, ref: str | None = None
    ) -> None:
        self._id = task_id
        self.name = name
        self._info = info
        self._pending = _Pending(ref) if ref is not None else None

    @property
    def id(self) -> str:
        """The task's id (known once its batch is submitted)."""
        if self._id is None:
            raise RuntimeError(f"task {self.name!r} has no id yet: its batch is not submitted")
        return self._id

    @property
    def submitted(self) -> TaskInfo | None:
        """The task as the submit answered it (None for a handle made from an id)."""
        return self._info

    def _bind(self, info: TaskInfo) -> None:
        self._id = info["id"]
        self._info = info
        self._pending = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._id or 'not submitted'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HandleBase) and self._id is not None and self._id == other._id

    def __hash__(self) -> int:
        return hash(self._id) if self._id is not None else id(self)


class Handle(_HandleBase, Generic[R]):
    """A submitted task: `result()` waits for its typed result; `state()`, `cancel()`, `explain()`."""

    __slots__ = ("_client",)

    def __init__(
        self,
        client: Client,
        task_id: str | None,
        name: str,
        info: TaskInfo | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__(task_id, name, info, ref)
        self._client = client

    def info(self) -> TaskInfo:
        """The task as it stands now."""
        return self._client.get(self.id)

    def state(self) -> TaskState:
        return TaskState(self.info()["state"])

    def wait(self, timeout: float | None = None) -> TaskInfo:
        """The task once finished, or as it stands after `timeout` seconds (None: no limit)."""
        return self._client.wait(self.id, timeout_s=timeout)

    def result(self, timeout: float | None = None) -> R:
        """The task's result once it succeeded; `TaskFailed` (with the remote error and traceback)
        if it failed, was cancelled or never ran; `WaitTimeout` if not finished within `timeout`."""
        return outcome(self.wait(timeout), timeout)  # type: ignore[no-any-return]

    def cancel(self) -> TaskInfo:
        return self._client.cancel(self.id)

    def retry(self) -> TaskInfo:
        """Queue a failed task again, with a fresh retry budget."""
        return self._client.retry(self.id)

    def explain(self) -> Explanation:
        """Why the task is where it is, in plain words."""
        return self._client.explain(self.id)


class AsyncHandle(_HandleBase, Generic[R]):
    """`Handle` for asyncio: the same methods, awaited."""

    __slots__ = ("_client",)

    def __init__(
        self,
        client: AsyncClient,
        task_id: str | None,
        name: str,
        info: TaskInfo | None = None,
        ref: str | None = None,
    ) -> None:
        super().__init__(task_id, name, info, ref)
        self._client = client

    async def info(self) -> TaskInfo:
        return await self._client.get(self.id)

    async def state(self) -> TaskState:
        return TaskState((await self.info())["state"])

    async def wait(self, timeout: float | None = None) -> TaskInfo:  # noqa: ASYNC109 - Handle.wait's twin
        return await self._client.wait(self.id, timeout_s=timeout)

    async def result(self, timeout: float | None = None) -> R:  # noqa: ASYNC109 - Handle.result's twin
        return outcome(await self.wait(timeout), timeout)  # type: ignore[no-any-return]

    async def cancel(self) -> TaskInfo:
        return await self._client.cancel(self.id)

    async def retry(self) -> TaskInfo:
        return await self._client.retry(self.id)

    async def explain(self) -> Explanation:
        return await self._client.explain(self.id)
