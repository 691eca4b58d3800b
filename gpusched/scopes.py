"""What the daemon asks of systemd about a job's scope: the `Units` protocol and its typed errors.

Kept apart from systemd.py (the D-Bus adapter, which needs gi) so that the runner, the engine and their fakes
can name these errors without loading GLib. The adapter turns D-Bus errors into these types by their D-Bus
names; nothing decides by an error's text.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence


class Units(Protocol):
    def start_scope(self, unit: str, pid: int, properties: Sequence[tuple[str, str, Any]]) -> None: ...
    def start_service(self, unit: str, properties: Sequence[tuple[str, str, Any]]) -> None: ...
    def stop(self, unit: str) -> bool: ...
    def kill(self, unit: str, signal: int) -> bool: ...
    def alive(self, unit: str) -> bool: ...


class SystemdError(Exception):
    """systemd refused or failed a request."""


class UnitExists(SystemdError):
    """StartTransientUnit: a unit of that name is already loaded (a scope left by an earlier start)."""


class NoSuchUnit(SystemdError):
    """The unit is not loaded (it has ended and been collected)."""


class SystemdUnavailable(SystemdError):
    """No usable connection to the system bus right now (it is being re-established): try again later."""
