"""The daemon's connection to the system bus, kept up for as long as the daemon runs.

GDBus's shared system-bus connection exits the process when the bus closes it (exit-on-close), and the bus
does close a peer that sends a message over its size limit or when dbus-daemon restarts. The daemon must
outlive both: jobs keep running, the scheduler keeps scheduling, the watchdog keeps pinging. So the daemon
uses a private connection of its own (never Gio's cached singleton, which stays closed once closed), with
exit-on-close off; when it closes, BusLink tells its users (`on_down`), reconnects in the background with
backoff (asynchronously: the main loop never waits on the bus), and hands the new connection to every
`on_up` callback (which re-publish the API and its name and rebind the systemd adapter).
"""

from __future__ import annotations

from typing import Any, Callable

from gi.repository import Gio, GLib
from pydbus.bus import Bus

FLAGS = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)       # seconds between reconnection attempts; the last repeats


class BusUnavailable(Exception):
    pass


def system_bus_address() -> str:
    return Gio.dbus_address_get_for_bus_sync(Gio.BusType.SYSTEM, None)    # honours DBUS_SYSTEM_BUS_ADDRESS


def connect_sync(address: str | None = None) -> Any:
    """A new private connection to the system bus, as a pydbus Bus. Raises BusUnavailable."""
    try:
        con = Gio.DBusConnection.new_for_address_sync(address or system_bus_address(), FLAGS, None, None)
    except GLib.Error as e:
        raise BusUnavailable(f"can't connect to the system bus: {e.message}") from None
    con.set_exit_on_close(False)
    return Bus(con)


Up = Callable[[Any], Any]          # given the new Bus; may return a handle with __exit__ (a publication)


class BusLink:
    def __init__(self, log: Callable[[str, int], None], address: str | None = None,
                 backoff: tuple[float, ...] = BACKOFF):
        self.bus: Any = None
        self._log = log
        self._address = address
        self._backoff = backoff
        self._attempt = 0
        self._ups: list[Up] = []
        self._downs: list[Callable[[], None]] = []
        self._handles: list[Any] = []
        self._closed_id = 0
        self._connecting = False
        self._stopped = False
        self.reconnects = 0

    def on_up(self, fn: Up) -> None:
        """Call fn(bus) now if connected, and again with every new connection."""
        self._ups.append(fn)
        if self.bus is not None:
            self._run_up(fn)

    def on_down(self, fn: Callable[[], None]) -> None:
        self._downs.append(fn)

    def start(self) -> None:
        """The first connection, before the main loop runs. Raises BusUnavailable: at startup, systemd's
        Restart= is the right retry, as nothing is running yet."""
        self._adopt(connect_sync(self._address))

    def stop(self) -> None:
        """At shutdown: release the name and objects; no more reconnecting."""
        self._stopped = True
        self._release()
        if self.bus is not None and self._closed_id:
            self.bus.con.disconnect(self._closed_id)

    # --- internals -------------------------------------------------------------------------------------

    def _adopt(self, bus: Any) -> None:
        self.bus = bus
        self._closed_id = bus.con.connect("closed", self._on_closed)
        if all([self._run_up(fn) for fn in list(self._ups)]):
            self._attempt = 0                     # backoff starts over only once everything is set up

    def _run_up(self, fn: Up) -> bool:
        try:
            handle = fn(self.bus)
        except Exception as e:  # noqa: BLE001 - a bus we can't use is a bus we reconnect to
            self._log(f"can't set up on the new bus connection: {type(e).__name__}: {e}; reconnecting", 3)
            GLib.idle_add(self._drop_and_retry)
            return False
        if handle is not None:
            self._handles.append(handle)
        return True

    def _release(self) -> None:
        handles, self._handles = self._handles, []
        for h in reversed(handles):
            try:
                h.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - on a closed connection there is nothing left to release
                pass

    def _on_closed(self, con: Any, remote_vanished: bool, error: Any) -> None:
        if self.bus is None or con is not self.bus.con:
            return
        why = error.message if error is not None else "closed"
        self._log(f"lost the system bus ({why}); jobs keep running; reconnecting", 3)
        self._down()
        self._schedule()

    def _down(self) -> None:
        if self.bus is not None and self._closed_id:
            try:
                self.bus.con.disconnect(self._closed_id)
            except Exception:  # noqa: BLE001
                pass
        self._release()
        self.bus, self._closed_id = None, 0
        for fn in self._downs:
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self._log(f"error while going off the bus: {type(e).__name__}: {e}", 3)

    def _drop_and_retry(self) -> bool:
        if self.bus is not None:
            con = self.bus.con
            self._down()
            try:
                con.close_sync(None)
            except GLib.Error:
                pass
        self._schedule()
        return False

    def _schedule(self) -> None:
        if self._stopped or self._connecting:
            return
        delay = self._backoff[min(self._attempt, len(self._backoff) - 1)]
        self._attempt += 1
        self._connecting = True
        GLib.timeout_add(int(delay * 1000), self._try_connect)

    def _try_connect(self) -> bool:
        if self._stopped:
            self._connecting = False
            return False
        try:
            address = self._address or system_bus_address()
        except GLib.Error as e:
            self._failed(e.message)
            return False
        Gio.DBusConnection.new_for_address(address, FLAGS, None, None, self._connected)
        return False

    def _connected(self, _source: Any, result: Any) -> None:
        try:
            con = Gio.DBusConnection.new_for_address_finish(result)
        except GLib.Error as e:
            self._failed(e.message)
            return
        self._connecting = False
        if self._stopped:
            con.close_sync(None)
            return
        con.set_exit_on_close(False)
        self.reconnects += 1
        self._log(f"back on the system bus after {self._attempt} attempt(s)", 5)
        self._adopt(Bus(con))

    def _failed(self, why: str) -> None:
        self._connecting = False
        if self._attempt in (1, 5) or self._attempt % 60 == 0:        # don't flood the journal
            self._log(f"can't reconnect to the system bus yet: {why}", 4)
        self._schedule()
