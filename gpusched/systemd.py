"""systemd over the system bus (pydbus): start a job's scope, stop it, ask whether it still runs."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from gi.repository import GLib


class Units(Protocol):
    def start_scope(self, unit: str, pid: int, properties: Sequence[tuple[str, str, Any]]) -> None: ...
    def stop(self, unit: str) -> bool: ...
    def alive(self, unit: str) -> bool: ...


class SystemdError(Exception):
    pass


def _short(e: Exception) -> str:
    msg = str(e)
    return msg.split(": ", 1)[-1] if msg.startswith("g-dbus-error") or "GDBus.Error" in msg else msg


class Systemd:
    def __init__(self, bus: Any):
        self._bus = bus
        self._manager = bus.get("org.freedesktop.systemd1", "/org/freedesktop/systemd1")

    def start_scope(self, unit: str, pid: int, properties: Sequence[tuple[str, str, Any]]) -> None:
        props = [("PIDs", GLib.Variant("au", [pid]))]
        props += [(name, GLib.Variant(sig, value)) for name, sig, value in properties]
        try:
            self._manager.StartTransientUnit(unit, "fail", props, [])
        except GLib.Error as e:
            raise SystemdError(f"StartTransientUnit {unit}: {_short(e)}") from None

    def stop(self, unit: str) -> bool:
        """StopUnit: systemd sends the unit's KillSignal, waits TimeoutStopUSec, then SIGKILL. False if gone."""
        try:
            self._manager.StopUnit(unit, "replace")
            return True
        except GLib.Error as e:
            if "NoSuchUnit" in str(e) or "not loaded" in str(e):
                return False
            raise SystemdError(f"StopUnit {unit}: {_short(e)}") from None

    def alive(self, unit: str) -> bool:
        # ListUnitsByNames: one call, no per-unit proxy (building one parses introspection XML: slow)
        try:
            units = self._manager.ListUnitsByNames([unit])
        except GLib.Error as e:
            raise SystemdError(f"ListUnitsByNames {unit}: {_short(e)}") from None
        active = any(u[0] == unit and u[3] in ("active", "activating", "deactivating", "reloading") for u in units)
        if active and scope_pids(unit) == set():
            # An active scope with no process left: systemd missed the empty-cgroup event (seen with
            # cgroup v1 in containers, when the only process died as it was being moved in). Nothing runs
            # there; stop it so the name is free again.
            self.stop(unit)
            return False
        return active


def scope_pids(unit: str, slice_: str = "gpusched.slice") -> set[int] | None:
    """The pids in a scope's cgroup, or None if its cgroup can't be found here."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        try:
            with open(f"{root}/{slice_}/{unit}/cgroup.procs") as f:
                return {int(p) for p in f.read().split()}
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None
