"""journald's native protocol and sd_notify, without libsystemd: one datagram socket each."""

from __future__ import annotations

import os
import socket
import struct
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_FIELD = 48 * 1024

_sock: socket.socket | None = None


def _encode(fields: dict[str, object]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        if value is None:
            continue
        v = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        v = v[:MAX_FIELD]
        k = key.upper().encode()
        if b"\n" in v:
            out += k + b"\n" + struct.pack("<Q", len(v)) + v + b"\n"
        else:
            out += k + b"=" + v + b"\n"
    return bytes(out)


def send(message: str | bytes, priority: int = 6, **fields: object) -> bool:
    """Send one entry to journald. Returns False (and writes to stderr) when journald isn't reachable."""
    global _sock
    data = _encode({"MESSAGE": message, "PRIORITY": priority, **fields})
    try:
        if _sock is None:
            _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        _sock.sendto(data, JOURNAL_SOCKET)
        return True
    except OSError:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        print(text, file=sys.stderr, flush=True)
        return False


def notify(state: str) -> None:
    """sd_notify(3): READY=1, STATUS=..., WATCHDOG=1, STOPPING=1. A no-op outside a Type=notify service."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(state.encode(), addr)
        except OSError:
            pass


def watchdog_interval() -> float | None:
    """Half the service's WatchdogSec, in seconds, if the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
