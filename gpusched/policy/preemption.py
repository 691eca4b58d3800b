"""Preemption: which running jobs a waiting job may stop to get GPUs, and which of them to stop.

Who may preempt whom:
- without a clock (the first policy): a job at least preempt_margin more urgent (priority number lower);
- with classes: a job whose class lists the victim's class in `preempts` (urgency granted by the administrator);
- with a clock, by time: a job whose time limit is shorter than what a resumable job of the same or a lower
  class still has to run by its own limit, once that job has run at least its grace (what a stop costs it).
  Stopping a resumable job loses only the work since its last checkpoint, so giving its GPUs to a much shorter
  job is shortest-remaining-time-first at the price of one grace; a job that does not checkpoint is never
  stopped for time.
Which victims: without a clock the least urgent, then the latest; with a clock the choice that loses the least
work: the lowest class first, then resumable jobs, then the least GPU time lost (a non-resumable job loses all it
has done this attempt), then the latest.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from gpusched.policy import classes as classmod
from gpusched.policy.classes import JobClass
from gpusched.policy.data import Holder, Request
from gpusched.policy.order import UNLIMITED_AGES_AS
from gpusched.policy.placement import Pool, fits


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
            victims.sort(key=lambda h: (-classmod.rank(classes, h.job_class), not h.resumable,
                                        lost_gpu_seconds(h, now), -h.id))
        self.victims = victims
        # the time rule needs a victim with time left and a short enough job: cheap to rule out up front
        self.longest_left = max((self._left(h) - self._lost_time(h) for h in victims if self._by_time_ok(h)),
                                default=0.0)

    def _left(self, h: Holder) -> float:
        """What the job may still run by its own limit (unbounded without one)."""
        assert self.now is not None and h.started is not None
        if h.time_limit is None:
            return float("inf")
        return h.started + h.time_limit - self.now

    def _lost_time(self, h: Holder) -> float:
        assert self.now is not None and h.started is not None
        ran = max(0.0, self.now - h.started)
        return min(ran, h.grace) if h.resumable else ran

    def _by_time_ok(self, h: Holder) -> bool:
        """May this job be stopped for a shorter one at all? Only a resumable one (a job that doesn't checkpoint
        would lose its whole attempt: replayed on a real cluster log, stopping those for shorter jobs threw
        away 11% of the GPU time and doubled the mean completion time), once it has run its grace (a stop
        costs it about that much), and not once it is overdue (it may have been started on that guarantee)."""
        if self.now is None or h.started is None:
            return False
        if self.aging and h.submitted + self.aging * (h.time_limit or UNLIMITED_AGES_AS) <= self.now:
            return False
        return h.resumable and self.now - h.started >= h.grace

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
        if self.longest_left > 0:
            shortest = min((r.time_limit for r in queued if r.gpus and r.time_limit is not None), default=None)
            if shortest is not None and shortest < self.longest_left:
                return True
        return False

    def allowed(self, req: Request, h: Holder) -> bool:
        if self.now is None and h.priority - req.priority >= self.margin:
            return True
        if classmod.may_preempt(self.classes, req.job_class, h.job_class):
            return True
        if (self._by_time_ok(h) and req.time_limit is not None
                and classmod.rank(self.classes, req.job_class) <= classmod.rank(self.classes, h.job_class)):
            lost = self._lost_time(h)
            # the swap shortens the sum of completion times: the request runs now, the victim later, redoing
            # what it loses (at most its grace)
            if lost + req.time_limit < self._left(h):
                return True
        return False

    def choose(self, req: Request, pool: Pool, have: int) -> list[Holder] | None:
        """Victims that together with `have` GPUs give the request enough, in preference order; None if no
        such set exists. A GPU counts once every running job on it is chosen (jobs sharing a GPU free it
        together); a victim none of whose GPUs comes free for the request is not stopped."""
        if (self.now is not None and not self.classes
                and (req.time_limit is None or req.time_limit >= self.longest_left)):
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
