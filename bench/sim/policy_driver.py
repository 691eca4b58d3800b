"""gpusched's own policy in the replay: the real gpusched.policy.schedule, given exactly what the daemon gives
it (each job through policy.inputs, as a model.Job with its JobSpec; the fair-share ledger charged with the
GPUs running jobs hold; the config's settings), on the virtual clock.

This driver stands in for the engine: it keeps the job table, the ledger and the pass. bench/simulate's
`gpusched` runs the real engine instead (engine_driver.py); this one is `--policies gpusched-policy-only`, the
policy the new way without the engine, for comparison: once the engine builds its inputs with policy.inputs
and passes the time, the two must decide alike (tests/test_simulate.py).
"""

from __future__ import annotations

from typing import Sequence

from bench.sim.cluster import Starts
from bench.sim.trace import SimJob
from gpusched import policy
from gpusched.config import Config
from gpusched.jobfile import JobSpec
from gpusched.model import Gpu, GpuRef, Job, State
from gpusched.policy import fairshare, inputs


def inventory(n: int) -> list[Gpu]:
    return [Gpu(index=i, uuid=f"GPU-sim-{i}", name="Simulated GPU", memory_total=80 << 30, memory_free=80 << 30,
                simulated=True) for i in range(n)]


class PolicyDriver:
    name = "gpusched"
    lossless = False

    def __init__(self, gpus: int, cfg: Config | None = None):
        cfg = cfg or Config()
        self.gpus = inventory(gpus)
        # what the daemon passes (the trace's jobs are one user each per row, never CPU-only: no CPU cap)
        self.settings = inputs.settings(cfg, cpu_cap=0)
        self.shares = dict(cfg.shares)
        self.default_share = cfg.default_share
        self.default_class = cfg.default_class
        self.ledger = fairshare.Ledger(cfg.fair_share_half_life)
        self.sim: dict[int, SimJob] = {}
        self.jobs: dict[int, Job] = {}
        self.queued: dict[int, policy.Request] = {}
        self.holders: dict[int, policy.Holder] = {}
        self.charged = 0.0
        self.passes = 0

    def _job(self, s: SimJob) -> Job:
        spec = JobSpec(command="true", name=f"trace-{s.id}", gpus=s.gpus, time_limit=s.limit, grace=s.grace,
                       resumable=s.resumable)
        return Job(id=s.id, user=s.user, uid=s.uid, source=f"{s.id}.toml", state=State.QUEUED, submitted=s.submit,
                   spec=spec)

    def _queue(self, job: Job) -> None:
        self.queued[job.id] = inputs.request(job, classes=self.settings.get("classes"),
                                             default_class=self.default_class)

    def submit(self, s: SimJob, now: float) -> None:
        self.sim[s.id] = s
        job = self.jobs[s.id] = self._job(s)
        self._queue(job)

    def left(self, s: SimJob, now: float, done: bool) -> None:
        self._charge(now)
        job = self.jobs[s.id]
        self.holders.pop(job.id, None)
        job.gpus, job.started = (), None
        if done:
            job.state = State.SUCCEEDED
            del self.jobs[s.id], self.sim[s.id]
        else:
            job.state = State.QUEUED
            job.preemptions += 1
            self._queue(job)

    def _charge(self, now: float) -> None:
        # GPUs held since the last charge (jobs that left since were charged when they left)
        if now > self.charged:
            for h in self.holders.values():
                self.ledger.charge(self.jobs[h.id].user, len(h.gpus), self.charged, now)
            self.ledger.advance(now)
            self.charged = now

    def decide(self, now: float, free: Sequence[int]) -> tuple[Starts, list[SimJob]]:
        self._charge(now)
        if not self.queued:
            return [], []
        self.passes += 1
        users = {self.jobs[i].user: self.jobs[i].uid for i in (*self.queued, *self.holders)}
        usage = {u: self.ledger.value(u, now) for u in users}
        standing = fairshare.standings(usage, users, shares=self.shares, default_share=self.default_share)
        d = policy.schedule(list(self.queued.values()), list(self.holders.values()), self.gpus, now=now,
                            standing={users[u]: s for u, s in standing.items()}, **self.settings)
        starts: Starts = []
        for job_id, ids in d.starts:
            job = self.jobs[job_id]
            job.state, job.started, job.attempt = State.RUNNING, now, job.attempt + 1
            job.gpus = tuple(GpuRef(i, self.gpus[i].uuid) for i in ids)
            del self.queued[job_id]
            self.holders[job_id] = inputs.holder(job, classes=self.settings.get("classes"),
                                                 default_class=self.default_class)
            starts.append((self.sim[job_id], ids))
        # the replay stops a preempted job at once: it leaves its GPUs before the next pass
        preempts = [self.sim[victim] for victim, _ in d.preempts]
        return starts, preempts
