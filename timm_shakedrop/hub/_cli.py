"""Logging set-up of the export and push commands: messages to stderr while a command runs, removed afterwards."""
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

__all__ = ['command_logging']


@contextlib.contextmanager
def command_logging(command: str, verbose: bool = False) -> Iterator[None]:
    """Send log records of this package and Python warnings to stderr as `timm-shakedrop COMMAND: message`.

    Everything is restored on exit, so calling a command's `main` in-process (tests, notebooks) leaves the
    logging, warning and progress-bar settings as they were.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f'timm-shakedrop {command}: %(levelname)s: %(message)s'))
    logger = logging.getLogger('timm_shakedrop')
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False

    def show_warning(message, category, filename, lineno, file=None, line=None):
        logger.warning(f'{category.__name__}: {message}')

    saved_show_warning = warnings.showwarning
    warnings.showwarning = show_warning
    # Progress bars help in a terminal; in logs and captured output they are noise.
    hide_progress = not sys.stderr.isatty() and not are_progress_bars_disabled()
    if hide_progress:
        disable_progress_bars()
    try:
        yield
    finally:
        if hide_progress:
            enable_progress_bars()
        warnings.showwarning = saved_show_warning
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
