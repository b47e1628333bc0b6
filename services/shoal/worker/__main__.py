"""`python -m shoal.worker`: run one worker process until SIGTERM/SIGINT.

Exit codes: 0 after a graceful stop; 2 when it cannot start (bad configuration, a task
module that does not import, a taken probe port), with a one-line message and no
traceback; 1 when a part of the worker crashed (its tasks were handed back first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from shoal.core.logging import configure_logging
from shoal.core.registry import TaskModuleError, import_task_modules
from shoal.core.settings import Settings, SettingsError, load_settings
from shoal.core.store import Store
from shoal.worker.runtime import Worker, WorkerCrashed, WorkerStartupError

log = logging.getLogger("shoal.worker")


async def serve(settings: Settings) -> Worker:
    """Run a worker until a signal stops it; returns the stopped worker."""
    store = Store.from_settings(settings)
    worker = Worker(settings, store)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    try:
        await worker.run()
    finally:
        await store.close()
    return worker


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"shoal worker: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.log_format, settings.log.log_level)
    for warning in settings.warnings:
        log.warning("configuration: %s", warning)
    try:
        import_task_modules(settings.worker.module_list)
    except TaskModuleError as exc:
        log.error("%s", exc)
        return 2
    try:
        worker = asyncio.run(serve(settings))
    except WorkerStartupError as exc:
        log.error("%s", exc)
        return 2
    except WorkerCrashed as exc:
        log.critical("%s; exiting", exc)
        return 1
    if worker.executor.overrunning_threads:
        # Threads cannot be stopped and the interpreter would wait for them at exit.
        log.warning(
            "exiting with %d thread tasks still running; their results are discarded",
            worker.executor.overrunning_threads,
        )
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
