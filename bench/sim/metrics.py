"""What users saw, from the jobs' outcomes after a replay.

- JCT: completion (or the 7-day kill) minus submission.
- wait: JCT minus the job's run time, i.e. all the time it was not making progress it kept (queued, and any
  attempt a preemption threw away).
- bounded slowdown (10 s): mean over jobs of max(1, JCT / max(run time, 10 s)).
- util_backlogged: the fraction of GPUs held while at least one job was waiting.
- jain_daily: for each day, among the users who had a job waiting at some moment of it, Jain's index of the
  GPU time each got that day ((sum x)^2 / (n sum x^2): 1 is equal shares, 1/n one user gets everything);
  the mean over days with at least two such users.
- per-user slowdown max/min: the worst user's mean bounded slowdown over the best user's.
- preemptions, GPU-hours lost to them, useful GPU-hours (the work that counted).
"""

from __future__ import annotations

import statistics
from typing import Sequence

from bench.sim.cluster import Totals
from bench.sim.trace import SimJob

DAY = 86400.0


def _pct(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def bsld(job: SimJob) -> float:
    assert job.end is not None
    return max(1.0, (job.end - job.submit) / max(job.work, 10.0))


def summarize(jobs: Sequence[SimJob], totals: Totals) -> dict[str, float]:
    jct = sorted(j.end - j.submit for j in jobs)            # type: ignore[operator]
    wait = sorted(max(0.0, j.end - j.submit - j.work) for j in jobs)   # type: ignore[operator]
    out = {
        "mean_jct_s": statistics.fmean(jct),
        "median_jct_s": statistics.median(jct),
        "p99_jct_s": _pct(jct, 99),
        "mean_wait_s": statistics.fmean(wait),
        "p99_wait_s": _pct(wait, 99),
        "max_wait_s": wait[-1],
        "bsld": statistics.fmean(bsld(j) for j in jobs),
        "util_backlogged": totals.busy_backlogged / totals.backlogged / totals.gpus if totals.backlogged else 1.0,
        "jain_daily": jain_daily(jobs),
        "preemptions": sum(j.preemptions for j in jobs),
        "lost_gpu_hours": sum(j.lost for j in jobs) / 3600,
        "useful_gpu_hours": sum(j.work * j.gpus for j in jobs) / 3600,
    }
    users: dict[str, list[float]] = {}
    for j in jobs:
        users.setdefault(j.user, []).append(bsld(j))
    means = [statistics.fmean(v) for v in users.values()]
    out["user_bsld_max_over_min"] = max(means) / min(means)
    for label, group in (("1gpu", [j for j in jobs if j.gpus == 1]), ("multi_gpu", [j for j in jobs if j.gpus > 1])):
        if group:
            out[f"mean_jct_{label}_s"] = statistics.fmean(j.end - j.submit for j in group)   # type: ignore[operator]
            out[f"max_wait_{label}_s"] = max(j.end - j.submit - j.work for j in group)     # type: ignore[operator]
    return out


def _split(start: float, end: float):
    """(day, seconds) pieces of [start, end)."""
    day = int(start // DAY)
    while start < end:
        edge = (day + 1) * DAY
        yield day, min(end, edge) - start
        start = edge
        day += 1


def jain_daily(jobs: Sequence[SimJob]) -> float:
    got: dict[int, dict[str, float]] = {}
    waited: dict[int, set[str]] = {}
    for j in jobs:
        for s, e, g in j.runs:
            for day, secs in _split(s, e):
                d = got.setdefault(day, {})
                d[j.user] = d.get(j.user, 0.0) + secs * g
        for s, e in j.waits:
            if e > s:
                for day, _ in _split(s, e):
                    waited.setdefault(day, set()).add(j.user)
    values = []
    for day, users in waited.items():
        if len(users) < 2:
            continue
        x = [got.get(day, {}).get(u, 0.0) for u in users]
        sq = sum(v * v for v in x)
        if sq > 0:
            values.append(sum(x) ** 2 / (len(x) * sq))
    return statistics.fmean(values) if values else 1.0
