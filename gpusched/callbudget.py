"""A budget of the daemon's time per caller, for the bus calls whose cost grows with the queue: show, why and
submit --dry-run each put every queued job in the policy's order (a tenth of a second or more at 100,000).

The daemon answers one call at a time, so a user asking in a loop (or sending many calls at once) would keep
everyone else's calls, and the scheduling passes, waiting behind theirs. Each uid has a leaky bucket of
seconds: what its costly calls took is added, and it drains at RATE (the share of the daemon's time one user
may keep on average); a call is refused while the bucket is over BURST, saying when to ask again. With a queue
of an ordinary size these calls take milliseconds, and nobody comes near it.

Pure: the times are given (the engine's monotonic clock).
"""

from __future__ import annotations

RATE = 0.25        # seconds of daemon time per second one uid may keep on average
BURST = 2.0        # seconds one uid may take at once before the rate applies
MAX_CALLERS = 4096  # uids remembered; past it the ones whose bucket has drained are forgotten


class Budget:
    def __init__(self, rate: float = RATE, burst: float = BURST):
        self.rate, self.burst = rate, burst
        self._owed: dict[int, tuple[float, float]] = {}     # uid -> (seconds in its bucket, when)

    def _level(self, uid: int, now: float) -> float:
        owed, at = self._owed.get(uid, (0.0, now))
        return max(0.0, owed - max(0.0, now - at) * self.rate)

    def wait(self, uid: int, now: float) -> float:
        """Seconds until `uid` may make a costly call (0: now)."""
        over = self._level(uid, now) - self.burst
        return over / self.rate if over > 0 else 0.0

    def charge(self, uid: int, seconds: float, now: float) -> None:
        """A costly call of `uid` took `seconds`."""
        self._owed[uid] = (self._level(uid, now) + max(0.0, seconds), now)
        if len(self._owed) > MAX_CALLERS:
            self._owed = {u: (self._level(u, now), now) for u in self._owed if self._level(u, now) > 0}
