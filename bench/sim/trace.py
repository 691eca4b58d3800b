"""A trace CSV (job_id,user,submit_s,duration_s,gpus,...) as the simulator's jobs, with the model's inventions:
the time limit each job declares, which jobs checkpoint (resumable), and the load the replay runs at.

The model (issue 8): a job declares its true duration times a factor drawn uniformly from 1.2 to 5, rounded up
to 1h, 4h, 12h, 24h, 72h or 7d; a job longer than 7 days is killed at 7 days, so its work is 7 days. Submit
times are scaled by base_load/load. Every draw comes from the seed, so a run is reproducible.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field

HOUR = 3600.0
LIMITS = (1 * HOUR, 4 * HOUR, 12 * HOUR, 24 * HOUR, 72 * HOUR, 168 * HOUR)
MAX_RUN = LIMITS[-1]
GRACE = 180.0            # jobfile.DEFAULT_GRACE: what a resumable job loses when it is stopped


@dataclass(slots=True, eq=False)
class SimJob:
    id: int
    user: str
    uid: int
    submit: float
    duration: float          # true run time, as in the trace
    gpus: int
    limit: float             # declared time limit
    resumable: bool = False
    grace: float = GRACE
    # what the replay does to it (cluster.py)
    work: float = 0.0        # seconds of running it needs: min(duration, 7 days)
    progress: float = 0.0    # seconds of work kept so far
    started: float | None = None   # this attempt's start
    first_start: float | None = None
    end: float | None = None
    gpu_ids: tuple[int, ...] = ()
    attempt: int = 0
    preemptions: int = 0
    lost: float = 0.0        # GPU-seconds thrown away by preemptions
    runs: list[tuple[float, float, int]] = field(default_factory=list)      # (start, end, gpus) of each attempt
    waits: list[tuple[float, float]] = field(default_factory=list)          # (from, to) spent queued


def declared_limit(duration: float, factor: float) -> float:
    want = duration * factor
    for limit in LIMITS:
        if want <= limit:
            return limit
    return MAX_RUN


def load(path: str, *, seed: int, load: float, base_load: float = 0.9, resumable: float = 0.0,
         max_gpus: int | None = None) -> list[SimJob]:
    """The trace's jobs, re-timed to `load`, each with a declared limit and (a `resumable` fraction of them)
    the resumable flag. Jobs asking for more than max_gpus are left out (they could never run)."""
    if load <= 0 or base_load <= 0:
        raise ValueError("loads must be positive")
    limits = random.Random(f"limits-{seed}")
    chooser = random.Random(f"resumable-{seed}")
    uids: dict[str, int] = {}
    jobs: list[SimJob] = []
    scale = base_load / load
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            gpus = int(row["gpus"])
            duration = float(row["duration_s"])
            factor = limits.uniform(1.2, 5.0)          # drawn for every row, so the seed means the same limits
            picked = chooser.random() < resumable
            if max_gpus is not None and gpus > max_gpus:
                continue
            user = row["user"]
            uid = uids.setdefault(user, 1000 + len(uids))
            job = SimJob(id=len(jobs) + 1, user=user, uid=uid, submit=float(row["submit_s"]) * scale,
                         duration=duration, gpus=gpus, limit=declared_limit(duration, factor), resumable=picked)
            job.work = min(duration, MAX_RUN)
            jobs.append(job)
    jobs.sort(key=lambda j: (j.submit, j.id))
    return jobs
