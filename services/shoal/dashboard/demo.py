"""One-click demo loads: batches of built-in tasks that make the system visibly busy.

Built from the task names the workers advertise, so a load never asks for a task no
worker can run. Seeded, so the same click gives the same mix.
"""

from __future__ import annotations

import random
from typing import Any

# Built-in tasks (services/shoal/worker/builtins.py) and how often each appears in the mixed load.
_MIX: tuple[tuple[str, float], ...] = (
    ("sleep", 0.45),
    ("echo", 0.2),
    ("noop", 0.15),
    ("flaky", 0.1),
    ("cpu", 0.06),
    ("fail", 0.04),
)


def _arguments(name: str, rng: random.Random, index: int) -> dict[str, Any]:
    if name == "sleep":
        return {"args": [round(rng.uniform(0.05, 1.5), 2)]}
    if name == "echo":
        return {"args": [f"hello #{index}"]}
    if name == "flaky":
        return {"kwargs": {"p": 0.3}, "max_retries": 3}
    if name == "cpu":
        return {"kwargs": {"n": rng.choice([100_000, 300_000, 1_000_000])}}
    if name == "fail":
        return {"kwargs": {"message": f"demo failure #{index}"}, "max_retries": 1}
    return {}


def mixed_load(
    available: set[str], count: int = 1000, queues: list[str] | None = None, seed: int = 7
) -> list[dict]:
    """`count` tasks mixing the built-in tasks the workers know, over `queues`, priorities 0-9.

    Raises ValueError when no worker advertises any of the built-in tasks.
    """
    mix = [(name, weight) for name, weight in _MIX if name in available]
    if not mix:
        raise ValueError("no live worker advertises the built-in tasks (noop, echo, sleep, ...)")
    names, weights = zip(*mix, strict=True)
    rng = random.Random(seed)
    targets = queues or ["default"]
    tasks = []
    for index in range(count):
        name = rng.choices(names, weights)[0]
        task = {
            "name": name,
            "queue": rng.choice(targets),
            "priority": rng.choice([0, 0, 0, 1, 2, 5, 9]),
            **_arguments(name, rng, index),
        }
        tasks.append(task)
    return tasks


def dag_load(available: set[str], size: int = 50, queue: str = "default", seed: int = 11) -> list[dict]:
    """A layered DAG of `size` tasks: each task after the first layer depends on 1-3 tasks of the
    layers before it (by batch `ref`), ending in one task that depends on the whole last layer.
    """
    step = "sleep" if "sleep" in available else "echo" if "echo" in available else None
    if step is None or size < 2:
        raise ValueError("a DAG load needs at least 2 tasks and a worker that runs `sleep` or `echo`")
    rng = random.Random(seed)
    layers: list[list[str]] = []
    tasks: list[dict] = []
    remaining = size - 1  # the final join
    while remaining > 0:
        width = min(remaining, rng.randint(3, 8))
        layer = []
        for _ in range(width):
            ref = f"n{len(tasks)}"
            task: dict[str, Any] = {"ref": ref, "name": step, "queue": queue}
            task["args"] = [round(rng.uniform(0.2, 1.2), 2)] if step == "sleep" else [ref]
            if layers:
                earlier = [r for previous in layers[-2:] for r in previous]
                task["depends_on"] = rng.sample(earlier, k=min(len(earlier), rng.randint(1, 3)))
            tasks.append(task)
            layer.append(ref)
        layers.append(layer)
        remaining -= width
    join_args = [0.1] if step == "sleep" else ["done"]
    tasks.append({"ref": "join", "name": step, "queue": queue, "args": join_args, "depends_on": layers[-1]})
    return tasks
