"""When a job's warning signal is due, and how long a preemption waits for it. Pure.

A job with `warn_signal` gets it `warn_before` ahead of its time limit (the limit itself stays systemd's
RuntimeMaxUSec), and when the policy preempts it: the signal at once, the StopUnit `warn_before` later, at
most the config's `max_warn_before`. The engine's tick asks `next_due` of each active job that has one;
the record keeps `warned` and `stop_due`, so a restart neither sends a warning twice nor forgets a stop.
"""

from __future__ import annotations

from gpusched.jobfile import DEFAULT_WARN_BEFORE, JobSpec
from gpusched.model import Job, State


def warn_before(spec: JobSpec) -> float:
    return spec.warn_before if spec.warn_before is not None else DEFAULT_WARN_BEFORE


def warning_due(job: Job) -> float | None:
    """When a running job's time-limit warning is due; None: none is (no warn_signal or no time limit, or it
    was sent in this attempt)."""
    spec = job.spec
    if (spec is None or spec.warn_signal is None or not spec.time_limit or job.warned is not None
            or job.state != State.RUNNING or job.started is None):
        return None
    return job.started + max(0.0, spec.time_limit - warn_before(spec))


def preempt_delay(job: Job, cap: float) -> float:
    """How long a preemption's StopUnit waits after the warning: warn_before, at most `cap` (the config's
    max_warn_before); 0 (stop at once) for a job without warn_signal, one not running yet, or one already
    warned in this attempt (its time limit is near: it is checkpointing already)."""
    spec = job.spec
    if spec is None or spec.warn_signal is None or job.state != State.RUNNING or job.warned is not None:
        return 0.0
    return max(0.0, min(warn_before(spec), cap))


def next_due(job: Job) -> float | None:
    """The next time the engine must act on this job for a warning: a held-back stop or the warning itself."""
    if job.state == State.STOPPING:
        return job.stop_due
    return warning_due(job)
