"""Shoal's worker: runs tasks claimed from Redis. Task authors use `task`, `Retry` and `Fail`.

from shoal.worker import task, Retry, Fail

@task
async def resize(url: str) -> str: ...

@task(kind="process", timeout_s=60)
def crunch(n: int) -> int: ...
"""

from shoal.core.schedules import Schedule
from shoal.worker.registry import Fail, Retry, TaskRegistry, task

__version__ = "0.1.0"

__all__ = ["Fail", "Retry", "Schedule", "TaskRegistry", "__version__", "task"]
