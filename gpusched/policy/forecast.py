"""When a waiting job can be expected to start: an estimate for `gpuschedctl why` and `submit --dry-run`.

Pure: the job, the jobs ahead of it (in the order the next pass uses), the jobs holding GPUs and the GPUs in;
a Forecast out. It plays the queue forward on the GPUs: each running job leaves its GPUs at its time limit
(backfill.expected_end: a stopping one within its grace), each job ahead starts as soon as enough GPUs that
fit it are free and keeps them for its own time limit, then the job gets the first GPUs that fit it.

It is an estimate, not a promise: jobs usually end before their limits (then it starts sooner), and the
per-user and class caps, preemption and backfill's gaps are not played. Where a time that matters is not
known (a running job or a job ahead without a time limit) it says so and names the job, rather than guess.
The policy's own plan, EASY backfill's reservation (decide.py: Decision.expected_start), is better where it
exists: the engine uses that one first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from gpusched.model import Gpu
from gpusched.policy.backfill import expected_end
from gpusched.policy.data import Holder, Request
from gpusched.policy.placement import fits, never_fits

MAX_AHEAD = 20000          # jobs ahead played at most (beyond: unknown, said so); about 0.2 s here


@dataclass(frozen=True)
class Forecast:
    at: float | None                 # epoch seconds; None: unknown (see why)
    gpus: tuple[int, ...] = ()       # the GPUs it would get (by index)
    why: str = ""                    # for an unknown time: the reason; else "" or what the estimate rests on


def expected_start(req: Request, ahead: Sequence[Request], holders: Sequence[Holder],
                   gpus: Sequence[Gpu] | None, now: float, not_before: float = 0.0) -> Forecast:
    """When `req` can start, after the jobs `ahead` (first first), none of it earlier than `not_before`."""
    floor = max(now, not_before)
    if req.gpus == 0:
        return Forecast(floor)                           # a CPU-only job needs no GPU to come free
    if gpus is None:
        return Forecast(None, why="the GPUs can't be probed now")
    if reason := never_fits(req, gpus):
        return Forecast(None, why=reason)
    if len(ahead) > MAX_AHEAD:
        return Forecast(None, why=f"{len(ahead)} jobs are ahead of it, too many to play forward")
    free_at: dict[int, float] = {}
    cause: dict[int, str] = {}                           # why a GPU's time is unknown
    for g in gpus:
        free_at[g.index] = math.inf if g.foreign_pids else now
        if g.foreign_pids:
            cause[g.index] = f"GPU {g.index} is busy with processes gpusched did not start"
    for h in holders:
        end = expected_end(h, now)
        for i in h.gpus:
            if i in free_at and end > free_at[i]:
                free_at[i] = end
                if math.isinf(end):
                    cause[i] = f"running job {h.id} has no time limit"
    for r in ahead:
        if r.gpus == 0:
            continue
        start, chosen = _earliest(r, gpus, free_at, now)
        if chosen is None or math.isinf(start):
            continue                                     # it can't start at a known time: it holds nothing known
        end = start + r.time_limit if r.time_limit is not None else math.inf
        for i in chosen:
            free_at[i] = end
            if math.isinf(end):
                cause[i] = f"job {r.id}, ahead of it, has no time limit"
    start, chosen = _earliest(req, gpus, free_at, floor)
    if chosen is None:
        return Forecast(None, why="no GPU here fits it")
    if math.isinf(start):
        blockers = sorted({cause[i] for i in _fitting(req, gpus) if i in cause})
        return Forecast(None, why="; ".join(blockers[:3]) + (f" and {len(blockers) - 3} more" if len(blockers) > 3
                                                               else "") or "the jobs ahead have no time limit")
    return Forecast(max(start, floor), chosen)


def _fitting(req: Request, gpus: Sequence[Gpu]) -> list[int]:
    return [g.index for g in gpus if fits(req, g, assume_empty=True)]


def _earliest(req: Request, gpus: Sequence[Gpu], free_at: dict[int, float],
              now: float) -> tuple[float, tuple[int, ...] | None]:
    """The time enough fitting GPUs are free for `req`, and which (the earliest free, then the lowest index)."""
    fitting = sorted(_fitting(req, gpus), key=lambda i: (max(free_at[i], now), i))
    if len(fitting) < req.gpus:
        return math.inf, None
    chosen = fitting[:req.gpus]
    return max(max(free_at[i], now) for i in chosen), tuple(sorted(chosen))
