"""One scheduling pass: eligibility -> order -> placement -> preemption -> backfill, and a reason for every
job left waiting.

Pure: plain data in, a Decision out. Called with only the first policy's arguments it makes the first policy's
decisions (priority then arrival, first fit, preemption by priority margin, every job that fits starts); each
keyword below turns on one mechanism, and `gpusched.config` holds the defaults the daemon runs with.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

from gpusched.model import Gpu
from gpusched.policy import order as ordermod
from gpusched.policy.backfill import Reservation, reserve
from gpusched.policy.classes import JobClass
from gpusched.policy.data import Backfill, Decision, Holder, Request
from gpusched.policy.eligibility import Gate
from gpusched.policy.fairshare import Standing
from gpusched.policy.placement import Pool
from gpusched.policy.preemption import Preemption


def schedule(queued: Sequence[Request], holders: Sequence[Holder], gpus: Sequence[Gpu] | None,
             *, max_running: int = 0, preempt_margin: int = 10, max_running_per_user: int = 0,
             max_cpu_jobs_per_user: int = 0,
             classes: Mapping[str, JobClass] | None = None,
             standing: Mapping[int, Standing] | None = None,
             backfill: Backfill | str = Backfill.GREEDY,
             aging: float = 0.0,
             now: float | None = None,
             reserve_memory: bool = False) -> Decision:
    """Decide which queued jobs start on which GPUs and which running jobs to preempt.

    classes: the configured job classes by name (Request/Holder.job_class names one); None: no classes.
    standing: each uid's fair-share standing (fairshare.standings); ordering users within a class and band.
    backfill: GREEDY (anything that fits starts), EASY (a reservation for the first job that can't start), OFF.
    aging: how many times its own time limit a job may wait before it is overdue: overdue jobs go first in
      their class, earliest deadline first; 0: never.
    now: epoch seconds. Given, the order is time-aware (order.py), priority orders only a user's own jobs,
      preempt_margin no longer applies (urgency comes from classes), and resumable jobs may be preempted
      for much shorter ones (preemption.py). EASY backfill needs it.
    reserve_memory: gpu_memory is a reservation against each GPU's total, and `share` jobs may share a GPU.
    """
    backfill = Backfill(backfill)
    if backfill == Backfill.EASY and now is None:
        raise ValueError("EASY backfill needs the time (now)")
    d = Decision()
    if not queued:
        return d
    caps = dict(max_running=max_running, max_running_per_user=max_running_per_user,
                max_cpu_jobs_per_user=max_cpu_jobs_per_user, classes=classes)
    gate = Gate(holders, gpus, **caps)
    pool = Pool(gpus, holders, reserve_memory)
    pre = Preemption(holders, margin=preempt_margin, classes=classes, now=now, aging=aging)
    key = ordermod.keyfunc(classes=classes, now=now, aging=aging, standing=standing)
    may_preempt = pre.possible(queued)
    if gpus is not None and not pool.any_free() and not pool.coming and not may_preempt:
        if _nothing_free(queued, gate, Gate(holders, gpus, **caps), pool, key, d, holders, now, backfill):
            return d
        d, gate = Decision(), Gate(holders, gpus, **caps)

    reservation: Reservation | None = None
    blocked: Request | None = None                   # with backfill OFF: the job everyone else waits behind
    started: list[tuple[Request, tuple[int, ...]]] = []          # GPU jobs started in this pass
    cpu_left = sum(1 for r in queued if not r.gpus)
    for req in ordermod.ordered(queued, key):
        if gate.full():
            # nothing more can start this pass: the rest wait, without ordering them any further
            _rest(d, queued, lambda r: f"max_running ({max_running}) reached")
            break
        if not req.gpus:
            cpu_left -= 1
        if reason := gate.check(req):
            d.waiting[req.id] = reason
            continue
        if blocked is not None:
            d.waiting[req.id] = f"waiting behind job {blocked.id} (backfill is off)"
            continue
        if req.gpus == 0:
            d.starts.append((req.id, ()))
            gate.admit(req)
            continue
        usable = pool.usable(req)
        if len(usable) >= req.gpus:
            if reservation is not None:
                usable = reservation.prefer(usable)
            take = usable[:req.gpus]
            if reservation is not None and now is not None and not reservation.allows(req, take, now):
                d.waiting[req.id] = _behind(reservation, req, now)
                continue
            if reservation is not None and now is not None:
                reservation.take(req, take, now)
            idx = pool.take(req, take)
            d.starts.append((req.id, idx))
            started.append((req, idx))
            gate.admit(req)
            continue
        # Not enough now. GPUs already being freed for it (earlier preemptions) count before preempting more.
        soon = pool.soon(req) if pool.coming else []
        if len(usable) + len(soon) >= req.gpus:
            need = req.gpus - len(usable)
            pool.coming -= set(soon[:need])
            pool.keep(usable)                        # keep them for this job
            d.waiting[req.id] = "waiting for GPUs being freed by stopping jobs"
            if backfill == Backfill.OFF:
                blocked = req
            continue
        chosen = pre.choose(req, pool, len(usable) + len(soon)) if may_preempt else None
        if chosen:
            for h in chosen:
                d.preempts.append((h.id, req.id))
            pre.take(chosen)
            pool.coming -= set(soon)
            pool.keep(usable)
            d.waiting[req.id] = "preempting job(s) " + ", ".join(str(h.id) for h in chosen)
            if backfill == Backfill.OFF:
                blocked = req
            continue
        reason = _short_of(req, len(usable), pool)
        if backfill == Backfill.EASY and reservation is None and now is not None:
            reservation = reserve(req, pool, _as_planned(holders, d, started, now), now)
            reason += _planned(reservation, d)
        elif backfill == Backfill.OFF:
            blocked = req
        d.waiting[req.id] = reason
        if not cpu_left and not may_preempt and not pool.any_free() and not pool.coming:
            # Nothing left to give and nobody to take it from: no later job can start (and, no CPU-only job
            # being left, the caps won't change), so the rest wait without being ordered any further.
            memo: dict[tuple, str] = {}
            _rest(d, queued, lambda r: _waits(r, gate, pool, memo))
            break
    return d


def _as_planned(holders: Sequence[Holder], d: Decision, started: Sequence[tuple[Request, tuple[int, ...]]],
                now: float) -> list[Holder]:
    """The holders as they will be once this pass's decisions are carried out: its victims stopping, the jobs
    it started running from now (a reservation that missed them would promise GPUs they hold)."""
    stopping = {v for v, _ in d.preempts}
    out = [dataclasses.replace(h, stopping=True) if h.id in stopping else h for h in holders]
    for r, idx in started:
        out.append(Holder(r.id, r.priority, idx, uid=r.uid, cpu_only=not idx, job_class=r.job_class,
                              submitted=r.submitted, started=now, time_limit=r.time_limit,
                              limit_estimated=r.limit_estimated, resumable=r.resumable, share=r.share,
                              gpu_memory=r.gpu_memory, grace=r.grace))
    return out


def _waits(req: Request, gate: Gate, pool: Pool, memo: dict) -> str:
    """Why a job that can't start waits, when nothing is free and the caps no longer change (jobs asking for
    the same thing share the answer)."""
    shape = (req.uid, req.job_class, req.gpus, req.gpu_memory, req.gpu_type, req.gpu_ids)
    reason = memo.get(shape)
    if reason is None:
        reason = memo[shape] = gate.check(req) or _short_of(req, 0, pool)
    return reason


def _short_of(req: Request, free: int, pool: Pool, memo: dict | None = None) -> str:
    """Why a GPU job waits for GPUs (jobs asking for the same thing share the text)."""
    shape = (req.gpus, req.gpu_memory, req.gpu_type, req.gpu_ids, free)
    if memo is not None and shape in memo:
        return memo[shape]
    reason = f"waiting for {req.gpus} GPU(s), {free} free"
    if foreign := pool.foreign_busy(req):
        reason += f"; GPU(s) {', '.join(map(str, foreign))} busy with processes gpusched did not start"
    if memo is not None:
        memo[shape] = reason
    return reason


def _rest(d: Decision, queued: Sequence[Request], why) -> None:
    """Give every job not decided yet the reason `why(job)`."""
    started = {j for j, _ in d.starts}
    for r in queued:
        if r.id not in started and r.id not in d.waiting:
            d.waiting[r.id] = why(r)


def _planned(res: Reservation, d: Decision) -> str:
    if math.isinf(res.shadow):
        return "; no start time can be promised (running jobs have no time limit)"
    d.expected_start[res.job.id] = res.shadow
    return "; GPUs reserved for it, expected to start by the running jobs' time limits"


def _behind(res: Reservation, req: Request, now: float) -> str:
    return (f"waiting for GPUs reserved for job {res.job.id}: {req.gpus} GPU(s) free now, but this job's "
            f"time limit would run past when job {res.job.id} is due to start (backfill)")


def _nothing_free(queued: Sequence[Request], gate: Gate, fresh: Gate, pool: Pool, key: ordermod.KeyFunc,
                  d: Decision, holders: Sequence[Holder], now: float | None, backfill: Backfill) -> bool:
    """No GPU is free, none is coming free, and nobody may preempt: no GPU job can start, so none is ordered
    (a linear scan instead of a sort; jobs asking for the same thing share one reason). CPU-only jobs are the
    only ones that may start, in their own order. Returns False, having decided nothing that counts, when a
    CPU-only job started and a running cap could then give a GPU job a different reason at its turn than at
    the start of the pass (`fresh`): the caller then takes the ordinary path."""
    cpu = sorted((r for r in queued if r.gpus == 0), key=key)
    for req in cpu:
        if reason := gate.check(req):
            d.waiting[req.id] = reason
        else:
            d.starts.append((req.id, ()))
            gate.admit(req)
    if d.starts and (gate.max_running or gate.max_running_per_user) and len(cpu) < len(queued):
        return False
    memo: dict[tuple, str] = {}
    first: Request | None = None
    first_key: ordermod.Key = ()
    for req in queued:
        if not req.gpus:
            continue
        reason = d.waiting[req.id] = _waits(req, fresh, pool, memo)
        if backfill == Backfill.EASY and reason.startswith("waiting for "):
            k = key(req)
            if first is None or k < first_key:
                first, first_key = req, k
    if first is not None and now is not None:
        d.waiting[first.id] += _planned(reserve(first, pool, holders, now), d)
    return True
