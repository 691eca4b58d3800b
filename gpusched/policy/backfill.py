"""EASY backfill: the first job that can't start gets a reservation; a later job may start now only if it
can't delay that reservation.

The reservation is computed from the running jobs' time limits: each GPU that fits the waiting job comes free
when the last job on it reaches its limit, so the job can start (its "shadow time") once enough of them have.
A later job may then start now if it is sure to end by the shadow time (its limit is enforced, not estimated),
or if the GPUs it takes are ones the reserved job won't need at the shadow time (more fitting GPUs are free by
then than it asks for). With exact limits that is Lifka's guarantee: the reserved job starts no later than it
would have without backfill. A running job without a limit (or past an estimated one) makes no promise: the
shadow time is then unknown and backfill can't delay what has no date; aging and class default limits keep
such waits bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from gpusched.model import Gpu
from gpusched.policy.data import Holder, Request
from gpusched.policy.placement import Pool, fits


def expected_end(h: Holder, now: float) -> float:
    """When the job will have left its GPUs at the latest, by what the policy knows."""
    if h.stopping:
        return now + h.grace
    if h.time_limit is None or h.started is None:
        return math.inf
    end = h.started + h.time_limit
    if end < now:
        # past its limit: an enforced one is being stopped (within its grace); an estimate promises nothing
        return now + h.grace if not h.limit_estimated else math.inf
    return end


@dataclass
class Reservation:
    job: Request
    shadow: float                      # when it can start at the latest (math.inf: unknown)
    fitting: frozenset[int]            # GPUs that fit the reserved job
    extra: int                         # fitting GPUs free by the shadow time beyond what it needs
    free_by_shadow: set[int] = field(default_factory=set)

    def allows(self, req: Request, chosen: Sequence[Gpu], now: float) -> bool:
        """May `req` start now on `chosen` without delaying the reserved job?"""
        if math.isinf(self.shadow):
            return True
        if req.time_limit is not None and not req.limit_estimated and now + req.time_limit <= self.shadow:
            return True
        needed = sum(1 for g in chosen if g.index in self.free_by_shadow)
        return needed <= self.extra

    def take(self, req: Request, chosen: Sequence[Gpu], now: float) -> None:
        """Account for a job started now on `chosen`."""
        if math.isinf(self.shadow):
            return
        if req.time_limit is not None and not req.limit_estimated and now + req.time_limit <= self.shadow:
            return
        for g in chosen:
            if g.index in self.free_by_shadow:
                self.free_by_shadow.discard(g.index)
                self.extra -= 1

    def prefer(self, usable: Sequence[Gpu]) -> list[Gpu]:
        """Order usable GPUs so that a backfilled job takes those the reserved job can't use first."""
        return sorted(usable, key=lambda g: g.index in self.fitting)


def reserve(req: Request, pool: Pool, holders: Sequence[Holder], now: float) -> Reservation:
    """The reservation for `req`, which can't start now, given the GPUs free now (after this pass's starts)."""
    fitting = frozenset(i for i, g in pool.by_index.items() if fits(req, g, assume_empty=True)
                        and not g.foreign_pids)
    free_now = {g.index for g in pool.free if g.index in fitting}
    # when each held fitting GPU comes free: when the last job on it is gone
    free_at: dict[int, float] = {}
    for h in holders:
        end = expected_end(h, now)
        for i in h.gpus:
            if i in fitting:
                free_at[i] = max(free_at.get(i, now), end)
    need = req.gpus - len(free_now)
    if need <= 0:
        # enough GPUs are free, but kept for others in this pass: it can start as soon as they are used
        shadow = now
    else:
        times = sorted(free_at.values())
        shadow = times[need - 1] if len(times) >= need else math.inf
    by_shadow = free_now | {i for i, t in free_at.items() if t <= shadow}
    return Reservation(req, shadow, fitting, len(by_shadow) - req.gpus, by_shadow)
