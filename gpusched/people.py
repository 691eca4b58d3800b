"""Which uids are people's accounts (login.defs UID_MIN..UID_MAX), for the web dashboard's identity.

The dashboard names whoever owns a loopback connection. A connection owned by root or by a system account
(www-data, nobody, postgres, ...) is almost never a person at a browser: it is a service that was made to
connect (a proxy, a fetcher, a hook). Naming it would hand its powers to whoever steered it: root's admin
view and actions on every job, or jobs run as that system account. So the dashboard treats those
connections as the public view, and the daemon acts for no such uid on the web service's behalf; root and
admins use their own account (in `admin_group`) there, or `gpuschedctl`.
"""

from __future__ import annotations

import time
from typing import Iterable

LOGIN_DEFS = "/etc/login.defs"
DEFAULTS = (1000, 60000)          # Debian's UID_MIN and UID_MAX (shadow's defaults) when the file says nothing
REREAD = 60.0                     # seconds a reading of login.defs is kept


def uid_range(lines: Iterable[str]) -> tuple[int, int]:
    """(UID_MIN, UID_MAX) from login.defs text: `KEY value` lines, `#` comments; defaults for what is missing or
    not a number."""
    found = dict(zip(("UID_MIN", "UID_MAX"), DEFAULTS))
    for line in lines:
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] in found:
            try:
                found[parts[0]] = int(parts[1], 0)
            except ValueError:
                pass
    return found["UID_MIN"], found["UID_MAX"]


def in_range(uid: int, bounds: tuple[int, int]) -> bool:
    low, high = bounds
    return uid > 0 and low <= uid <= high


_cache: tuple[float, tuple[int, int]] | None = None


def bounds() -> tuple[int, int]:
    """This machine's (UID_MIN, UID_MAX), read again at most every REREAD seconds."""
    global _cache
    now = time.monotonic()
    if _cache is None or now - _cache[0] > REREAD:
        try:
            with open(LOGIN_DEFS, encoding="utf-8", errors="replace") as f:
                _cache = (now, uid_range(f))
        except OSError:
            _cache = (now, DEFAULTS)
    return _cache[1]


def is_person(uid: int) -> bool:
    """Whether `uid` is in login.defs' range of people's accounts (root never is)."""
    return in_range(uid, bounds())
