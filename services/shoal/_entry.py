"""Imported first by the `shoal` package: when the process is `python -m shoal.worker`, the
worker's stop handlers go in before anything else is imported.

Python imports this package before it runs the worker's own code, and the package's imports
take seconds on a loaded machine: a SIGTERM in that time (a pod stopped as it starts) must be a
clean stop, never the default action that kills the process.
"""

from __future__ import annotations

import sys


def run_as_module(name: str) -> bool:
    """Whether this interpreter was started as `python [options] -m <name>`."""
    argv = sys.orig_argv
    if "-m" not in argv:
        return False
    at = argv.index("-m")
    return argv[at + 1 : at + 2] == [name]


if run_as_module("shoal.worker"):
    from shoal.core.stopping import EarlyStop

    EarlyStop.install()
