"""What `gpuschedctl top` gets of the queue: the running jobs and the first waiting ones, small and cheap.

top asks every second or two, and there may be 100,000 queued jobs and several people running it, so the
answer is one screen's worth, never the queue: the active jobs (at most MAX_RUNNING) and the first `limit`
queued ones by id (at most MAX_WAITING), each as a few public fields with its name and reason cut
(`entry`), plus how many there are of each. They are picked from the engine's indexes of active and queued
ids, not from its jobs; `Feed` keeps the pick for SCAN_EVERY, so the daemon picks at most once a second
however many tops are open (the entries are built from the jobs as they are now: a state shown is never
older than the answer, a job that just ended is shown ended for that second).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gpusched.model import Job

SCAN_EVERY = 1.0          # seconds a pick of the ids (Scan) is reused
MAX_RUNNING = 1000        # active jobs in one answer at most (the count is exact)
MAX_WAITING = 200         # queued jobs in one answer at most: more than any screen has lines
NAME = 128                # characters of a job's name sent
REASON = 300              # characters of a waiting job's reason sent (`show` has all of it)


@dataclass(frozen=True)
class Scan:
    active: tuple[int, ...]        # ids of the active jobs, in id order (at most MAX_RUNNING)
    queued: tuple[int, ...]        # ids of the first MAX_WAITING queued jobs, in id order
    counts: dict[str, int]         # running (starting, running, stopping), queued


def scan(active: Iterable[int], queued: Iterable[int], n_queued: int) -> Scan:
    """From the engine's indexes (the active ids; the queued ids, in no order) rather than its jobs: picking
    the first of 100,000 queued ids costs a few milliseconds, looking at 100,000 jobs ten times that."""
    active = sorted(active)
    return Scan(tuple(active[:MAX_RUNNING]), tuple(heapq.nsmallest(MAX_WAITING, queued)),
                {"running": len(active), "queued": n_queued})


def first(ids: Iterable[int], limit: int) -> list[int]:
    """The `limit` lowest ids (a user's own queued jobs, for top's "mine only")."""
    return heapq.nsmallest(max(0, min(limit, MAX_WAITING)), ids)


def entry(job: Job) -> dict[str, Any]:
    """What top shows of a job: public fields only (everyone sees the queue, access.py), bounded."""
    d: dict[str, Any] = {
        "id": job.id, "user": job.user, "uid": job.uid, "name": job.name[:NAME], "state": str(job.state),
        "gpus": [g.index for g in job.gpus], "gpus_requested": job.spec.gpus if job.spec else 0,
        "priority": job.spec.priority if job.spec else None, "submitted": job.submitted,
        "started": job.started, "held": job.held or None, "reason": job.reason[:REASON] or None,
    }
    if job.array_id:
        d["array_id"], d["array_index"] = job.array_id, job.array_index
    return {k: v for k, v in d.items() if v is not None}


class Feed:
    """The latest scan, reused for SCAN_EVERY seconds (of the clock given, monotonic)."""

    def __init__(self) -> None:
        self._at = float("-inf")
        self._scan: Scan | None = None

    def scan(self, make: Callable[[], Scan], now: float) -> Scan:
        if self._scan is None or not 0 <= now - self._at < SCAN_EVERY:
            self._scan, self._at = make(), now
        return self._scan
