"""Search tasks by text in their arguments, result or error: a bounded scan of the listing.

There is no full-text index: the listing (newest first, with the state, queue and name
filters and their indexes) is read page by page and each task's args, kwargs, result and error
are matched, case-insensitively, until enough matched or `budget` tasks were read. The answer
says how many it read and why it stopped, and its cursor carries on from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core import jsonutil
from shoal.core.models import Task
from shoal.core.states import TaskState
from shoal.core.store import Store

PAGE = 200
DEFAULT_BUDGET = 5000
MAX_BUDGET = 20_000


@dataclass(slots=True)
class SearchResult:
    tasks: list[Task]
    scanned: int
    next_cursor: str | None
    stopped: str  # "limit": enough matched; "budget": `budget` tasks read; "end": nothing left to read


def matches(task: Task, needle: str) -> bool:
    """`needle` (already case-folded) in the task's args, kwargs, result or error."""
    for value in (task.args, task.kwargs, task.result):
        if value not in (None, [], {}) and needle in jsonutil.dumps(value).casefold():
            return True
    return bool(task.error) and needle in str(task.error).casefold()


async def search_tasks(
    store: Store,
    text: str,
    state: TaskState | None,
    queue: str | None,
    name: str | None,
    limit: int,
    budget: int,
    cursor: str | None,
) -> SearchResult:
    """The tasks matching `text` among the next `budget` of the listing (whole pages, so the
    cursor resumes exactly after the last task read); at most `limit` + one page's worth."""
    needle = text.casefold()
    found: list[Task] = []
    scanned = 0
    while True:
        page, cursor = await store.list_tasks(state, queue, name, min(PAGE, budget - scanned), cursor)
        scanned += len(page)
        found += [task for task in page if matches(task, needle)]
        if cursor is None:
            return SearchResult(found, scanned, None, "end")
        if len(found) >= limit:
            return SearchResult(found, scanned, cursor, "limit")
        if scanned >= budget:
            return SearchResult(found, scanned, cursor, "budget")
