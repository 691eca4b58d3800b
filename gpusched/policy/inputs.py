"""A job record (model.Job with its JobSpec) as the policy sees it, and the config as schedule()'s keywords.

The one place that decides what the policy is told about a job: its class (the one it was accepted into, else
the one its file names, else the default), its time limit (its own, else its class's default, else an estimate
from its user's history of the same job name, marked as such) and the rest of its file. Pure: the caller
gives the time, the usage and the history.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from gpusched.model import Job, State
from gpusched.policy.classes import DEFAULT, JobClass
from gpusched.policy.data import Backfill, Holder, Request

if TYPE_CHECKING:
    from gpusched.config import Config

# how many of a user's latest runs of the same job name an estimate looks at, and how far above the longest it
# is set: a recurring job varies, and an estimate that is too short only misleads the backfill plan
ESTIMATE_RUNS = 5
ESTIMATE_MARGIN = 1.5


def job_class(job: Job, classes: Mapping[str, JobClass] | None, default_class: str = DEFAULT) -> str:
    if not classes:
        return ""
    return job.job_class or (job.spec.job_class if job.spec and job.spec.job_class else None) or default_class


def estimate(durations: Iterable[float]) -> float | None:
    """A time limit guessed from the run times of a user's latest successful runs of the same job name (oldest
    first; any iterable: the engine keeps a deque): the longest of the last few, with a margin. None without
    history."""
    recent = [d for d in list(durations)[-ESTIMATE_RUNS:] if d > 0]
    if not recent:
        return None
    return math.ceil(max(recent) * ESTIMATE_MARGIN / 60) * 60


def gpu_memory(job: Job) -> int | None:
    """The GPU memory the job reserves: its file's, or more after a GPU out-of-memory (on_gpu_oom =
    "retry-more-memory"; kept in the job's record). A job that ran out on a GPU it shared asks for one of its own
    when on_gpu_oom = "retry-exclusive" (request's share)."""
    assert job.spec is not None
    return job.retry_gpu_memory or job.spec.gpu_memory


def time_limit(job: Job, cls: JobClass | None, history_estimate: float | None = None) -> tuple[float | None, bool]:
    """(limit, estimated): the file's time_limit, else the class default (enforced like the file's: the launch
    must apply it), else the estimate, else none."""
    spec = job.spec
    if spec is not None and spec.time_limit:
        return spec.time_limit, False
    if cls is not None and cls.default_time_limit:
        return cls.default_time_limit, False
    if history_estimate:
        return history_estimate, True
    return None, False


def request(job: Job, *, classes: Mapping[str, JobClass] | None = None, default_class: str = DEFAULT,
            history_estimate: float | None = None) -> Request:
    spec = job.spec
    assert spec is not None, "a queued job has a spec"
    name = job_class(job, classes, default_class)
    limit, estimated = time_limit(job, (classes or {}).get(name), history_estimate)
    return Request(job.id, spec.priority, spec.gpus, gpu_memory(job), spec.gpu_type, spec.gpu_ids, uid=job.uid,
                   job_class=name, submitted=job.queued_since or job.submitted, time_limit=limit,
                   limit_estimated=estimated,
                   resumable=spec.resumable, share=spec.share and not job.retry_exclusive, grace=spec.grace)


def holder(job: Job, *, classes: Mapping[str, JobClass] | None = None, default_class: str = DEFAULT,
           history_estimate: float | None = None) -> Holder:
    spec = job.spec
    assert spec is not None, "an active job has a spec"
    name = job_class(job, classes, default_class)
    limit, estimated = time_limit(job, (classes or {}).get(name), history_estimate)
    return Holder(job.id, spec.priority, tuple(g.index for g in job.gpus), spec.preemptible,
                  job.state == State.STOPPING, uid=job.uid, cpu_only=spec.gpus == 0, job_class=name,
                  submitted=job.queued_since or job.submitted, started=job.started, time_limit=limit,
                  limit_estimated=estimated,
                  resumable=spec.resumable, share=spec.share and not job.retry_exclusive, gpu_memory=gpu_memory(job),
                  grace=spec.grace)


def runs(job: Job, now: float) -> list[tuple[str, float, float, float]]:
    """(user, gpus, start, end) of each attempt of the job that held GPUs, the current one up to now: what
    fairshare.Ledger.rebuild needs to recover usage after a restart."""
    n = job.spec.gpus if job.spec else 0
    if not n:
        return []
    out = [(job.user, float(n), float(h["started"]), float(h["ended"])) for h in job.history
           if h.get("started") is not None and h.get("ended") is not None]
    if job.started is not None and job.state in (State.STARTING, State.RUNNING, State.STOPPING):
        out.append((job.user, float(n), job.started, now))
    return out


def settings(cfg: Config, cpu_cap: int) -> dict[str, Any]:
    """schedule()'s keywords from the config (cpu_cap: config.cpu_job_cap(cfg), which reads the machine).
    The fair-share standing and the time are per pass: add `standing=` and `now=`."""
    classes = cfg.class_map() or None
    return {
        "max_running": cfg.max_running, "preempt_margin": cfg.preempt_margin,
        "max_running_per_user": cfg.max_running_per_user, "max_cpu_jobs_per_user": cpu_cap,
        "classes": classes, "backfill": Backfill.EASY if cfg.backfill else Backfill.OFF,
        "aging": cfg.aging, "reserve_memory": True,
    }
