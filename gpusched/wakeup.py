"""Signals that wake a select() loop: the self-pipe that Python's signal.set_wakeup_fd() writes to.

The monitor and the pty relay both wait in select() on a job's output and must also notice SIGCHLD (the job
ended) and the stop signals; a handler alone would run only when select() returns. The pipe's read end is
in the select set; drain() empties it (non-blocking) once woken.
"""

from __future__ import annotations

import os
import signal


def install() -> int:
    """A new non-blocking, close-on-exec pipe as this process's signal wakeup fd; returns its read end."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end)
    return read_end


def drain(fd: int) -> None:
    """Read the wakeup pipe empty (its bytes are signal numbers; the loop checks what happened itself)."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
