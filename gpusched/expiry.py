"""Expiry: finished jobs older than keep_finished (rejected ones: keep_rejected) leave the table and the disk.

A sweep is started every interval (at most EXPIRE_EVERY, sooner with a short keep) and removed in batches of
EXPIRE_BATCH per main-loop turn (`soon`), so that 100,000 old jobs never stall the loop. It never touches an
active or queued job, one a queued job still depends on, or an array's first element while the array lives
(the engine's `kept` says which). It changes no job's state: it asks the recorder to remove records and the
engine to forget them (`forget`). Split out of engine.py: when to sweep and what goes is one question, apart
from the door.
"""

from __future__ import annotations

from typing import Callable, Mapping

from gpusched import config as configmod
from gpusched.clock import Clock
from gpusched.log import Log
from gpusched.model import FINAL, Job, State
from gpusched.recorder import Recorder, Soon

EXPIRE_EVERY = 3600.0      # seconds between sweeps of finished jobs older than keep_finished
EXPIRE_BATCH = 500         # finished jobs removed per main-loop turn


def keep(cfg: configmod.Config) -> tuple[float, float]:
    """(keep_finished, keep_rejected) in seconds, 0 meaning for ever; keep_rejected 0 follows keep_finished."""
    finished = cfg.keep_finished
    rejected = cfg.keep_rejected or finished
    return finished, (min(rejected, finished) if finished else rejected)


def interval(cfg: configmod.Config) -> float:
    """Seconds between sweeps: EXPIRE_EVERY, or a quarter of the shortest keep (at least a second)."""
    shortest = min((k for k in keep(cfg) if k), default=0.0)
    return min(EXPIRE_EVERY, max(1.0, shortest / 4)) if shortest else EXPIRE_EVERY


class Expiry:
    """The sweeps of one engine's table: `jobs` (read only), `kept` (a finished job that must stay for now),
    `forget` (the engine drops a removed job from its table)."""

    def __init__(self, cfg: configmod.Config, clock: Clock, recorder: Recorder, log: Log, soon: Soon,
                 jobs: Mapping[int, Job], kept: Callable[[Job], bool], forget: Callable[[int], None]):
        self.cfg, self.clock, self.recorder, self.log, self.soon = cfg, clock, recorder, log, soon
        self.jobs, self.kept, self.forget = jobs, kept, forget
        self._expiring: list[int] = []
        # the first sweep a minute after start (or sooner with a short keep_finished), then every interval
        every = interval(cfg)
        self._last = clock.monotonic() - every + min(60.0, every)

    def due(self) -> bool:
        """Whether a sweep is due now (the tick asks); if so, the next is an interval away."""
        now = self.clock.monotonic()
        if now - self._last < interval(self.cfg):
            return False
        self._last = now
        return True

    def start(self, expire_rejected: Callable[[float], int] | None) -> None:
        """Start a sweep of finished jobs older than keep_finished (rejected ones: keep_rejected): records,
        status files, logs, results and, through `expire_rejected` (the spool's), rejected entries' kept
        copies go. Never an active or queued job. Done in batches (`soon`)."""
        keep_finished, keep_rejected = keep(self.cfg)
        if not (keep_finished or keep_rejected) or self._expiring:
            return
        now = self.clock.time()
        cutoff = {State.REJECTED: now - keep_rejected if keep_rejected else 0.0}
        default = now - keep_finished if keep_finished else 0.0
        self._expiring = [j.id for j in self.jobs.values()
                          if j.state in FINAL and (j.ended or j.submitted) < cutoff.get(j.state, default)
                          and not self.kept(j)]
        if keep_rejected and expire_rejected is not None:
            try:
                freed = expire_rejected(cutoff[State.REJECTED])
                if freed:
                    self.log(f"removed rejected spool entries older than keep_rejected ({freed} bytes)")
            except OSError as e:
                self.log(f"can't expire rejected spool entries: {e}", 3)
        if self._expiring:
            self.log(f"removing {len(self._expiring)} finished job(s) older than keep_finished / keep_rejected",
                     GPUSCHED_EVENT="expire")
            self.soon(self.batch)

    def batch(self) -> bool:
        """Remove up to EXPIRE_BATCH of the sweep's jobs. True while some are left."""
        batch = []
        while self._expiring and len(batch) < EXPIRE_BATCH:
            job = self.jobs.get(self._expiring.pop())
            if job is not None and job.state in FINAL and job.id not in self.recorder.dirty:
                batch.append(job)
        try:
            self.recorder.remove(j.id for j in batch)           # lists results/ once per batch
        except (OSError, ValueError) as e:
            self.log(f"can't remove {len(batch)} finished job(s): {e}; kept for the next sweep", 3)
            return bool(self._expiring)
        for job in batch:
            self.forget(job.id)
        return bool(self._expiring)
