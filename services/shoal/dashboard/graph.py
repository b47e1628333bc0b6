"""A task's dependency graph: gather the related tasks, then draw them as Graphviz DOT.

Nodes are coloured by state and link to `?task=<id>`, so a click opens that task in the
dashboard. Edges point the way work flows: from a dependency to the task that waits on it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from shoal.dashboard.format import STATE_COLORS, short_id

MAX_NODES = 60
# A focused view of the neighbourhood: from each task at most this many of its dependencies and
# as many of its dependents are drawn (the root's own a few more); the others are one "+N more"
# node that opens that task, whose own view shows them. A fan-out of 1,000 stays readable.
PER_NODE = 8
PER_ROOT = 16

TaskDict = Mapping[str, Any]


def _related(task: Mapping[str, Any], per_direction: int) -> list[str]:
    """Ids linked to `task` either way, nearest first: its dependencies and its dependents
    (as the API lists them), at most `per_direction` of each."""
    return [*(task.get("depends_on") or [])[:per_direction], *(task.get("dependents") or [])[:per_direction]]


def collect_related(
    root: TaskDict, fetch: Callable[[str], TaskDict | None], limit: int = MAX_NODES
) -> dict[str, TaskDict | None]:
    """Breadth-first walk from `root` over dependencies and dependents, at most `limit` tasks
    and at most PER_NODE (PER_ROOT from the root) each way from each task.

    `fetch(id)` returns a task dict or None when it no longer exists. The result maps every
    visited id to its task; ids seen but not fetched (past the limits) are left out.
    """
    found: dict[str, TaskDict | None] = {root["id"]: root}
    todo: deque[str] = deque(_related(root, PER_ROOT))
    while todo and len(found) < limit:
        task_id = todo.popleft()
        if task_id in found:
            continue
        task = fetch(task_id)
        found[task_id] = task
        if task is not None:
            todo.extend(i for i in _related(task, PER_NODE) if i not in found)
    return found


def hidden_links(task: TaskDict, shown: Mapping[str, Any]) -> tuple[int, int]:
    """How many of the task's dependencies and of its dependents are not among `shown`."""
    deps = task.get("depends_on") or []
    dependents = task.get("dependents") or []
    total_dependents = task.get("dependents_count")
    if total_dependents is None:
        total_dependents = len(dependents)
    hidden_deps = sum(1 for d in deps if d not in shown)
    hidden_dependents = total_dependents - sum(1 for d in dependents if d in shown)
    return hidden_deps, max(0, hidden_dependents)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _font_color(fill: str) -> str:
    red, green, blue = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#111111" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "#ffffff"


def dependency_dot(root_id: str, tasks: Mapping[str, TaskDict | None], link_base: str = "") -> str:
    """DOT source of the graph of `tasks` around `root_id`.

    Only edges between tasks in `tasks` are drawn; a task that no longer exists is drawn
    dashed and grey. `link_base` is put before `?task=<id>` in each node's link.
    """
    lines = [
        "digraph dependencies {",
        '  graph [rankdir=LR, bgcolor="transparent", nodesep=0.25, ranksep=0.5, fontname="Helvetica"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=1.2,'
        ' color="#44444455"];',
        '  edge [color="#8a94a6", arrowsize=0.7];',
    ]
    for task_id, task in tasks.items():
        url = f"{link_base}?task={task_id}"
        attrs: dict[str, str] = {"URL": url, "target": "_self", "tooltip": task_id}
        if task is None:
            attrs.update(label=f"{short_id(task_id)}\\n(gone)", fillcolor="#e5e7eb", style="rounded,dashed")
        else:
            state = str(task.get("state", ""))
            fill = STATE_COLORS.get(state, "#d1d5db")
            name = str(task.get("name", "?"))
            attrs.update(
                label=f"{name}\\n{short_id(task_id)} · {state.replace('_', ' ')}",
                fillcolor=fill,
                fontcolor=_font_color(fill),
            )
        if task_id == root_id:
            attrs.update(penwidth="3", color="#111827")
        rendered = ", ".join(
            f"{key}={_quote(value) if key != 'label' else _quote_label(value)}"
            for key, value in attrs.items()
        )
        lines.append(f"  {_quote(task_id)} [{rendered}];")
    for task_id, task in tasks.items():
        if task is None:
            continue
        for dep in task.get("depends_on", []):
            if dep in tasks:
                lines.append(f"  {_quote(dep)} -> {_quote(task_id)};")
        lines += _more_nodes(task_id, task, tasks, link_base)
    lines.append("}")
    return "\n".join(lines)


def _quote_label(label: str) -> str:
    # Labels keep their "\n" line breaks, which `_quote` would escape.
    return '"' + label.replace('"', '\\"') + '"'


def _more_nodes(task_id: str, task: TaskDict, tasks: Mapping[str, Any], link_base: str) -> list[str]:
    """The "+N more" nodes of a task whose links are not all drawn; each opens that task."""
    hidden_deps, hidden_dependents = hidden_links(task, tasks)
    out: list[str] = []
    style = 'shape=note, style="dashed", color="#8a94a6", fontcolor="#4b5563", fontsize=10'
    url = _quote(f"{link_base}?task={task_id}")
    if hidden_deps:
        node = _quote(f"{task_id} +dependencies")  # ids hold no spaces: no clash
        label = _quote_label(f"+{hidden_deps} more\\ndependencies")
        out.append(
            f'  {node} [label={label}, {style}, URL={url}, target="_self", tooltip={_quote(task_id)}];'
        )
        out.append(f'  {node} -> {_quote(task_id)} [style="dashed"];')
    if hidden_dependents:
        node = _quote(f"{task_id} +dependents")
        label = _quote_label(f"+{hidden_dependents} more\\ndependents")
        out.append(
            f'  {node} [label={label}, {style}, URL={url}, target="_self", tooltip={_quote(task_id)}];'
        )
        out.append(f'  {_quote(task_id)} -> {node} [style="dashed"];')
    return out
