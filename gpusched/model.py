"""Plain data shared by the core and the adapters: job states, job records, GPUs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from gpusched.jobfile import JobSpec


class State(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"      # scope being created; the job may or may not have begun
    RUNNING = "running"
    STOPPING = "stopping"      # StopUnit sent (cancel or preemption); waiting for the scope to empty
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    DEPENDENCY_FAILED = "dependency_failed"   # a dependency can never be met: never started


ACTIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.REJECTED, State.DEPENDENCY_FAILED})


@dataclass(frozen=True, slots=True)
class ForeignProcess:
    """A compute process on a GPU that is not in an active job's scope, as the probe saw it."""
    pid: int
    user: str                                # its real user's name (or uid when it has no account)
    name: str                                # comm, at most 64 characters
    cmdline: str                             # arguments joined by spaces, at most 256 characters
    gpu_memory: int | None = None            # bytes on this GPU, when NVML reports it


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_free: int
    minor: int | None = None                 # /dev/nvidia<minor>; None for simulated GPUs
    foreign_pids: tuple[int, ...] = ()       # compute processes gpusched did not start
    simulated: bool = False
    foreign: tuple[ForeignProcess, ...] = ()  # the first of them (gpus.MAX_DESCRIBED), with who and what


@dataclass(frozen=True, slots=True)
class GpuRef:
    index: int
    uuid: str


@dataclass(slots=True)
class Job:
    """A job's record: what the status file holds. Mutable runtime state, changed only by lifecycle.py."""
    id: int
    user: str
    uid: int
    source: str                           # the spool file's name
    state: State
    submitted: float
    spec: JobSpec | None = None           # None for a rejected file
    reason: str = ""
    gid: int | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    gpus: tuple[GpuRef, ...] = ()
    unit: str = ""
    log: str = ""
    attempt: int = 0                      # how many times it was started
    preemptions: int = 0
    stop_intent: str | None = None        # "cancel" or "preempt" while STOPPING
    stop_requested: float | None = None
    start_token: str = ""                 # names this start's result file
    history: list[dict] = field(default_factory=list)   # earlier attempts' outcomes
    job_class: str = ""                   # the class it was accepted into; "": none (no classes, or an old record)
    # issue 9 (docs/jobfile.md): dependencies as resolved when accepted, (kind, job id or 0: none, as written)
    after: tuple[tuple[str, int, str], ...] = ()
    held: str = ""                        # on hold: by whom (a user name); "" when not held
    retried: int = 0                      # failed attempts that were retried
    not_before: float | None = None       # a retry waits until then (backoff)
    deps_met: bool = False                # its dependencies were met when it first started: not checked again
    queued_since: float | None = None     # requeued by a person: its age in the queue counts from then
    # issue 9, out-of-memory recovery (docs/jobfile.md, on_gpu_oom): the last attempt's outcome beyond its exit
    # ("oom": killed by the kernel for memory; "gpu_oom": its output says the GPU ran out; "" neither); what
    # later attempts ask for after a GPU out-of-memory (a GPU of their own; a larger gpu_memory, bytes)
    outcome: str = ""
    retry_exclusive: bool = False
    retry_gpu_memory: int | None = None
    # what the job's attempts used, from its cgroup (docs/jobfile.md): CPU seconds, all attempts together;
    # peak memory in bytes, the largest of any attempt. None: never read
    cpu_seconds: float | None = None
    memory_peak: int | None = None
    # issue 9, warnings and hooks (docs/jobfile.md): when this attempt's warn_signal was sent; a preemption's
    # StopUnit held back until then (the job is STOPPING meanwhile); "pending" while end hooks are to start
    warned: float | None = None
    stop_due: float | None = None
    hooks: str = ""
    # issue 9, accounting (usage.py): gpu_hours_reserved, gpu_hours_used, gpu_memory_peak, energy_joules,
    # energy_estimated, idle_since (while its GPUs are flagged idle); {} for a job that never held a GPU
    usage: dict[str, Any] = field(default_factory=dict)
    # job arrays (a [sweep] file, sweep.py): the array's id (its first element's job id; 0: not in an array)
    # and this element's index in it; the spec is the element's (values substituted)
    array_id: int = 0
    array_index: int = 0

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else self.source


# --- the record's dict form: what status files hold and what `gpuschedctl --json` prints ---------------------

def _dt(t: float | None) -> datetime | None:
    if t is None:
        return None
    whole = int(t)                 # not fromtimestamp(t): its rounding can carry into the next second
    return datetime.fromtimestamp(whole, timezone.utc) + timedelta(microseconds=int((t - whole) * 1e6))


