"""The replay: one pool of GPUs on a virtual clock, jobs arriving, running, being preempted and ending, and a
driver (a policy) that decides at every event. No threads, no sleeps: time jumps from one event to the next.

A job runs until its work is done (its true duration; at most 7 days, when it is killed). A preempted job's
GPUs are free at once; it goes back to the queue and restarts from zero, or, if resumable, with its progress
less its grace (the work since its last checkpoint); the oracle's preemptions cost nothing. The driver sees
only what a scheduler would: arrivals, jobs leaving their GPUs, and the free GPUs when it is asked.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Protocol, Sequence

from bench.sim.trace import SimJob

Starts = list[tuple[SimJob, tuple[int, ...]]]


class Driver(Protocol):
    name: str
    lossless: bool                     # its preemptions lose nothing (the oracle)

    def submit(self, job: SimJob, now: float) -> None: ...

    def left(self, job: SimJob, now: float, done: bool) -> None:
        """The job left its GPUs: done (finished or killed at 7 days), or preempted and queued again."""

    def decide(self, now: float, free: Sequence[int]) -> tuple[Starts, list[SimJob]]:
        """Jobs to start on which free GPUs, and running jobs to preempt."""


@dataclass
class Totals:
    """What is measured as time passes, not per job."""
    gpus: int = 0
    span: float = 0.0
    backlogged: float = 0.0            # seconds with at least one job waiting
    busy_backlogged: float = 0.0       # GPU-seconds held during those
    passes: int = 0


ARRIVE, END = 0, 1


def replay(jobs: Sequence[SimJob], gpus: int, driver: Driver) -> Totals:
    """Run every job to its end under `driver`. Jobs are changed in place (their outcome fields)."""
    totals = Totals(gpus=gpus)
    events: list[tuple[float, int, int, SimJob, int]] = []
    seq = 0
    for job in jobs:
        if job.gpus > gpus:
            raise ValueError(f"job {job.id} asks for {job.gpus} GPUs; the server has {gpus}")
        events.append((job.submit, seq, ARRIVE, job, 0))
        seq += 1
    heapq.heapify(events)
    free = set(range(gpus))
    waiting = 0
    last = events[0][0] if events else 0.0
    first = last
    while events:
        now = events[0][0]
        if waiting:
            totals.backlogged += now - last
            totals.busy_backlogged += (now - last) * (gpus - len(free))
        last = now
        while events and events[0][0] == now:
            _, _, kind, job, attempt = heapq.heappop(events)
            if kind == ARRIVE:
                job.waits.append((now, now))
                waiting += 1
                driver.submit(job, now)
            elif attempt == job.attempt and job.started is not None:
                # the attempt ran to the end of the job's work
                job.runs.append((job.started, now, job.gpus))
                job.progress = job.work
                job.end = now
                job.started = None
                free.update(job.gpu_ids)
                driver.left(job, now, True)
        for _ in range(1000):
            totals.passes += 1
            starts, preempts = driver.decide(now, sorted(free))
            for job in preempts:
                _stop(job, now, driver.lossless)
                free.update(job.gpu_ids)
                job.waits.append((now, now))
                waiting += 1
                driver.left(job, now, False)
            for job, ids in starts:
                if len(ids) != job.gpus or not free.issuperset(ids):
                    raise RuntimeError(f"{driver.name}: job {job.id} started on {ids}, free {sorted(free)}")
                free.difference_update(ids)
                job.gpu_ids = tuple(ids)
                job.started = now
                if job.first_start is None:
                    job.first_start = now
                job.attempt += 1
                f, _ = job.waits[-1]
                job.waits[-1] = (f, now)
                waiting -= 1
                heapq.heappush(events, (now + job.work - job.progress, seq, END, job, job.attempt))
                seq += 1
            if not preempts:
                break
        else:
            raise RuntimeError(f"{driver.name}: still preempting after 1000 passes at t={now}")
    totals.span = last - first
    unfinished = [j.id for j in jobs if j.end is None]
    if unfinished:
        raise RuntimeError(f"{driver.name}: {len(unfinished)} jobs never ran (first: {unfinished[:5]})")
    return totals


def _stop(job: SimJob, now: float, lossless: bool) -> None:
    assert job.started is not None
    ran = now - job.started
    job.runs.append((job.started, now, job.gpus))
    done = job.progress + ran
    if lossless:
        kept = done
    elif job.resumable:
        kept = max(0.0, done - job.grace)
    else:
        kept = 0.0
    job.lost += (done - kept) * job.gpus
    job.progress = kept
    job.preemptions += 1
    job.started = None
    job.attempt += 1             # the END event of the stopped attempt no longer applies
