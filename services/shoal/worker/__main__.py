"""`python -m shoal.worker`: run one worker process until SIGTERM/SIGINT.

Exit codes: 0 after a graceful stop, also when the stop came during start-up (nothing was
claimed then); 2 when it cannot start (bad configuration, a task module that does not import,
a taken probe port), with a one-line message and no traceback; 1 when a part of the worker
crashed (its tasks were handed back first).
"""

from __future__ import annotations

import sys

from shoal.core.stopping import EarlyStop, StopRequested


def main() -> int:
    # First, before the slow imports, the settings and the task modules: a SIGTERM from here on
    # is a clean stop, never a kill by the default action.
    early_stop = EarlyStop.install()

    import asyncio
    import logging
    import os

    from shoal.core.logging import configure_logging
    from shoal.core.registry import TaskModuleError, import_task_modules
    from shoal.core.settings import SettingsError, load_settings
    from shoal.worker.runtime import WorkerCrashed, WorkerStartupError, serve

    log = logging.getLogger("shoal.worker")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"shoal worker: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.log_format, settings.log.log_level)
    for warning in settings.warnings:
        log.warning("configuration: %s", warning)
    try:
        with early_stop.interruptible():
            import_task_modules(settings.worker.module_list)
    except TaskModuleError as exc:
        log.error("%s", exc)
        return 2
    except StopRequested:
        signal_name = early_stop.received.name if early_stop.received else "a signal"
        log.info("stop requested (%s) during start-up: exiting before registering", signal_name)
        return 0
    try:
        worker = asyncio.run(serve(settings, early_stop))
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
