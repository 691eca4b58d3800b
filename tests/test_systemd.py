import pytest
from gi.repository import Gio, GLib

from gpusched.systemd import NoSuchUnit, Systemd, SystemdError, SystemdUnavailable, UnitExists


def remote(name, text):
    return GLib.Error.new_literal(Gio.io_error_quark(), f"GDBus.Error:{name}: {text}", Gio.IOErrorEnum.DBUS_ERROR)


class Manager:
    def __init__(self, error=None):
        self.error = error
        self.calls = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, *args))
            if self.error is not None:
                raise self.error
            return [] if name == "ListUnitsByNames" else None
        return call


class Bus:
    def __init__(self, manager):
        self.manager = manager

    def get(self, name, path):
        assert name == "org.freedesktop.systemd1"
        return self.manager


def test_unit_exists_is_typed_by_its_dbus_name():
    sd = Systemd(Bus(Manager(remote("org.freedesktop.systemd1.UnitExists", "Unit x.scope already exists."))))
    with pytest.raises(UnitExists) as e:
        sd.start_scope("x.scope", 1, [])
    assert str(e.value) == "StartTransientUnit x.scope: Unit x.scope already exists."


def test_other_errors_are_systemd_errors_not_unit_exists():
    sd = Systemd(Bus(Manager(remote("org.freedesktop.DBus.Error.InvalidArgs", "bad"))))
    with pytest.raises(SystemdError) as e:
        sd.start_scope("x.scope", 1, [])
    assert type(e.value) is SystemdError


def test_stop_and_kill_say_false_when_the_unit_is_gone():
    gone = remote("org.freedesktop.systemd1.NoSuchUnit", "Unit x.scope not loaded.")
    sd = Systemd(Bus(Manager(gone)))
    assert sd.stop("x.scope") is False
    assert sd.kill("x.scope", 9) is False
    with pytest.raises(NoSuchUnit):
        sd.start_scope("x.scope", 1, [])


def test_kill_sends_the_signal_to_all_processes():
    m = Manager()
    sd = Systemd(Bus(m))
    assert sd.kill("x.scope", 9) is True
    assert m.calls == [("KillUnit", "x.scope", "all", 9)]


def test_without_a_bus_calls_fail_at_once_as_unavailable_and_rebind_restores():
    sd = Systemd(None)
    with pytest.raises(SystemdUnavailable):
        sd.stop("x.scope")
    closed = GLib.Error.new_literal(Gio.io_error_quark(), "The connection is closed", Gio.IOErrorEnum.CLOSED)
    sd.rebind(Bus(Manager(closed)))
    with pytest.raises(SystemdUnavailable):
        sd.alive("x.scope")
    m = Manager()
    sd.rebind(Bus(m))
    assert sd.alive("x.scope") is False and m.calls == [("ListUnitsByNames", ["x.scope"])]
