"""Stop requests that arrive while a worker is still starting (SIGTERM during start-up).

`EarlyStop.install()` runs first of all when the process is `python -m shoal.worker` (as the
`shoal` package's first import, see shoal._entry): from then on SIGTERM and SIGINT no longer
kill the process with the default action. Inside `interruptible()` (the
settings load and the task modules import, which may take long) a stop interrupts the work
with `StopRequested`; elsewhere it is recorded. Once the event loop runs, `hand_over` gives the
signals to the loop, and a stop recorded before is delivered at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

TYPE_CHECKING = False  # not `typing`'s: this module loads before anything slow (mypy knows the name)
if TYPE_CHECKING:
    import asyncio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """A stop signal arrived during `EarlyStop.interruptible()` (a BaseException, like
    KeyboardInterrupt, so that code catching Exception does not swallow it)."""


class EarlyStop:
    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._interruptible = False

    @classmethod
    def install(cls) -> EarlyStop:
        """The process's one EarlyStop, with its handlers installed (by the first call: the
        `shoal` package's import when the process is `python -m shoal.worker`, see shoal._entry)."""
        global _installed
        if _installed is None:
            _installed = cls()
            for sig in STOP_SIGNALS:
                signal.signal(sig, _installed._record)
        return _installed

    @property
    def requested(self) -> bool:
        return self.received is not None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stop during this block raises StopRequested in it (at once if one came before)."""
        if self.requested:
            raise StopRequested
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)
        if self._interruptible:
            self._interruptible = False
            raise StopRequested

    def hand_over(self, loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]) -> None:
        """From now on each stop signal calls `request_stop` on the loop; one that came earlier
        calls it now."""
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, request_stop)
        if self.requested:
            request_stop()


_installed: EarlyStop | None = None
