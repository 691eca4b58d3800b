"""Order: which queued job is considered first.

Without a clock (the first policy): class rank, then priority (lower first), then id (arrival).

With a clock (`now`), within a class rank:
1. Overdue jobs first: a job that has waited `aging` times its own time limit is overdue, and overdue jobs go
   earliest deadline first (the rules below break ties). Nobody waits behind younger, shorter jobs for ever,
   whatever their user's usage; EASY backfill then guarantees the first of them a start.
2. The others by response ratio, shortest first: the band of their time limit minus the band of their wait so
   far (bands are factors of two, from a minute). Short jobs go first (Smith's rule: the mean wait falls), and
   every job climbs as it waits, a long job as surely as a short one, only more slowly (highest response
   ratio next). A limit is a rough guess (real jobs use a fifth to four fifths of it), so finer differences
   are noise, and the bands leave room for the next rules. No limit ranks last.
3. Among jobs of the same ratio band, wider jobs first: a job that needs several GPUs at once is the hardest to
   place, and once it has its reservation narrow jobs fill in around it; the other way round the GPUs it
   waits for sit idle while it waits.
4. Then the user furthest below their fair share (fairshare.standings).
5. Then the user's own priority, which therefore orders only their own jobs: it never moves a job ahead of
   another user's.
6. Then arrival.
"""

from __future__ import annotations

import heapq
import math
from typing import Callable, Iterator, Mapping, Sequence

from gpusched.policy import classes as classmod
from gpusched.policy.classes import JobClass
from gpusched.policy.data import Request
from gpusched.policy.fairshare import EVEN, Standing

Key = tuple
KeyFunc = Callable[[Request], Key]
# a job without a time limit ages as if it had asked for a week, the longest limit the site model knows
UNLIMITED_AGES_AS = 7 * 86400.0


def band(seconds: float | None) -> float:
    """Durations within a factor of two of each other share a band: 0 up to a minute, then 1, 2, ...
    (ceil(log2(minutes)), computed without floating-point logarithms)."""
    if seconds is None:
        return math.inf
    if seconds <= 60.0:
        return 0
    return (math.ceil(seconds / 60.0) - 1).bit_length()


def deadline(r: Request, aging: float) -> float:
    """When the job will have waited `aging` times its own time limit."""
    return r.submitted + aging * (r.time_limit if r.time_limit is not None else UNLIMITED_AGES_AS)


def keyfunc(*, classes: Mapping[str, JobClass] | None = None, now: float | None = None, aging: float = 0.0,
            standing: Mapping[int, Standing] | None = None) -> KeyFunc:
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
        tier, value = urgency(r.submitted, r.time_limit, now, aging)
        return (rank(r), tier, value, -r.gpus, standing.get(r.uid, EVEN), r.uid, r.priority, r.submitted, r.id)
    return key


def urgency(submitted: float, time_limit: float | None, now: float, aging: float) -> tuple[int, float]:
    """The time-aware part of the order, for a queued job or a running one: (0, its deadline) once overdue,
    else (1, its response-ratio band). Smaller first."""
    if aging > 0:
        due = submitted + aging * (time_limit if time_limit is not None else UNLIMITED_AGES_AS)
        if due <= now:
            return (0, due)
    return (1, band(time_limit) - band(now - submitted))


def ordered(queued: Sequence[Request], key: KeyFunc) -> Iterator[Request]:
    """The queue in order, lazily: heapify is linear, and each job taken costs log n, so a pass that stops
    after a few jobs never sorts the whole queue."""
    heap = [(key(r), i) for i, r in enumerate(queued)]
    heapq.heapify(heap)
    while heap:
        yield queued[heapq.heappop(heap)[1]]


def ahead(job: Request, queued: Sequence[Request], key: KeyFunc) -> list[Request]:
    """The jobs ordered before `job` in this pass, first first (for `gpuschedctl show`: one linear scan)."""
    mine = key(job)
    keyed = [(k, r) for r in queued if r.id != job.id and (k := key(r)) < mine]   # each key computed once
    keyed.sort(key=lambda kr: kr[0])
    return [r for _, r in keyed]
