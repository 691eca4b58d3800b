"""bench's web-idle measure: counting the daemon's bus calls in dbus-monitor's profile output by time window, and
the free port its box's dashboard takes (tests/box.py)."""

import socket

from bench import inbox
from tests.box import free_port

PROFILE = (
    "#type\ttimestamp\tserial\tsender\tdestination\tpath\tinterface\tmember\n"
    "#\t\t\t\t\tin_reply_to\n"
    "sig\t1700000000.000100\t2\torg.freedesktop.DBus\t:1.80\t/org/freedesktop/DBus\torg.freedesktop.DBus\tNameAcquired\n"
    "mc\t1700000000.500000\t7\t:1.12\torg.gpusched1\t/org/gpusched1\torg.gpusched1\tStats\n"
    "mc\t1700000001.000000\t8\t:1.13\torg.gpusched1\t/org/gpusched1\torg.gpusched1.Web\tWebCall\n"
    "mr\t1700000001.000900\t9\t:1.5\t:1.13\t8\n"
    "mc\t1700000001.999999\t10\t:1.13\torg.gpusched1\t/org/gpusched1\torg.gpusched1.Web\tWebCall\n"
    "mc\t1700000002.000000\t11\t:1.13\torg.gpusched1\t/org/gpusched1\torg.gpusched1.Web\tWebCall\n"
)


def test_method_calls_are_counted_in_their_window_only(tmp_path):
    log = tmp_path / "calls"
    log.write_text(PROFILE)
    assert inbox._method_calls(str(log), 1700000000.0, 1700000003.0) == 4        # not the signal, not the reply
    assert inbox._method_calls(str(log), 1700000001.0, 1700000002.0) == 2        # [t0, t1)
    assert inbox._method_calls(str(log), 1700000003.0, 1700000004.0) == 0


def test_free_port_is_free_in_its_range_and_a_taken_one_is_never_given():
    port = free_port(("127.0.0.1",))
    assert port is not None and 20000 <= port <= 29999 and port != 8765
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        # the one port of a range that is taken is never given
        assert free_port(("127.0.0.1",), low=port, high=port) is None
