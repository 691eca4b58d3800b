"""The daemon's journal lines: `log`, one function for every line gpusched itself writes.

Messages carry users' strings (file names, reasons), so control characters are escaped (listing.printable)
and `journalctl -o cat` on an admin's terminal can't be steered; only a traceback keeps its newlines. A
job's lines carry its id, user and name as structured fields, so `journalctl GPUSCHED_JOB_ID=42` finds them.
The engine, runner and intake are given this function (a `Log`), so a simulator or a test can collect or
drop the lines instead.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Protocol

from gpusched import journal
from gpusched.listing import printable
from gpusched.model import Job


class Log(Protocol):
    def __call__(self, message: str, priority: int = 6, job: Job | None = None, multiline: bool = False,
                 **fields: Any) -> None: ...


def log(message: str, priority: int = 6, job: Job | None = None, multiline: bool = False, **fields: Any) -> None:
    """A line in the journal. Structured fields keep the exact values."""
    message = printable(message, keep="\n" if multiline else "")
    if job is not None:
        fields.setdefault("GPUSCHED_JOB_ID", job.id)
        fields.setdefault("GPUSCHED_USER", job.user)
        fields.setdefault("GPUSCHED_JOB_NAME", job.name)
    journal.send(message, priority, SYSLOG_IDENTIFIER="gpusched", **fields)


def guarded(fn: Callable[..., Any], say: Log = log) -> Callable[..., Any]:
    """`fn` that logs its exception instead of raising it, and then returns False (a one-shot main-loop
    callback): the daemon must outlive any one bad event."""
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001
            say(f"internal error in {fn.__name__}: {traceback.format_exc()}", 3, multiline=True)
            return False
    wrapper.__name__ = fn.__name__
    return wrapper
