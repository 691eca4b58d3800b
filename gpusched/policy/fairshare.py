"""Fair share: who has had less than their share of the GPUs lately, so that their jobs go first.

Usage is GPU-seconds held, decayed with a half-life (Slurm's PriorityDecayHalfLife): a GPU-hour used one
half-life ago counts half. A user's standing is their fraction of the decayed usage over their fraction of the
shares: below 1 they have had less than their share, above 1 more. With share groups, the groups are compared
first (a group's usage is its members'), then the users inside a group, so a big group can't crowd out a small
one by having many members (a two-level fair tree). Pure: time is always passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping

Standing = tuple[float, float]          # (the group's or lone user's ratio, the user's ratio in their group)
EVEN: Standing = (0.0, 0.0)


def decay(value: float, dt: float, half_life: float) -> float:
    """What `value` GPU-seconds are worth `dt` seconds later. half_life <= 0: no decay."""
    if half_life <= 0 or dt <= 0:
        return value
    return value * 0.5 ** (dt / half_life)


def held(gpus: float, start: float, end: float, now: float, half_life: float) -> float:
    """Decayed GPU-seconds, as of `now`, of holding `gpus` GPUs from start to end (the exact integral, so a
    ledger charged every second and one charged once an hour agree)."""
    if end <= start:
        return 0.0
    if half_life <= 0:
        return gpus * (end - start)
    k = math.log(2) / half_life
    return gpus / k * (math.exp(-k * (now - end)) - math.exp(-k * (now - start)))


@dataclass
class Ledger:
    """Decayed usage per user (any hashable key: name or uid). Mutable: the engine charges it as jobs hold
    GPUs; values are kept as of `at` and decayed on read."""
    half_life: float
    usage: dict[Hashable, float] = field(default_factory=dict)
    at: float = 0.0

    def advance(self, now: float) -> None:
        if now > self.at:
            factor = decay(1.0, now - self.at, self.half_life)
            if factor != 1.0:
                for user in self.usage:
                    self.usage[user] *= factor
            self.at = now

    def charge(self, user: Hashable, gpus: float, start: float, end: float) -> None:
        """Add `gpus` GPUs held from start to end (both at or before the ledger's time after advancing)."""
        self.advance(max(end, self.at))
        self.usage[user] = self.usage.get(user, 0.0) + held(gpus, start, end, self.at, self.half_life)

    def value(self, user: Hashable, now: float) -> float:
        return decay(self.usage.get(user, 0.0), now - self.at, self.half_life)

    @classmethod
    def rebuild(cls, runs: Iterable[tuple[Hashable, float, float, float]], half_life: float, now: float) -> Ledger:
        """A ledger as of `now` from (user, gpus, start, end) of past attempts (a daemon that restarts has
        its jobs' histories, not the ledger): the same numbers as charging them as they ran."""
        ledger = cls(half_life, at=now)
        for user, gpus, start, end in runs:
            end = min(end, now)
            ledger.usage[user] = ledger.usage.get(user, 0.0) + held(gpus, start, end, now, half_life)
        return ledger


def standings(usage: Mapping[Hashable, float], users: Iterable[Hashable], *,
              shares: Mapping[Hashable, float] | None = None, default_share: float = 1.0,
              group_of: Mapping[Hashable, str] | None = None,
              group_shares: Mapping[str, float] | None = None) -> dict[Hashable, Standing]:
    """Each user's standing among `users` (those with jobs waiting or running, say): lower = further below
    their share = first. Only the users given compete: an absent user's share is not held for them (a server
    is shared among those who want it now). A user's own usage is remembered whether or not they wait now, so
    one who used a lot, left and came back still stands high until it decays."""
    shares = shares or {}
    group_of = group_of or {}
    group_shares = group_shares or {}
    users = list(dict.fromkeys(users))
    if not users:
        return {}

    def share(u: Hashable) -> float:
        return max(shares.get(u, default_share), 0.0)

    def entity(u: Hashable) -> tuple[str, Hashable]:
        g = group_of.get(u)
        return ("g", g) if g is not None and g in group_shares else ("u", u)

    total_usage = sum(usage.get(u, 0.0) for u in users) or 0.0
    # the top level: groups (their members' usage) and users in no group
    ent_usage: dict[tuple[str, Hashable], float] = {}
    ent_share: dict[tuple[str, Hashable], float] = {}
    for u in users:
        e = entity(u)
        ent_usage[e] = ent_usage.get(e, 0.0) + usage.get(u, 0.0)
        ent_share[e] = max(group_shares[e[1]], 0.0) if e[0] == "g" else share(u)   # type: ignore[index]
    top = _ratios(ent_usage, ent_share, total_usage)
    # inside each group
    inner: dict[Hashable, float] = {}
    for e in ent_usage:
        if e[0] != "g":
            continue
        members = [u for u in users if entity(u) == e]
        inner.update(_ratios({u: usage.get(u, 0.0) for u in members}, {u: share(u) for u in members},
                             ent_usage[e]))
    return {u: (top[entity(u)], inner.get(u, 0.0)) for u in users}


def _ratios(usage: Mapping[Hashable, float], share: Mapping[Hashable, float], total_usage: float
            ) -> dict[Hashable, float]:
    total_share = sum(share.values())
    out = {}
    for k, used in usage.items():
        if total_usage <= 0:
            out[k] = 0.0
        elif share[k] <= 0 or total_share <= 0:
            out[k] = math.inf                      # no share at all: runs only when nobody else waits
        else:
            out[k] = (used / total_usage) / (share[k] / total_share)
    return out


def describe(standing: Standing) -> str:
    """For `gpuschedctl show`: how a user stands, in words."""
    top, inner = standing
    if math.isinf(top):
        return "has no share: runs when nobody with a share waits"
    word = "below" if top < 1 else "above" if top > 1 else "at"
    return f"{top:.2f}x their share of recent GPU time ({word} it)"
