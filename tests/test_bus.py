"""BusLink against a real, private dbus-daemon: it is killed and started again at the same address, and the
link reconnects, republishes and never exits the process (GDBus's exit-on-close is off)."""

import os
import shutil
import signal
import subprocess
import time

import pytest
from gi.repository import GLib

from gpusched.bus import BusLink

pytestmark = pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon is not installed")

CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/>
    <allow own="*"/></policy>
</busconfig>
"""


class Echo:
    """
    <node><interface name="test.Echo"><method name="Ping"><arg type="s" direction="out"/></method></interface></node>
    """

    def Ping(self):
        return "pong"


def start_bus(tmp_path):
    path = tmp_path / "bus.sock"
    conf = tmp_path / "bus.conf"
    conf.write_text(CONF.format(path=path))
    p = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, "dbus-daemon did not start"
        time.sleep(0.01)
    return p, f"unix:path={path}"


def spin(until, timeout=10.0):
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline
        ctx.iteration(False) or time.sleep(0.01)


def ping(address):
    """Call the published object from another process (this one serves it: it must keep its loop turning)."""
    p = subprocess.Popen(["dbus-send", f"--bus={address}", "--print-reply", "--dest=test.echo", "/test/echo",
                          "test.Echo.Ping"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spin(lambda: p.poll() is not None)
    return p.stdout.read()


def test_link_survives_the_bus_dying_and_republishes(tmp_path):
    p, address = start_bus(tmp_path)
    ups, downs, logs = [], [], []
    link = BusLink(lambda m, prio: logs.append(m), address=address, backoff=(0.05, 0.1))
    try:
        link.on_up(lambda bus: ups.append(bus))
        link.on_down(lambda: downs.append(1))
        link.start()
        link.on_up(lambda bus: bus.publish("test.echo", ("/test/echo", Echo())))
        assert len(ups) == 1 and ping(address).endswith('string "pong"\n')

        p.send_signal(signal.SIGKILL)
        p.wait()
        os.unlink(address.split("=", 1)[1])
        spin(lambda: downs)                       # the process is still here: no exit-on-close
        assert link.bus is None
        time.sleep(0.3)
        spin(lambda: True, 0.5)                   # a few failed attempts while there is no bus
        p, address2 = start_bus(tmp_path)
        assert address2 == address
        spin(lambda: len(ups) == 2)
        assert ping(address).endswith('string "pong"\n')            # republished: object and name
        assert any("lost the system bus" in m for m in logs) and any("back on" in m for m in logs)
    finally:
        link.stop()
        p.kill()
        p.wait()
