"""Signed-in sessions of the dashboard beyond loopback (docs/web.md): kept in memory, bounded, expiring.

A person who signs in with their password (login.py) gets a random session id, secrets.token_urlsafe(32),
in a cookie that only this site's pages over HTTPS ever send back (`cookie`: Secure, HttpOnly,
SameSite=Strict, Path=/, the __Host- prefix, which browsers refuse to set otherwise). The id maps, here and
nowhere else, to the uid the daemon then acts for, exactly as it would for that uid's loopback connection.
A session ends LIFETIME after it began or IDLE after its last request, whichever is first, when its person
signs out, and when the service restarts (nothing is written down: everyone signs in again).

Bounds: PER_UID sessions per person (a new one ends their oldest) and TOTAL in all (beyond that, signing
in is refused until some expire).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Callable

COOKIE = "__Host-gpusched-session"
LIFETIME = 12 * 3600.0
IDLE = 3600.0
PER_UID = 8
TOTAL = 1024


@dataclass
class Session:
    sid: str
    uid: int
    name: str
    created: float
    seen: float


class Full(Exception):
    """Too many sessions in all: the sign-in is refused."""


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def expired(self, s: Session, now: float) -> bool:
        return now - s.created > LIFETIME or now - s.seen > IDLE

    def create(self, uid: int, name: str) -> Session:
        now = self.clock()
        self._prune(now)
        mine = sorted((s for s in self._by_id.values() if s.uid == uid), key=lambda s: s.seen)
        for old in mine[:max(0, len(mine) - PER_UID + 1)]:
            del self._by_id[old.sid]
        if len(self._by_id) >= TOTAL:
            raise Full(f"too many people are signed in ({TOTAL}): try again later")
        s = Session(secrets.token_urlsafe(32), uid, name, now, now)
        self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session of this id (its idle time starts again), or None."""
        if not sid or len(sid) > 100:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = self.clock()
        if self.expired(s, now):
            del self._by_id[sid]
            return None
        s.seen = now
        return s

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _prune(self, now: float) -> None:
        for sid, s in list(self._by_id.items()):
            if self.expired(s, now):
                del self._by_id[sid]

    def __len__(self) -> int:
        return len(self._by_id)


def cookie(name: str, value: str, max_age: int) -> str:
    """A Set-Cookie value that only this site's HTTPS pages send back, never readable by scripts, never sent
    with a request that another site started (SameSite=Strict); max_age 0 deletes it."""
    return f"{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"
