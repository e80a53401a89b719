"""Deferred handling of SIGINT and SIGTERM, so that training stops between steps and saves its state."""
import logging
import signal
import threading
from types import FrameType
from typing import Optional

_logger = logging.getLogger(__name__)

__all__ = ['StopRequest']


class StopRequest:
    """Context manager that turns the first SIGINT or SIGTERM into a stop request.

    The training loop polls `signum` after each optimizer update, writes a recovery checkpoint and stops.
    A second signal raises KeyboardInterrupt at once. Handlers are installed only in the main thread
    (Python allows no other) and the previous ones are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        _logger.warning(
            f'Received {signal.Signals(signum).name}: stopping after the current step and writing a recovery '
            f'checkpoint (send it again to stop at once).')

    def __enter__(self) -> 'StopRequest':
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
