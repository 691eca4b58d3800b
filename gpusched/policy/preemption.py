"""Preemption: which running jobs a waiting job may stop to get GPUs, and which of them to stop.

Who may preempt whom:
- without a clock (the first policy): a job at least preempt_margin more urgent (priority number lower);
- with classes: a job whose class lists the victim's class in `preempts` (urgency granted by the administrator);
- with a clock, by time: a resumable job of the same class may be stopped for a job whose time limit is in a
  shorter band than what it may still run by its own limit (shortest remaining time first), once it has run
  grace / LOST_WORK_BUDGET (a stop throws away about its grace of work, so at most that fraction of what it
  runs is lost), unless it is overdue (it may have been started on that guarantee). A job that does not
  checkpoint is never stopped for time: it would lose its whole attempt (replayed on a real cluster log, doing
  so threw away 11% of the GPU time and doubled the mean completion time).
Which victims: without a clock the least urgent, then the latest; with a clock the choice that loses the least
work: the lowest class first, then resumable jobs, then the least GPU time lost (a non-resumable job loses all it
has done this attempt), then the least urgent by the order, then the latest.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from gpusched.policy import classes as classmod
from gpusched.policy import order as ordermod
from gpusched.policy.classes import JobClass
from gpusched.policy.data import Holder, Request
from gpusched.policy.placement import Pool, fits


# A resumable job stopped for a shorter one loses about its grace of work; it is stopped only after running
# grace / LOST_WORK_BUDGET, so that no more than this fraction of the GPU time it runs is thrown away.
LOST_WORK_BUDGET = 0.05


def lost_gpu_seconds(h: Holder, now: float) -> float:
    """The GPU time a stop now throws away: a resumable job's work since its checkpoint (at most its grace), a
    non-resumable job's whole attempt."""
    ran = max(0.0, now - h.started) if h.started is not None else 0.0
    return len(h.gpus) * (min(ran, h.grace) if h.resumable else ran)


class Preemption:
    def __init__(self, holders: Sequence[Holder], *, margin: int, classes: Mapping[str, JobClass] | None,
                 now: float | None, aging: float = 0.0):
        self.margin = max(1, margin)
        self.classes = classes
        self.now = now
        self.aging = aging
        victims = [h for h in holders if h.preemptible and not h.stopping and h.gpus]
        if now is None:
            victims.sort(key=lambda h: (-h.priority, -h.id))
        else:
            def least_work_lost(h: Holder) -> tuple:
                tier, value = ordermod.urgency(h.submitted, h.time_limit, now, aging)
                return (-classmod.rank(classes, h.job_class), not h.resumable, lost_gpu_seconds(h, now), -tier,
                        -value, -h.id)
            victims.sort(key=least_work_lost)
        self.victims = victims
        # the time rule: resumable victims that have run long enough, are not overdue, and what they have left
        self.by_time: dict[int, float] = {}
        if now is not None:
            for h in victims:
                if (h.resumable and h.started is not None and now - h.started >= h.grace / LOST_WORK_BUDGET
                        and ordermod.urgency(h.submitted, h.time_limit, now, aging)[0] == 1):
                    left = h.started + h.time_limit - now if h.time_limit is not None else math.inf
                    self.by_time[h.id] = ordermod.band(left)
        self.least_urgent = max(self.by_time.values(), default=None)

    def possible(self, queued: Sequence[Request]) -> bool:
        """Could any of these requests preempt anyone? (Without building the order: a pass where nothing is
        free and nobody may preempt costs a linear scan, not a sort.)"""
        if not self.victims or not queued:
            return False
        if self.now is None:
            most_urgent = min((r.priority for r in queued if r.gpus), default=None)
            if most_urgent is not None and max(h.priority for h in self.victims) - most_urgent >= self.margin:
                return True
        if self.classes:
            attackers = {r.job_class for r in queued if r.gpus}
            victim_classes = {h.job_class for h in self.victims}
            if any(classmod.may_preempt(self.classes, a, v) for a in attackers for v in victim_classes):
                return True
        if self.least_urgent is not None:
            shortest = min((ordermod.band(r.time_limit) for r in queued if r.gpus), default=math.inf)
            if shortest < self.least_urgent:
                return True
        return False

    def allowed(self, req: Request, h: Holder) -> bool:
        if self.now is None and h.priority - req.priority >= self.margin:
            return True
        if classmod.may_preempt(self.classes, req.job_class, h.job_class):
            return True
        if h.id in self.by_time and req.job_class == h.job_class:
            # shortest remaining time first, by time-limit bands: the request's limit is in a shorter band
            # than what the victim may still run (so about half of it or less)
            return ordermod.band(req.time_limit) < self.by_time[h.id]
        return False

    def choose(self, req: Request, pool: Pool, have: int) -> list[Holder] | None:
        """Victims that together with `have` GPUs give the request enough, in preference order; None if no
        such set exists. A GPU counts once every running job on it is chosen (jobs sharing a GPU free it
        together); a victim none of whose GPUs comes free for the request is not stopped."""
        if self.now is not None and not self.classes and (
                self.least_urgent is None or ordermod.band(req.time_limit) >= self.least_urgent):
            return None                      # only the time rule could apply, and it can't for this request
        chosen: list[tuple[Holder, list[int]]] = []
        gain = 0
        left_on: dict[int, int] = {}
        for h in self.victims:
            if not self.allowed(req, h):
                continue
            fit = [i for i in h.gpus if i in pool.by_index and fits(req, pool.by_index[i], assume_empty=True)]
            if not fit:
                continue
            for i in fit:
                left = left_on.get(i, sum(1 for x in pool.holders_on.get(i, ()) if not x.stopping)) - 1
                left_on[i] = left
                gain += left == 0
            chosen.append((h, fit))
            if have + gain >= req.gpus:
                return [h for h, fit in chosen if any(left_on[i] == 0 for i in fit)]
        return None

    def take(self, chosen: Sequence[Holder]) -> None:
        ids = {h.id for h in chosen}
        self.victims = [h for h in self.victims if h.id not in ids]
