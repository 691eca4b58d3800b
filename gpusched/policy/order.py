"""Order: which queued job is considered first.

Without a clock (the first policy): class rank, then priority (lower first), then id (arrival).

With a clock (`now`), within a class rank:
1. Jobs that have waited at least `aging` go first, oldest first: nobody waits behind younger jobs for ever,
   whatever their time limit or their user's usage. (EASY backfill then guarantees the first of them a start.)
2. The others, shortest time limit first, in bands of a factor of two: a limit is a user's rough guess (real
   jobs use a fifth to four fifths of it), so finer differences are noise, and a band leaves room for fairness.
   No limit at all ranks last.
3. Within a band, the user furthest below their fair share first (fairshare.standings).
4. Then the user's own priority, which therefore orders only their own jobs: it can't move a job ahead of
   another user's.
5. Then arrival.
Shortest-first is what cuts the mean wait (Smith's rule); aging bounds what it costs the long jobs.
"""

from __future__ import annotations

import functools
import heapq
import math
from typing import Callable, Iterator, Mapping, Sequence

from gpusched.policy import classes as classmod
from gpusched.policy.classes import JobClass
from gpusched.policy.data import Request
from gpusched.policy.fairshare import EVEN, Standing

Key = tuple
UNLIMITED_AGES_AS = 7 * 86400.0
KeyFunc = Callable[[Request], Key]


@functools.lru_cache(maxsize=4096)
def band(limit: float | None) -> float:
    """Time-limit band: limits within a factor of two of each other share one (from a minute up)."""
    if limit is None:
        return math.inf
    return float(max(0, math.ceil(math.log2(max(limit, 60.0) / 60.0))))


def keyfunc(*, classes: Mapping[str, JobClass] | None = None, now: float | None = None, aging: float = 0.0,
            standing: Mapping[int, Standing] | None = None) -> Callable[[Request], Key]:
    """The sort key for this pass (smaller first)."""
    ranks: dict[str, int] = {}

    def rank(r: Request) -> int:
        if not classes:
            return 0
        if r.job_class not in ranks:
            ranks[r.job_class] = classmod.rank(classes, r.job_class)
        return ranks[r.job_class]

    if now is None:
        return lambda r: (rank(r), r.priority, r.id)
    standing = standing or {}

    def key(r: Request) -> Key:
        if aging > 0:
            due = deadline(r, aging)
            if due <= now:
                return (rank(r), 0, due, r.id)
        return (rank(r), 1, band(r.time_limit), standing.get(r.uid, EVEN), r.uid, r.priority, r.submitted, r.id)
    return key


def deadline(r: Request, aging: float) -> float:
    """When a job has waited `aging` times its own time limit (a job without one ages as if it had asked for
    UNLIMITED_AGES_AS)."""
    return r.submitted + aging * (r.time_limit if r.time_limit is not None else UNLIMITED_AGES_AS)


def ordered(queued: Sequence[Request], key: Callable[[Request], Key]) -> Iterator[Request]:
    """The queue in order, lazily: heapify is linear, and each job taken costs log n, so a pass that stops
    after a few jobs never sorts the whole queue."""
    heap = [(key(r), i) for i, r in enumerate(queued)]
    heapq.heapify(heap)
    while heap:
        yield queued[heapq.heappop(heap)[1]]
