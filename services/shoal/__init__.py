"""Shoal: a Kubernetes-native distributed task scheduler. This module is its public Python API.

Define tasks (the workers import the module that holds them, SHOAL_TASK_MODULES):

    import shoal

    @shoal.task(queue="media", timeout_s=60, max_retries=5)
    def resize(path: str, width: int) -> str:
        if width <= 0:
            raise shoal.Fail("width must be > 0")      # fail for good, no retries
        ...

    @shoal.task                                        # async def: runs on the worker's loop
    async def fetch(url: str) -> int:
        raise shoal.Retry(delay_s=5)                   # try again in 5 s (counts as an attempt)

    @shoal.task
    def export(rows: int) -> None:
        for done in range(0, rows, 1000):
            shoal.progress(done / rows, f"{done} of {rows} rows")   # API, events, dashboard

Submit them by reference, typed (mypy checks the arguments and the result type):

    handle = resize.submit("a.png", 100)               # shoal.Handle[str], default client
    path: str = handle.result(timeout=30)              # or raises shoal.TaskFailed
    resize.options(priority=9, delay_s=60).submit("b.png", 200)   # per-submission options
    path = resize.run("c.png", 300)                    # submit and wait, one request

    client = shoal.Client()                            # SHOAL_API_URL, SHOAL_API_TOKEN
    with client.batch() as batch:                      # atomic, with dependencies
        first = batch.submit(resize, "a.png", 100)
        batch.submit(resize.options(depends_on=[first]), "a-small.png", 10)
    for event in client.events():                      # TaskEvent, WorkerEvent, Gap ...
        ...

    async with shoal.AsyncClient() as aclient:         # the same, for asyncio
        handle = await aclient.submit(fetch, "https://example.com")
        status = await handle.result()

Every error is a `shoal.ShoalError`: `NotFound`, `Conflict`, `InvalidTask`, `Unauthorized` (and
`Forbidden`, a token that may not do that),
`Unavailable` (after the retries that were safe), `TaskFailed` (with the remote error
and traceback), `WaitTimeout`. Importing this module loads neither the scheduler, the
dashboard nor the Kubernetes client.
"""

from shoal import _entry  # noqa: F401  (first: the worker's stop handlers, see the module)
from shoal._version import __version__
from shoal.core.progress import progress
from shoal.core.registry import Fail, Retry
from shoal.core.schedules import Schedule
from shoal.core.states import TaskState
from shoal.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidTask,
    NotFound,
    RemoteTraceback,
    RequestTimeout,
    ShoalError,
    TaskFailed,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from shoal.sdk.aclient import AsyncClient
from shoal.sdk.batch import AsyncBatch, Batch
from shoal.sdk.calls import task_request
from shoal.sdk.client import Client
from shoal.sdk.defaults import default_async_client, default_client, set_default_client
from shoal.sdk.events import Event, Gap, OtherEvent, ProgressEvent, ScalingEvent, TaskEvent, WorkerEvent
from shoal.sdk.handles import AsyncHandle, Handle
from shoal.sdk.records import (
    AttemptInfo,
    Explanation,
    Health,
    ProgressInfo,
    QueueStatus,
    ScalingDecision,
    ScalingStatus,
    Stats,
    TaskInfo,
    TaskPage,
    TaskRequest,
    WorkerStatus,
)
from shoal.sdk.tasks import AsyncTask, SubmitOptions, Task, remote, task

__all__ = [
    "ApiError",
    "AsyncBatch",
    "AsyncClient",
    "AsyncHandle",
    "AsyncTask",
    "AttemptInfo",
    "Batch",
    "Client",
    "Conflict",
    "Event",
    "Explanation",
    "Fail",
    "Forbidden",
    "Gap",
    "Handle",
    "Health",
    "InvalidTask",
    "NotFound",
    "OtherEvent",
    "ProgressEvent",
    "ProgressInfo",
    "QueueStatus",
    "RemoteTraceback",
    "RequestTimeout",
    "Retry",
    "ScalingDecision",
    "ScalingEvent",
    "ScalingStatus",
    "Schedule",
    "ShoalError",
    "Stats",
    "SubmitOptions",
    "Task",
    "TaskEvent",
    "TaskFailed",
    "TaskInfo",
    "TaskPage",
    "TaskRequest",
    "TaskState",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "WorkerEvent",
    "WorkerStatus",
    "__version__",
    "default_async_client",
    "default_client",
    "progress",
    "remote",
    "set_default_client",
    "task",
    "task_request",
]
