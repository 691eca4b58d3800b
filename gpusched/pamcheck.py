"""`python3 -m gpusched.pamcheck`: one web sign-in checked by PAM, in a root process of its own.

The daemon (webauth.py) starts it for each attempt and writes `user NUL rhost NUL password` to its stdin; it
answers one line of JSON, {"ok": bool, "why": "..."} ("why": PAM's words, for the daemon's journal only),
and ends. A process rather than a thread of the daemon: a failed password takes pam_unix about 2 s by
design (its fail delay), PAM modules are not all thread-safe, a crash in one can't take the scheduler down,
and the password lives only in a process that exits at once (the buffers that held it are overwritten
first, as far as Python lets us).
"""

from __future__ import annotations

import json
import os
import sys

from gpusched import pam

MAX_INPUT = 4096        # bytes: a user name (32), an address (45) and a password (webauth.MAX_PASSWORD)


def read_input(fd: int = 0) -> bytearray:
    """stdin, at most MAX_INPUT + 1 bytes, read into one buffer that can be overwritten."""
    buf = bytearray(MAX_INPUT + 1)
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    view.release()
    if got > MAX_INPUT:
        _wipe(buf)
        raise ValueError("the input is too long")
    del buf[got:]               # shrinks in place: nothing of the password is copied
    return buf


def split(data: bytearray) -> tuple[str, str, bytearray]:
    """(user, rhost, password) from `user NUL rhost NUL password`; the password a copy to overwrite too."""
    first = data.index(0)
    second = data.index(0, first + 1)
    user = data[:first].decode("utf-8")
    rhost = data[first + 1:second].decode("ascii")
    return user, rhost, data[second + 1:]


def _wipe(buf: bytearray) -> None:
    buf[:] = b"\0" * len(buf)


def check(data: bytearray, service: str = pam.WEB_SERVICE) -> dict[str, object]:
    password = bytearray()
    try:
        user, rhost, password = split(data)
    except ValueError:
        return {"ok": False, "why": "malformed input"}
    try:
        why = pam.authenticate(service, user, password, rhost, lambda _m, _p: None)
    finally:
        _wipe(password)
    return {"ok": why is None, "why": (why or "")[:1000]}


def main() -> int:
    try:
        data = read_input()
    except (OSError, ValueError) as e:
        print(json.dumps({"ok": False, "why": f"can't read the request: {e}"}), flush=True)
        return 0
    try:
        answer = check(data)
    finally:
        _wipe(data)
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
