"""SIGTERM unwinds like Ctrl-C: every `finally` and `except KeyboardInterrupt` that removes a staging folder
or a temporary file runs, then the command exits 143 (128 + SIGTERM) instead of 130."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from ..errors import DeployccError

INTERRUPTED = "interrupted; temporary files were removed, inputs and previous outputs are unchanged"

_received: list[int] = []


class Interrupted(DeployccError):
    """A verb's own message for an interrupt (the exit code becomes 130 or 143 by the signal)."""

    exit_code = 130


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt in the main thread (elsewhere signals cannot be
    handled: a no-op); the previous handler comes back after."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_code() -> int:
    """143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + signal.SIGTERM if signal.SIGTERM in _received else 130
