"""systemd over the system bus (pydbus): start a job's scope, stop it, kill it, ask whether it still runs.

The connection can change under us (the bus daemon restarts; gpusched.bus reconnects): `rebind(bus)` gives
the adapter the new one, `rebind(None)` says there is none for now, and then every call raises
SystemdUnavailable at once instead of waiting on a dead connection. D-Bus errors become typed errors in one
place (`_error`), so nothing above this module decides by an error's text.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from gi.repository import Gio, GLib

from gpusched import cgroups
from gpusched.cgroups import SLICE
from gpusched.scopes import NoSuchUnit, SystemdError, SystemdUnavailable, UnitExists, Units

# the errors live in scopes.py (no gi there); named here too for the adapter's callers
__all__ = ["NoSuchUnit", "Systemd", "SystemdError", "SystemdUnavailable", "UnitExists", "Units"]

_ACTIVE = ("active", "activating", "deactivating", "reloading")
_UNAVAILABLE = {"org.freedesktop.DBus.Error.Disconnected", "org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner", "org.freedesktop.DBus.Error.NoServer"}
_TYPED = {"org.freedesktop.systemd1.UnitExists": UnitExists, "org.freedesktop.systemd1.NoSuchUnit": NoSuchUnit}


def _error(what: str, e: GLib.Error) -> SystemdError:
    """The one place where a D-Bus error becomes a typed error (by its D-Bus name, never by its text)."""
    remote = Gio.DBusError.get_remote_error(e) if Gio.DBusError.is_remote_error(e) else None
    message = e.message
    if remote and message.startswith(f"GDBus.Error:{remote}: "):
        message = message[len(f"GDBus.Error:{remote}: "):]
    if remote is None and e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.CLOSED):
        return SystemdUnavailable(f"{what}: the connection to the system bus is closed")
    cls = _TYPED.get(remote or "") or (SystemdUnavailable if remote in _UNAVAILABLE else SystemdError)
    return cls(f"{what}: {message}")


class Systemd:
    def __init__(self, bus: Any):
        self._bus = bus
        self._manager: Any = None

    def rebind(self, bus: Any) -> None:
        """Use this connection from now on (None: there is none; calls fail with SystemdUnavailable)."""
        self._bus, self._manager = bus, None

    def _mgr(self) -> Any:
        if self._manager is None:
            if self._bus is None:
                raise SystemdUnavailable("not connected to the system bus (reconnecting)")
            try:
                self._manager = self._bus.get("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
            except GLib.Error as e:
                raise _error("systemd's manager", e) from None
        return self._manager

    def start_scope(self, unit: str, pid: int, properties: Sequence[tuple[str, str, Any]]) -> None:
        props = [("PIDs", GLib.Variant("au", [pid]))]
        props += [(name, GLib.Variant(sig, value)) for name, sig, value in properties]
        manager = self._mgr()
        try:
            manager.StartTransientUnit(unit, "fail", props, [])
        except GLib.Error as e:
            raise _error(f"StartTransientUnit {unit}", e) from None

    def start_service(self, unit: str, properties: Sequence[tuple[str, str, Any]]) -> None:
        """A transient service (a job's hook): StartTransientUnit, not waiting for it to run."""
        props = [(name, GLib.Variant(sig, value)) for name, sig, value in properties]
        try:
            self._mgr().StartTransientUnit(unit, "fail", props, [])
        except GLib.Error as e:
            raise _error(f"StartTransientUnit {unit}", e) from None

    def stop(self, unit: str) -> bool:
        """StopUnit: systemd sends the unit's KillSignal, waits TimeoutStopUSec, then SIGKILL. False if gone."""
        return self._unless_gone(f"StopUnit {unit}", lambda m: m.StopUnit(unit, "replace"))

    def kill(self, unit: str, signal: int) -> bool:
        """KillUnit(who="all"): the signal to every process of the unit at once, whatever its stop timeout.
        False if the unit is gone."""
        return self._unless_gone(f"KillUnit {unit}", lambda m: m.KillUnit(unit, "all", int(signal)))

    def _unless_gone(self, what: str, call: Callable[[Any], Any]) -> bool:
        """call(manager): True once done, False if the unit isn't loaded (NoSuchUnit); other errors typed."""
        manager = self._mgr()
        try:
            call(manager)
            return True
        except GLib.Error as e:
            err = _error(what, e)
        if isinstance(err, NoSuchUnit):
            return False
        raise err

    def alive(self, unit: str) -> bool:
        # ListUnitsByNames: one call, no per-unit proxy (building one parses introspection XML: slow)
        manager = self._mgr()
        try:
            units = manager.ListUnitsByNames([unit])
        except GLib.Error as e:
            raise _error(f"ListUnitsByNames {unit}", e) from None
        active = any(u[0] == unit and u[3] in _ACTIVE for u in units)
        if active and cgroups.pids(cgroups.unit_dir(SLICE, unit)) == set():
            # An active scope with no process left: systemd missed the empty-cgroup event (seen with
            # cgroup v1 in containers, when the only process died as it was being moved in). Nothing runs
            # there; stop it so the name is free again.
            self.stop(unit)
            return False
        return active
