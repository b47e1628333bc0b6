"""Batches: several submissions written in one atomic step, with dependencies between them.

    with client.batch() as batch:
        extract = batch.submit(fetch, "a")
        report = batch.submit(build_report.options(depends_on=[extract]), "weekly")
    report.result(timeout=60)

Nothing is sent until the block ends (or `submit_all()`); then all the tasks are created
together or, if any is refused, none is. Handles of the batch can be named in the
`depends_on` of later items; their ids are known once the batch is submitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from shoal.sdk.handles import AsyncHandle, Handle, _HandleBase
from shoal.sdk.records import TaskInfo, TaskRequest
from shoal.sdk.tasks import TaskBase, build_request

if TYPE_CHECKING:
    from shoal.sdk.aclient import AsyncClient
    from shoal.sdk.client import Client

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=_HandleBase)


class _Items:
    """The requests of a batch and the handles that will receive their tasks."""

    def __init__(self) -> None:
        self.requests: list[TaskRequest] = []
        self.handles: list[_HandleBase] = []
        self.sent = False

    def add(
        self, task: TaskBase[Any, Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any], make: Any
    ) -> Any:
        if self.sent:
            raise RuntimeError("this batch was submitted already; start another")
        ref = f"batch-{len(self.requests)}"
        mine = {id(handle): handle for handle in self.handles}

        def resolve(dep: Any) -> str:
            if isinstance(dep, _HandleBase) and id(dep) in mine and dep._pending is not None:
                return dep._pending.ref
            if isinstance(dep, _HandleBase):
                return dep.id
            if isinstance(dep, str):
                return dep
            raise TypeError(f"depends_on takes task ids or handles, not {dep!r}")

        request = build_request(task, args, kwargs, resolve)
        request["ref"] = ref
        handle = make(request["name"], ref)
        self.requests.append(request)
        self.handles.append(handle)
        return handle

    def take(self) -> list[TaskRequest]:
        if self.sent:
            raise RuntimeError("this batch was submitted already")
        self.sent = True
        return self.requests

    def bind(self, tasks: list[TaskInfo]) -> None:
        for handle, info in zip(self.handles, tasks, strict=True):
            handle._bind(info)


class Batch:
    """Submissions collected, then written at once (`Client.batch()`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._items = _Items()

    @overload
    def submit(self, task: TaskBase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Handle[R]: ...
    @overload
    def submit(self, task: str, /, *args: Any, **kwargs: Any) -> Handle[Any]: ...
    def submit(self, task: TaskBase[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Handle[Any]:
        """Add `task(*args, **kwargs)`; its handle gets an id when the batch is submitted."""
        return self._items.add(  # type: ignore[no-any-return]
            task, args, kwargs, lambda name, ref: Handle(self._client, None, name, ref=ref)
        )

    def submit_all(self) -> list[Handle[Any]]:
        """Write every task of the batch in one atomic call; their handles, in order."""
        requests = self._items.take()
        if requests:
            self._items.bind(self._client.submit_batch(requests))
        return self._items.handles  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._items.requests)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.submit_all()


class AsyncBatch:
    """`Batch` for `AsyncClient`: `async with client.batch() as b: b.submit(...)`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._items = _Items()

    @overload
    def submit(self, task: TaskBase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> AsyncHandle[R]: ...
    @overload
    def submit(self, task: str, /, *args: Any, **kwargs: Any) -> AsyncHandle[Any]: ...
    def submit(self, task: TaskBase[Any, Any] | str, /, *args: Any, **kwargs: Any) -> AsyncHandle[Any]:
        return self._items.add(  # type: ignore[no-any-return]
            task, args, kwargs, lambda name, ref: AsyncHandle(self._client, None, name, ref=ref)
        )

    async def submit_all(self) -> list[AsyncHandle[Any]]:
        requests = self._items.take()
        if requests:
            self._items.bind(await self._client.submit_batch(requests))
        return self._items.handles  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._items.requests)

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self.submit_all()
