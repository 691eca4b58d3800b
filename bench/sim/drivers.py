"""The reference policies, written for the replay only (they are yardsticks, not gpusched):

- fifo: arrival order, first fit: every job that fits the free GPUs starts, in arrival order (what gpusched's
  first policy does when every job has the same priority).
- easy: FIFO with EASY backfill (Lifka 1995): the first job that doesn't fit gets a reservation computed from
  the running jobs' declared limits; a later job starts only if it fits now and either ends (by its declared
  limit) before that reservation or uses GPUs the reserved job won't need.
- oracle: shortest remaining time first with the true run times and free preemption: at every event the jobs
  with the least work left get the GPUs. Not achievable; the limit of what ordering can do.

Waiting jobs are kept in buckets by their shape (GPUs asked, declared limit), each in arrival order, so a pass
looks at a few bucket heads instead of walking the whole queue (the answers are the same as a walk's).
"""

from __future__ import annotations

import heapq
import math
from typing import Sequence

from bench.sim.cluster import Starts
from bench.sim.trace import SimJob


class _Buckets:
    """Waiting jobs by (gpus, limit), each bucket in arrival order."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[int, float], dict[int, SimJob]] = {}

    def add(self, job: SimJob) -> None:
        self.buckets.setdefault((job.gpus, job.limit), {})[job.id] = job

    def remove(self, job: SimJob) -> None:
        b = self.buckets[(job.gpus, job.limit)]
        del b[job.id]
        if not b:
            del self.buckets[(job.gpus, job.limit)]

    def first(self, ok=lambda gpus, limit: True) -> SimJob | None:
        """The earliest waiting job whose shape is ok."""
        best = None
        for (gpus, limit), b in self.buckets.items():
            if ok(gpus, limit):
                head = next(iter(b.values()))
                if best is None or (head.submit, head.id) < (best.submit, best.id):
                    best = head
        return best


class Fifo:
    name = "fifo"
    lossless = False

    def __init__(self) -> None:
        self.queue = _Buckets()

    def submit(self, job: SimJob, now: float) -> None:
        self.queue.add(job)

    def left(self, job: SimJob, now: float, done: bool) -> None:
        if not done:
            self.queue.add(job)

    def decide(self, now: float, free: Sequence[int]) -> tuple[Starts, list[SimJob]]:
        free = list(free)
        starts: Starts = []
        while free:
            job = self.queue.first(lambda gpus, limit: gpus <= len(free))
            if job is None:
                break
            self.queue.remove(job)
            starts.append((job, tuple(free[:job.gpus])))
            del free[:job.gpus]
        return starts, []


class Easy:
    name = "easy"
    lossless = False

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self.queue = _Buckets()
        self.running: dict[int, SimJob] = {}

    def submit(self, job: SimJob, now: float) -> None:
        self.queue.add(job)

    def left(self, job: SimJob, now: float, done: bool) -> None:
        self.running.pop(job.id, None)
        if not done:
            self.queue.add(job)

    def decide(self, now: float, free: Sequence[int]) -> tuple[Starts, list[SimJob]]:
        free = list(free)
        starts: Starts = []

        def start(job: SimJob) -> None:
            self.queue.remove(job)
            starts.append((job, tuple(free[:job.gpus])))
            del free[:job.gpus]
            self.running[job.id] = job

        # the head of the queue starts while it fits
        while free:
            head = self.queue.first()
            if head is None or head.gpus > len(free):
                break
            start(head)
        head = self.queue.first()
        if head is None or not free:
            return starts, []
        # the reservation for the head: when enough running jobs will have reached their declared limits
        # (jobs started in this pass have no start time yet: they end by now + their limit)
        ends = sorted([(j.started + j.limit if j.started is not None else now + j.limit, j.gpus)
                       for j in self.running.values()])
        avail, shadow = len(free), math.inf
        for t, g in ends:
            avail += g
            if avail >= head.gpus:
                shadow = t
                break
        extra = avail - head.gpus
        # later jobs, in arrival order, that fit now and can't delay the head
        while free:
            job = self.queue.first(lambda gpus, limit: gpus <= len(free)
                                   and (now + limit <= shadow or gpus <= extra))
            if job is None:
                break
            if now + job.limit > shadow:
                extra -= job.gpus
            start(job)
        return starts, []


class Oracle:
    """Shortest remaining (true) time first, with free preemption."""
    name = "oracle"
    lossless = True

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self.waiting: dict[int, list[tuple[float, float, int, SimJob]]] = {}   # by GPUs asked: heap by work left
        self.running: dict[int, SimJob] = {}

    def submit(self, job: SimJob, now: float) -> None:
        heapq.heappush(self.waiting.setdefault(job.gpus, []), (job.work - job.progress, job.submit, job.id, job))

    def left(self, job: SimJob, now: float, done: bool) -> None:
        self.running.pop(job.id, None)
        if not done:
            self.submit(job, now)

    def decide(self, now: float, free: Sequence[int]) -> tuple[Starts, list[SimJob]]:
        run = sorted(((j.work - j.progress - (now - j.started), j.submit, j.id, j) for j in self.running.values()
                      if j.started is not None), key=lambda e: e[:3])
        capacity = self.gpus
        chosen: list[SimJob] = []
        ri = 0
        while capacity:
            while ri < len(run) and run[ri][3].gpus > capacity:
                ri += 1                      # too big for what is left: it will be preempted
            best = run[ri] if ri < len(run) else None
            source: int | None = None
            for g, heap in self.waiting.items():
                if g <= capacity and heap and (best is None or heap[0][:3] < best[:3]):
                    best, source = heap[0], g
            if best is None:
                break
            if source is None:
                ri += 1
            else:
                heapq.heappop(self.waiting[source])
            chosen.append(best[3])
            capacity -= best[3].gpus
        keep = {j.id for j in chosen}
        preempts = [j for j in self.running.values() if j.id not in keep]
        free = sorted(set(free).union(*(j.gpu_ids for j in preempts)))
        starts: Starts = []
        for job in chosen:
            if job.id in self.running:
                continue
            starts.append((job, tuple(free[:job.gpus])))
            del free[:job.gpus]
        for job in preempts:
            del self.running[job.id]
        for job, _ in starts:
            self.running[job.id] = job
        return starts, preempts
