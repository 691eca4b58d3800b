"""The bus client of gpuschedctl: one call to the daemon, its errors in words (bus_error)."""

from __future__ import annotations

import json
from typing import Any

from gpusched.ctl.common import FAILED, UNREACHABLE, CtlError

CALL_TIMEOUT = 120.0       # seconds: a daemon that hangs gets an error, not a client that waits for ever


class Client:
    def __init__(self, timeout: float = CALL_TIMEOUT) -> None:
        self.timeout = timeout                        # seconds a call waits (top waits less: it redraws)
        try:
            from gi.repository import GLib
            from pydbus import SystemBus
            self._glib_error = GLib.Error
            self._api = SystemBus().get("org.gpusched1", "/org/gpusched1")
        except Exception as e:  # noqa: BLE001 - no bus, no daemon, no permission: one clear line
            raise CtlError(f"can't reach gpusched on the system bus ({bus_error(e)}); "
                           f"is gpusched.service running? (systemctl status gpusched)", UNREACHABLE) from None

    def raw(self, method: str, *args: Any) -> str:
        try:
            raw = getattr(self._api, method)(*args, timeout=self.timeout)
        except self._glib_error as e:
            raise CtlError(f"gpusched did not answer {method}: {bus_error(e)}",
                           UNREACHABLE if _gone(e) else FAILED) from None
        except AttributeError:
            raise CtlError(f"this gpusched has no {method} (is the daemon older than gpuschedctl? "
                           f"restart gpusched.service)") from None
        if not raw.startswith(('{"ok": ', '{"last": ')):
            try:
                reply = json.loads(raw)
            except ValueError:
                reply = {}
            raise CtlError(reply.get("error") or f"unexpected answer to {method}: {raw[:200]}")
        return raw

    def call(self, method: str, *args: Any) -> Any:
        reply = json.loads(self.raw(method, *args))
        if "error" in reply:
            raise CtlError(reply["error"])
        return reply["ok"]


# what the bus's own errors mean for someone running gpuschedctl
_BUS_ERRORS = {
    "org.freedesktop.DBus.Error.ServiceUnknown": "gpusched is not on the system bus (not running, or "
                                                 "reconnecting after a bus restart)",
    "org.freedesktop.DBus.Error.NameHasNoOwner": "gpusched is not on the system bus (not running, or "
                                                 "reconnecting after a bus restart)",
    "org.freedesktop.DBus.Error.NoReply": "no answer in time (gpusched is busy or hung)",
    "org.freedesktop.DBus.Error.Timeout": "no answer in time (gpusched is busy or hung)",
    "org.freedesktop.DBus.Error.LimitsExceeded": "the message was over the bus's size limit",
    "org.freedesktop.DBus.Error.AccessDenied": "the system bus refused the call",
    "org.freedesktop.DBus.Error.Disconnected": "the connection to the system bus was lost",
    "org.freedesktop.DBus.Error.UnknownMethod": "this gpusched does not know that call (is the daemon older "
                                                "than gpuschedctl? restart gpusched.service)",
}


_GONE = ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
         "org.freedesktop.DBus.Error.Disconnected", "org.freedesktop.DBus.Error.NoReply",
         "org.freedesktop.DBus.Error.Timeout")


def _gone(e: Exception) -> bool:
    """Whether a failed call means gpusched can't be reached (not running, hung), not a refusal."""
    try:
        from gi.repository import Gio
        if Gio.DBusError.is_remote_error(e):
            return Gio.DBusError.get_remote_error(e) in _GONE
        return e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT)
    except (ImportError, AttributeError, TypeError):
        return False


def bus_error(e: Exception) -> str:
    """A bus error in words: what it means, then the bus's own name and text for the curious."""
    try:
        from gi.repository import Gio, GLib
    except ImportError:
        return str(e)
    if not isinstance(e, GLib.Error):
        return str(e)
    if not Gio.DBusError.is_remote_error(e):
        if e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
            return f"no answer within {CALL_TIMEOUT:.0f}s (gpusched is busy or hung)"
        return e.message
    name = Gio.DBusError.get_remote_error(e)
    text = e.message.removeprefix(f"GDBus.Error:{name}: ")
    if name.startswith("unknown."):                # pydbus's name for an exception in the daemon
        return f"gpusched failed ({name[len('unknown.'):]}: {text}); journalctl -u gpusched says more"
    meaning = _BUS_ERRORS.get(name)
    return f"{meaning} [{name}: {text}]" if meaning else f"{name}: {text}"


