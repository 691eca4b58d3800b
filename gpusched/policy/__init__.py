"""The scheduling policy: which queued jobs start on which GPUs, and which running jobs to preempt.

Pure: plain data in (Request, Holder, Gpu), a Decision out; no clock, no I/O. One pass runs the stages in
this order, one small module each:

    eligibility  may it start at all (caps, classes, GPUs that could ever fit)
    order        who is considered first (classes, aging, time limit, fair share, the user's own priority)
    placement    which GPUs (whole GPUs, memory reservations, shared GPUs)
    preemption   which running jobs to stop for it (classes, margin, time; the least work lost)
    backfill     whether a later job may start without delaying the first one that can't (EASY)

with `fairshare` (decayed usage and standings), `classes` (the administrator's job classes) and `inputs` (a
job record to a Request or Holder). `schedule()` called with only the first policy's arguments makes the
first policy's decisions.
"""

from gpusched.policy.classes import JobClass
from gpusched.policy.data import Backfill, Decision, Holder, Request
from gpusched.policy.decide import schedule
from gpusched.policy.placement import fits, never_fits

__all__ = ["Backfill", "Decision", "Holder", "JobClass", "Request", "fits", "never_fits", "schedule"]