def _epoch(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.timestamp()
    return float(v)  # type: ignore[arg-type]


def job_to_dict(job: Job) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": job.id, "name": job.name, "user": job.user, "uid": job.uid, "state": str(job.state),
        "reason": job.reason, "source": job.source, "submitted": _dt(job.submitted), "started": _dt(job.started),
        "ended": _dt(job.ended), "exit_code": job.exit_code, "signal": job.signal,
        "gpus": [{"index": g.index, "uuid": g.uuid} for g in job.gpus], "unit": job.unit, "log": job.log,
        "attempt": job.attempt, "preemptions": job.preemptions, "stop_intent": job.stop_intent,
        "stop_requested": _dt(job.stop_requested), "gid": job.gid, "start_token": job.start_token or None,
        "history": [{k: _dt(v) if k in ("started", "ended") else v for k, v in h.items()} for h in job.history],
        "class": job.job_class or None,
        "after": [list(d) for d in job.after], "held": job.held or None, "retried": job.retried or None,
        "not_before": _dt(job.not_before), "deps_met": job.deps_met or None,
        "queued_since": _dt(job.queued_since),
        "outcome": job.outcome or None, "retry_exclusive": job.retry_exclusive or None,
        "retry_gpu_memory": job.retry_gpu_memory, "cpu_seconds": job.cpu_seconds, "memory_peak": job.memory_peak,
        "warned": _dt(job.warned), "stop_due": _dt(job.stop_due), "hooks": job.hooks or None,
        "usage": usage_out(job.usage),
    }
    if job.array_id:
        d["array_id"], d["array_index"] = job.array_id, job.array_index
        if job.spec is not None and job.spec.max_parallel:
            d["max_parallel"] = job.spec.max_parallel
    if job.spec:
        d["priority"] = job.spec.priority
        d["gpus_requested"] = job.spec.gpus
        d["preemptible"] = job.spec.preemptible
        d["tags"] = list(job.spec.tags)
        if job.spec.resumable:
            d["resumable"] = True
        if job.spec.share:
            d["share"] = True
    return {k: v for k, v in d.items() if v is not None and (v != [] or k == "gpus")}


def _deps(d: Any) -> tuple[tuple[str, int, str], ...]:
    return tuple((str(k), int(i), str(label)) for k, i, label in d or ())


def job_from_dict(d: dict[str, Any], spec: JobSpec | None) -> Job:
    if spec is not None and isinstance(d.get("priority"), int) and d["priority"] != spec.priority:
        spec = dataclasses.replace(spec, priority=d["priority"])   # changed since (gpuschedctl priority)
    return Job(
        id=int(d["id"]), user=d["user"], uid=int(d["uid"]), source=d.get("source", ""), state=State(d["state"]),
        submitted=_epoch(d.get("submitted")) or 0.0, spec=spec, reason=d.get("reason", ""), gid=d.get("gid"),
        started=_epoch(d.get("started")), ended=_epoch(d.get("ended")), exit_code=d.get("exit_code"),
        signal=d.get("signal"), gpus=tuple(GpuRef(g["index"], g["uuid"]) for g in d.get("gpus", [])),
        unit=d.get("unit", ""), log=d.get("log", ""), attempt=d.get("attempt", 0),
        preemptions=d.get("preemptions", 0), stop_intent=d.get("stop_intent"),
        stop_requested=_epoch(d.get("stop_requested")), start_token=d.get("start_token", ""),
        history=[{k: _epoch(v) if k in ("started", "ended") else v for k, v in h.items()}
                 for h in d.get("history", [])],
        job_class=d.get("class", ""), after=_deps(d.get("after")), held=d.get("held", ""),
        retried=d.get("retried", 0), not_before=_epoch(d.get("not_before")), deps_met=bool(d.get("deps_met")),
        queued_since=_epoch(d.get("queued_since")),
        outcome=d.get("outcome", ""), retry_exclusive=bool(d.get("retry_exclusive", False)),
        retry_gpu_memory=d.get("retry_gpu_memory"), cpu_seconds=d.get("cpu_seconds"),
        memory_peak=d.get("memory_peak"),
        warned=_epoch(d.get("warned")), stop_due=_epoch(d.get("stop_due")), hooks=d.get("hooks", ""),
        usage=_usage_in(d.get("usage")),
        array_id=int(d.get("array_id", 0)), array_index=int(d.get("array_index", 0)),
    )


def usage_out(u: dict[str, Any]) -> dict[str, Any] | None:
    """A record's usage as written (idle_since as a time); None: nothing to write (TOML has no null)."""
    if not u:
        return None
    return {k: _dt(v) if k == "idle_since" else v for k, v in u.items() if v is not None}


def _usage_in(u: Any) -> dict[str, Any]:
    if not isinstance(u, dict):
        return {}                                 # an old record: nothing accounted
    return {k: _epoch(v) if k == "idle_since" else v for k, v in u.items()}
