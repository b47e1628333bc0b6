"""`shoal worker | scheduler | dashboard`: the three services of the installed package.

Each runs the service's own entry point (`python -m shoal.worker`, `python -m shoal.scheduler`,
`python -m shoal.dashboard.server`) with the arguments that follow. The scheduler and the
dashboard need their extras (`pip install 'shoal[scheduler]'`, `'shoal[dashboard]'`); without
them the command says so instead of printing an ImportError.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

EXIT_USAGE = 2

# command -> (help, extra it needs or None, the modules that extra brings)
SERVICES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "worker": ("run a worker for the tasks of SHOAL_TASK_MODULES (configured by SHOAL_*)", None, ()),
    "scheduler": ("run the scheduler API (--host, --port)", "scheduler", ("fastapi", "uvicorn")),
    "dashboard": ("run the dashboard behind its sign-in (--port, --address)", "dashboard", ("streamlit",)),
}


def add_parsers(sub: Any) -> None:
    for name, (help_text, _, _) in SERVICES.items():
        parser = sub.add_parser(name, help=help_text, add_help=False)
        parser.add_argument("service_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(name: str, service_args: list[str]) -> int:
    """Run service `name` in this process; its exit code."""
    _, extra, modules = SERVICES[name]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        print(
            f"shoal {name}: needs {', '.join(missing)}, which this installation lacks: "
            f"pip install 'shoal[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return _entry(name)(service_args)


def _entry(name: str) -> Callable[[list[str]], int]:
    if name == "worker":
        return _worker
    if name == "scheduler":
        from shoal.scheduler.__main__ import main as scheduler

        return _returning_0(scheduler)
    from shoal.dashboard.server import main as dashboard

    return _returning_0(dashboard)


def _returning_0(main: Callable[[list[str]], None]) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        main(argv)  # serves until stopped; a failure to start exits on its own (SystemExit)
        return 0

    return run


def _worker(argv: list[str]) -> int:
    if argv and argv[0] not in ("-h", "--help"):
        print("shoal worker: takes no arguments; configure it with SHOAL_* variables", file=sys.stderr)
        return EXIT_USAGE
    if argv:
        print("usage: shoal worker\n\nRuns one worker; SHOAL_TASK_MODULES names the modules of your tasks.")
        return 0
    from shoal.worker.__main__ import main as worker

    return worker()
