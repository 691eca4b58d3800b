"""Accounting and idle reservations (issue 9): the GPUs active jobs hold, sampled into a meter, folded into
their records now and then; an idle job flagged, and stopped where the config says so.

usage.py is the pure arithmetic (the meter, tallies, folding, reserved seconds); this is when to sample, which
GPUs, what the latest samples are (for `gpus` and `top`) and what an idle or busy job's record says. It changes
no job by itself: every change (accounted, idle, busy, the idle stop) is asked of the engine's door through
`apply` and `stop`, so that the record, the journal and the wake-up stay in one place. Split out of engine.py:
the meter has a rhythm of its own (at most once a second, a fold every FOLD_EVERY), apart from the job table.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable, Iterable, Mapping

from gpusched import config as configmod
from gpusched import lifecycle, usage
from gpusched.clock import Clock
from gpusched.gpuhistory import GpuHistory
from gpusched.inventory import Inventory
from gpusched.log import Log
from gpusched.model import ACTIVE, Job, State
from gpusched.units import format_duration


class Accounting:
    """One engine's meter. `jobs`, `live`: its table (read only); `holding()`: the ids of the active jobs that
    hold GPUs; `apply`: its door; `stop(job, intent, reason)`: its stop (through the door too)."""

    def __init__(self, cfg: configmod.Config, clock: Clock, log: Log, inventory: Inventory,
                 jobs: Mapping[int, Job], live: Mapping[int, Job], holding: Callable[[], Iterable[int]],
                 apply: Callable[..., bool], stop: Callable[[Job, str, str], None]):
        self.cfg, self.clock, self.log, self.inventory = cfg, clock, log, inventory
        self.jobs, self.live, self.holding, self.apply, self.stop = jobs, live, holding, apply, stop
        self.meter = usage.Meter(cfg.idle_threshold)
        self.gpu_history = GpuHistory()                  # the web dashboard's sparklines (gpuhistory.py)
        self._last_sample = float("-inf")
        self._samples: tuple[float, dict[int, usage.GpuSample]] = (float("-inf"), {})   # (monotonic, latest)
        self._last_fold = clock.monotonic()
        self._sample_failed = False

    def sample(self) -> None:
        """At most once a second (never more often than gpu_poll_interval): the GPUs active jobs hold are
        sampled into the meter; idle jobs are flagged (and stopped, idle_action = "stop"); every FOLD_EVERY
        the running jobs' records get their accounting so far. Contained: a failure is said once."""
        mono = self.clock.monotonic()
        if mono - self._last_sample < max(usage.SAMPLE_EVERY, self.cfg.gpu_poll_interval):
            return
        self._last_sample = mono
        try:
            self._sample_now(mono)
            self._sample_failed = False
        except Exception:  # noqa: BLE001 - accounting must never stop the tick
            if not self._sample_failed:
                self._sample_failed = True
                self.log(f"internal error while sampling GPU usage: {traceback.format_exc()}", 3, multiline=True)

    def _sample_now(self, mono: float) -> None:
        holders: dict[int, list[tuple[int, float]]] = {}
        for job_id in self.holding():                    # the active jobs that hold GPUs (not the whole queue)
            job = self.jobs[job_id]
            if job.state in ACTIVE and job.gpus:
                spec = job.spec
                weight = float(spec.gpu_memory or 0) if spec is not None and spec.share else 0.0
                for g in job.gpus:
                    holders.setdefault(g.index, []).append((job.id, weight))
                self.meter.tally(job.id, job.usage.get("idle_since"))
        for job_id in [i for i in self.meter.tallies if (j := self.live.get(i)) is None or j.state not in ACTIVE]:
            self.meter.forget(job_id)                    # ended through a path that doesn't account (never began)
        # GPUs that processes gpusched did not start use are sampled too, for `gpuschedctl top` (the meter
        # looks only at the held ones); an idle server makes no NVML call
        foreign = {g.index for g in self.inventory.gpus or () if g.foreign_pids}
        samples = self.inventory.sample(set(holders) | foreign) if holders or foreign else {}
        self._samples = (mono, samples)
        if not holders:
            self.meter.reset()
            return
        now = self.clock.time()
        self.meter.observe(now, samples, holders)
        self.gpu_history.add(now, samples)
        fold = mono - self._last_fold >= usage.FOLD_EVERY
        if fold:
            self._last_fold = mono
        for job_id in list(self.meter.tallies):
            job = self.live[job_id]
            self._judge_idle(job, now)
            if fold and job.state in ACTIVE:
                self.apply(job, lifecycle.accounted, self.folded(job, self.meter.take(job_id), now))

    def latest(self) -> dict[int, usage.GpuSample]:
        """The latest samples by GPU index (the GPUs in use, held or foreign), or none when they are not recent."""
        at, samples = self._samples
        fresh = self.clock.monotonic() - at <= 3 * max(usage.SAMPLE_EVERY, self.cfg.gpu_poll_interval)
        return samples if fresh else {}

    def ended(self, job: Job) -> usage.Tally:
        """A job's attempt is over: its tally, which the meter forgets."""
        return self.meter.forget(job.id)

    def folded(self, job: Job, tally: usage.Tally, at: float) -> dict[str, Any]:
        """The job's accounting with `tally` folded in, its reserved time up to `at`."""
        reserved = usage.reserved_seconds(job.history, len(job.gpus), job.started, at)
        return usage.fold(job.usage, tally, reserved)

    def _judge_idle(self, job: Job, now: float) -> None:
        """Flag a running job whose GPUs have all been idle for idle_after (one journal line), stop it when
        idle_action = "stop" (cancelled, never requeued), unflag it when it uses them again."""
        if job.state != State.RUNNING:
            return
        since = self.meter.tally(job.id).idle_since
        flagged = job.usage.get("idle_since") is not None
        after = self.cfg.idle_after
        if after and since is not None and now - since >= after:
            gpus = ",".join(str(g.index) for g in job.gpus)
            threshold = f"{self.cfg.idle_threshold:g}%"
            if not flagged:
                stop = self.cfg.idle_action == "stop"
                self.apply(job, lifecycle.idle, since,
                           f"idle: its GPUs ({gpus}) at or under {threshold} utilisation since "
                           f"{time.strftime('%H:%M:%S', time.localtime(since))}",
                           say=f"job {job.id} idle: its GPUs ({gpus}) at or under {threshold} utilisation for "
                               f"{format_duration(now - since)} (idle_after {format_duration(after)})"
                               + ("; stopping it (idle_action = \"stop\")" if stop else ""),
                           priority=5, GPUSCHED_EVENT="idle")
            if self.cfg.idle_action == "stop":
                self.stop(job, "cancel", f"stopped: its GPUs were idle for {format_duration(now - since)} "
                                         f"(idle_after {format_duration(after)}, idle_action = \"stop\")")
        elif flagged and (since is None or not after):
            self.apply(job, lifecycle.busy, say=f"job {job.id} is using its GPUs again: no longer idle",
                       GPUSCHED_EVENT="busy")

    def usage_now(self, job: Job) -> dict[str, Any]:
        """An active job's accounting up to now (its record has it as of the last fold, up to a minute old)."""
        if job.state not in ACTIVE or not job.gpus:
            return dict(job.usage)
        t = self.meter.tallies.get(job.id) or usage.Tally()
        return usage.fold(job.usage, t, usage.reserved_seconds(job.history, len(job.gpus), job.started,
                                                               self.clock.time()))
