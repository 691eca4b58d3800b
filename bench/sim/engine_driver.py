"""gpusched in the replay, the whole of it: the real engine (gpusched.engine.Engine, which calls the real
gpusched.policy) on gpusched.testing's fake clock, fake runner and in-memory recorder (World, with
keep_records=False: nothing is written down). Nothing of the engine or the policy is copied here.

Each trace job is accepted at its submit time as the JobSpec a user would write (its GPUs, its declared time
limit, its grace, resumable, a name). When the engine starts it, the fake runner asks `duration` how long this
attempt runs: the job's work less the progress it kept, worked out from the engine's own record of its earlier
attempts (job.history): a preempted non-resumable job restarts from zero, a resumable one keeps its progress
less its grace. The fake runner kills a job at its time limit, as systemd's RuntimeMaxUSec would (the model's
jobs longer than 7 days are killed at 7 days).

The replay (cluster.py) keeps the clock and the free GPUs as for the other drivers, so every metric is measured
the same way; this driver moves the engine's clock to the replay's, reports the replay's job ends through the
fake runner (their monitors exiting), runs the scheduling passes the engine asks for, and hands back the
starts and preemptions the engine made. It checks that the engine and the replay agree on every end (the
same job, at the same time, in the same way: finished, or preempted and requeued) and raises if not.

The engine runs a pass only when something woke it (an arrival, an end), as in the daemon; the replay asks
every driver at every event, stale ones included (the end a preempted attempt would have had), and the
policy-only driver (policy_driver.py) passes every time it is asked. So where the policy's answer changes with
time alone (a resumable job that has now run long enough to be preempted for a shorter one, a job that has
become overdue), the engine acts at the next arrival or end and the policy-only driver possibly sooner: with
preemption their numbers may differ a little; without, they are the same.
"""

from __future__ import annotations

from typing import Any, Sequence

from bench.sim.cluster import Starts
from bench.sim.trace import SimJob
from gpusched.config import Config
from gpusched.jobfile import JobSpec
from gpusched.model import FINAL, Job, State
from gpusched.testing import FakeClock, World

TOLERANCE = 1e-3           # seconds: the engine's times are epoch-based, the replay's trace-based (rounding)


def _quiet(message: str, priority: int = 6, job: Any = None, multiline: bool = False, **fields: Any) -> None:
    """The engine's journal, dropped (a 16,000-job replay writes hundreds of thousands of lines)."""


class EngineDriver:
    name = "gpusched"
    lossless = False

    def __init__(self, gpus: int, cfg: Config | None = None, *, log: Any = _quiet):
        self.clock = FakeClock()
        self.world = World(gpus=gpus, cfg=cfg or Config(), duration=self._duration, clock=self.clock, log=log,
                           keep_records=False)
        self.engine = self.world.engine
        self.runner = self.world.runner
        self.sim: dict[int, SimJob] = {}          # engine job id -> the trace's job
        self.ids: dict[int, int] = {}             # trace job id -> engine job id
        self.unit_of: dict[str, int] = {}         # scope -> engine job id, for the runner's stops
        self._started = 0                         # how much of runner.started was handed back
        self._stopped = 0                         # and of runner.stopped

    # --- the engine's side ------------------------------------------------------------------------------

    def _wall(self, now: float) -> float:
        return self.clock.start + now

    def _at(self, now: float) -> None:
        self.clock.t = now                        # the replay never goes back; FakeClock.set would round

    def progress(self, job: Job) -> float:
        """Seconds of work the job kept from its earlier attempts, from the engine's record of them."""
        s = self.sim[job.id]
        kept = 0.0
        for h in job.history:
            if h.get("preempted"):
                kept = max(0.0, kept + (h["ended"] - h["started"]) - s.grace) if s.resumable else 0.0
        return kept

    def _duration(self, job: Job) -> float:
        return self.sim[job.id].work - self.progress(job)

    def spec(self, s: SimJob) -> JobSpec:
        """The job file a user would have written for the trace's job."""
        return JobSpec(command="true", name=f"trace-{s.id}", gpus=s.gpus, time_limit=s.limit, grace=s.grace,
                       resumable=s.resumable)

    # --- the replay's side (cluster.Driver) -------------------------------------------------------------

    def submit(self, s: SimJob, now: float) -> None:
        self._at(now)
        job = self.world.submit(self.spec(s), uid=s.uid, user=s.user)
        self.sim[job.id] = s
        self.ids[s.id] = job.id

    def left(self, s: SimJob, now: float, done: bool) -> None:
        """The replay says the job left its GPUs: its monitor reports the end to the engine now."""
        self._at(now)
        job = self.engine.jobs[self.ids[s.id]]
        run = self.runner.units.get(job.unit) if job.state not in FINAL | {State.QUEUED} else None
        if run is not None:
            if run.ends is None or abs(run.ends - self._wall(now)) > TOLERANCE:
                raise RuntimeError(f"engine and replay disagree on job {s.id} (engine job {job.id}): the replay "
                                   f"ends it at {now:.3f}, the runner at {run.ends and run.ends - self.clock.start}")
            run.ends = self._wall(now)            # the same instant exactly, so fire() reports it now
            run.result["ended"] = run.ends
            self.runner.fire()
        # else reported already, with another job that ended at the same instant: it must have ended now
        elif not job.history or abs(job.history[-1]["ended"] - self._wall(now)) > TOLERANCE:
            raise RuntimeError(f"engine and replay disagree on job {s.id} (engine job {job.id}): the replay "
                               f"ends it at {now:.3f}, the engine has it {job.state} since "
                               f"{job.history[-1]['ended'] - self.clock.start if job.history else None}")
        want = FINAL if done else {State.QUEUED}
        if job.state not in want:
            raise RuntimeError(f"engine and replay disagree on job {s.id} (engine job {job.id}): the replay "
                               f"{'ended' if done else 'requeued'} it, the engine has it {job.state}")
        if done:
            del self.ids[s.id]
            self.sim.pop(job.id)

    def decide(self, now: float, free: Sequence[int]) -> tuple[Starts, list[SimJob]]:
        self._at(now)
        self.world.settle()
        starts: Starts = []
        new, self._started = self.runner.started[self._started:], len(self.runner.started)
        for job_id, ids in new:
            self.unit_of[self.engine.jobs[job_id].unit] = job_id
            starts.append((self.sim[job_id], ids))
        # a stopped job's scope ends at once (the fake runner); the replay reports it back through left()
        stopped, self._stopped = self.runner.stopped[self._stopped:], len(self.runner.stopped)
        preempts = [self.sim[self.unit_of[unit]] for unit in stopped]
        return starts, preempts

    @property
    def passes(self) -> int:
        return int(self.engine.stats["passes"])
