"""The wire between `gpuschedctl run` and its job's relay (gpusched/ptyrelay.py): typed frames over a Unix
stream socket. Pure: bytes in, frames out, and the few messages' encodings; no I/O here.

A frame is one byte of kind, four of length (big-endian), then at most MAX_PAYLOAD bytes. Both ends are
untrusted by each other in principle (the socket's path came from a job file), so every frame is bounded, an
unknown kind or an oversized length ends the session, and the hellos are small JSON objects whose every
field is checked.
"""

from __future__ import annotations

import json
import re
import signal
import struct
from typing import Any

VERSION = 1
MAX_PAYLOAD = 64 * 1024
MAX_HELLO = 1024
HEADER = struct.Struct(">cI")

HELLO = b"H"        # both ways, first: relay -> client {"v", "job"}; client -> relay {"v", "pty", "rows", "cols", "term"}
DATA = b"D"         # client -> relay: input; relay -> client: the terminal's output (or stdout, without a pty)
STDERR = b"e"       # relay -> client, without a pty: the command's stderr
WINSIZE = b"W"      # client -> relay: rows, cols (two unsigned 16-bit numbers)
EOF = b"Z"          # client -> relay, without a pty: the client's stdin ended
SIGNAL = b"S"       # client -> relay, without a pty: a signal for the command (Ctrl-C at the client)
EXIT = b"X"         # relay -> client, last: how the command ended {"exit_code": N} or {"signal": N}

KINDS = frozenset({HELLO, DATA, STDERR, WINSIZE, EOF, SIGNAL, EXIT})
# the signals a client may send (without a pty; with one, the terminal's own keys make them)
SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP})
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class ProtocolError(ValueError):
    """The other end broke the protocol: the session ends."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    return HEADER.pack(kind, len(payload)) + payload


def frames(kind: bytes, data: bytes) -> bytes:
    """`data` of any size as frames of `kind`."""
    return b"".join(frame(kind, data[i:i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD))


class Decoder:
    """Bytes as they arrive in, whole frames out. Holds at most one frame's worth plus one read."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        out: list[tuple[bytes, bytes]] = []
        while len(self._buf) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._buf)
            if kind not in KINDS:
                raise ProtocolError(f"unknown frame kind {kind!r}")
            if size > MAX_PAYLOAD:
                raise ProtocolError(f"a frame of {size} bytes (at most {MAX_PAYLOAD})")
            if len(self._buf) < HEADER.size + size:
                break
            out.append((kind, bytes(self._buf[HEADER.size:HEADER.size + size])))
            del self._buf[:HEADER.size + size]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame."""
        return len(self._buf)


# --- the messages ---------------------------------------------------------------------------------------------

def _json(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_HELLO:
        raise ProtocolError(f"a message of {len(payload)} bytes (at most {MAX_HELLO})")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("a message that is not JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError("a message that is not a JSON object")
    return doc


def _int(doc: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{key}: expected a whole number from {lo} to {hi}")
    return v


def relay_hello(job_id: str) -> bytes:
    return frame(HELLO, json.dumps({"v": VERSION, "job": str(job_id)[:32]}).encode())


def parse_relay_hello(payload: bytes) -> str:
    """The job id the relay says it serves (the client also checks, from the kernel, who it is)."""
    doc = _json(payload)
    if doc.get("v") != VERSION:
        raise ProtocolError(f"protocol version {str(doc.get('v'))[:16]!r}, not {VERSION}")
    job = doc.get("job")
    if not isinstance(job, str) or not job.isdigit() or len(job) > 20:
        raise ProtocolError("job: expected a job id")
    return job


def client_hello(pty: bool, rows: int = 0, cols: int = 0, term: str | None = None) -> bytes:
    doc: dict[str, Any] = {"v": VERSION, "pty": pty, "rows": rows, "cols": cols}
    if term and _TERM.fullmatch(term):
        doc["term"] = term
    return frame(HELLO, json.dumps(doc).encode())


def parse_client_hello(payload: bytes) -> dict[str, Any]:
    """{"pty": bool, "rows", "cols", "term": str or None}, each checked."""
    doc = _json(payload)
    if doc.get("v") != VERSION:
        raise ProtocolError(f"protocol version {str(doc.get('v'))[:16]!r}, not {VERSION}")
    if not isinstance(doc.get("pty"), bool):
        raise ProtocolError("pty: expected true or false")
    term = doc.get("term")
    if term is not None and not (isinstance(term, str) and _TERM.fullmatch(term)):
        raise ProtocolError("term: not a terminal type")
    return {"pty": doc["pty"], "rows": _int(doc, "rows", 0, 0xFFFF), "cols": _int(doc, "cols", 0, 0xFFFF),
            "term": term}


_WINSIZE = struct.Struct(">HH")


def winsize(rows: int, cols: int) -> bytes:
    return frame(WINSIZE, _WINSIZE.pack(max(0, min(rows, 0xFFFF)), max(0, min(cols, 0xFFFF))))


def parse_winsize(payload: bytes) -> tuple[int, int]:
    if len(payload) != _WINSIZE.size:
        raise ProtocolError("a window size that is not 4 bytes")
    rows, cols = _WINSIZE.unpack(payload)
    return rows, cols


def signal_frame(sig: int) -> bytes:
    return frame(SIGNAL, bytes([sig]))


def parse_signal(payload: bytes) -> int:
    if len(payload) != 1 or payload[0] not in SIGNALS:
        raise ProtocolError("a signal the client may not send")
    return payload[0]


def exit_frame(status: dict[str, int]) -> bytes:
    return frame(EXIT, json.dumps(status).encode())


def parse_exit(payload: bytes) -> int:
    """The command's end as an exit code for the client: its own code, or 128 + the signal (as a shell says)."""
    doc = _json(payload)
    if "signal" in doc:
        return 128 + _int(doc, "signal", 1, 127)
    return _int(doc, "exit_code", 0, 255)


def exit_status(returncode: int) -> dict[str, int]:
    """subprocess's returncode (negative: killed by that signal) as the EXIT frame says it."""
    return {"signal": -returncode} if returncode < 0 else {"exit_code": returncode & 0xFF}
