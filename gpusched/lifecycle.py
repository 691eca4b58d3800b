"""The job state machine: every change of a Job record goes through one of these functions. Pure.

    queued -> starting -> running -> succeeded | failed
                 |           \\-> stopping -> cancelled | queued (preempted: same id, back in the queue)
                 \\-> queued (the scope never started: daemon died mid-start)
    queued -> cancelled | dependency_failed;  (spool entry) -> rejected
    running/stopping -> queued also when requeued by its owner, or when a failure is retried (retries = N)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from gpusched.jobfile import JobSpec
from gpusched.model import FINAL, Gpu, GpuRef, Job, State
from gpusched.units import format_duration, format_size

ALLOWED = {
    State.QUEUED: {State.STARTING, State.CANCELLED, State.DEPENDENCY_FAILED},
    State.STARTING: {State.RUNNING, State.QUEUED, State.STOPPING, State.FAILED, State.SUCCEEDED},
    # running -> queued: re-adopted after a crash as running, its monitor then reported it never began
    State.RUNNING: {State.STOPPING, State.SUCCEEDED, State.FAILED, State.QUEUED},
    State.STOPPING: {State.CANCELLED, State.QUEUED, State.SUCCEEDED, State.FAILED},
}


MAX_REASON = 4096          # bytes of a reason: it goes into every listing and status file
MAX_OOM_LINE = 160         # characters of the GPU out-of-memory line quoted in a reason


class TransitionError(Exception):
    pass


def bounded(reason: str, limit: int = MAX_REASON) -> str:
    """A reason cut to at most `limit` bytes of UTF-8, saying that it was cut."""
    data = reason.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return reason
    return data[:limit - 40].decode("utf-8", "ignore") + f" … ({len(data) - limit + 40} more bytes)"


def _move(job: Job, to: State) -> None:
    if to not in ALLOWED.get(job.state, set()):
        raise TransitionError(f"job {job.id}: {job.state} -> {to} is not allowed")
    job.state = to


def accepted(job_id: int, spec: JobSpec, user: str, uid: int, gid: int, source: str, now: float) -> Job:
    return Job(id=job_id, user=user, uid=uid, gid=gid, source=source, state=State.QUEUED, submitted=now,
               spec=spec, reason="queued")


def rejected(job_id: int, user: str, uid: int, source: str, reason: str, now: float) -> Job:
    return Job(id=job_id, user=user, uid=uid, source=source, state=State.REJECTED, submitted=now, ended=now,
               reason=bounded(reason))


def waiting(job: Job, reason: str) -> bool:
    """Set a queued job's reason. True if it changed (so the status file needs writing)."""
    reason = bounded(reason)
    if job.reason == reason:
        return False
    job.reason = reason
    return True


def starting(job: Job, gpus: Sequence[Gpu], unit: str, log: str, now: float, token: str = "") -> None:
    _move(job, State.STARTING)
    job.not_before = None
    job.deps_met = bool(job.after)      # a requeue or retry later doesn't wait for them again
    job.start_token = token
    job.attempt += 1
    job.gpus = tuple(GpuRef(g.index, g.uuid) for g in gpus)
    job.unit, job.log, job.started, job.reason = unit, log, now, ""
    job.exit_code = job.signal = None
    job.stop_intent = job.stop_requested = None
    job.outcome = ""
    job.warned = job.stop_due = None


def running(job: Job) -> None:
    _move(job, State.RUNNING)
    job.reason = ""


def never_started(job: Job, why: str) -> None:
    """The scope never came up (or the daemon died before the job began): back to the queue."""
    _move(job, State.QUEUED)
    job.attempt -= 1
    job.gpus, job.started, job.unit, job.reason = (), None, "", why
    job.stop_intent = job.stop_requested = job.stop_due = None


def stopped_before_start(job: Job, now: float) -> None:
    """A job being stopped (cancel, preemption, requeue) whose monitor never let it begin: a cancel ends it
    (nothing ran); the others put it back in the queue, the attempt not counted."""
    if job.state != State.STOPPING:
        raise TransitionError(f"job {job.id}: {job.state} is not stopping")
    if job.stop_intent == "cancel":
        _move(job, State.CANCELLED)
        job.attempt -= 1
        job.ended, job.gpus, job.unit, job.held = now, (), "", ""
        job.reason = f"{job.reason}; it never began"
        job.stop_due = None
        return
    never_started(job, f"{job.reason}; it never began; requeued")


def start_failed(job: Job, why: str, now: float) -> None:
    _move(job, State.FAILED)
    job.ended, job.reason, job.gpus = now, why, ()


def stopping(job: Job, intent: str, reason: str, now: float, stop_due: float | None = None, held: str = "") -> None:
    """StopUnit is sent now, or (stop_due) once the job's warning has had its time: it is STOPPING meanwhile.
    held: a requeue that puts it on hold once it is back in the queue (by whom)."""
    _move(job, State.STOPPING)
    job.stop_intent, job.stop_requested, job.reason = intent, now, reason
    job.stop_due = stop_due
    job.held = held if intent == "requeue" else ""


def warned(job: Job, now: float) -> None:
    """The job's warn_signal was sent (once per attempt: a restart neither sends it again nor forgets it)."""
    if job.state not in (State.RUNNING, State.STOPPING):
        raise TransitionError(f"job {job.id} is {job.state}: only a running job is warned")
    job.warned = now


def stop_sent(job: Job) -> None:
    """The StopUnit a warning held back is sent now."""
    if job.state != State.STOPPING:
        raise TransitionError(f"job {job.id}: {job.state} is not stopping")
    job.stop_due = None


def hooks_due(job: Job) -> None:
    """A job at its final end has hooks to start (on_finish, notify, the config's): kept in the record until
    they are started, so a restart in between still starts them."""
    if job.state not in FINAL:
        raise TransitionError(f"job {job.id} is {job.state}: hooks run only at a final end")
    job.hooks = "pending"


def hooks_started(job: Job) -> None:
    job.hooks = ""


def cancel_stopping(job: Job, reason: str) -> None:
    """A job already being stopped (preempted, or cancelled with its grace) is now cancelled: it won't be
    requeued when it ends."""
    if job.state != State.STOPPING:
        raise TransitionError(f"job {job.id}: {job.state} is not stopping")
    job.stop_intent, job.reason, job.held = "cancel", reason, ""
    job.stop_due = None                   # a person's cancel doesn't wait for a preemption's warning


def cancel_queued(job: Job, reason: str, now: float) -> None:
    _move(job, State.CANCELLED)
    job.ended, job.reason = now, reason


def hold(job: Job, by: str) -> None:
    """A queued job is put on hold: it doesn't start until released."""
    if job.state != State.QUEUED:
        raise TransitionError(f"job {job.id} is {job.state}: only a queued job can be held")
    job.held, job.reason = by, f"held by {by}"


def release(job: Job) -> None:
    if job.state != State.QUEUED or not job.held:
        raise TransitionError(f"job {job.id} is not held")
    job.held, job.reason = "", "released; queued"


def reprioritize(job: Job, priority: int) -> None:
    """A queued job's priority changed (`gpuschedctl priority`): the spec's, which the record keeps."""
    if job.state != State.QUEUED or job.spec is None:
        raise TransitionError(f"job {job.id} is {job.state}: only a queued job's priority can be changed")
    job.spec = dataclasses.replace(job.spec, priority=priority)


def dependency_failed(job: Job, reason: str, now: float) -> None:
    _move(job, State.DEPENDENCY_FAILED)
    job.ended, job.reason, job.held = now, bounded(reason), ""


def describe(result: dict[str, Any] | None, killed_after_grace: bool) -> str:
    if result is None:
        return "killed by SIGKILL after its grace period" if killed_after_grace else \
            "its scope ended without a result (the monitor was killed)"
    if "error" in result:
        return f"could not start: {result['error']}"
    if "signal" in result:
        text = f"killed by {result['signal']}"
    else:
        text = f"exited with code {result.get('exit_code')}"
    if result.get("outcome") == "oom":
        return "killed by the kernel: out of memory" + ("" if result.get("signal") == "SIGKILL" else f" ({text})")
    if result.get("outcome") == "gpu_oom":
        line = str(result.get("gpu_oom") or "")
        said = f": {line[:MAX_OOM_LINE]!r}" if line else ""
        return f"ran out of GPU memory ({text}){said}"
    return text


def _limit_note(job: Job, result: dict[str, Any] | None) -> str:
    """What the kernel's OOM kill was measured against, for the reason."""
    spec = job.spec
    if not result or result.get("outcome") != "oom" or spec is None or not spec.limits.memory:
        return ""
    return f" (limits.memory {format_size(spec.limits.memory)})"


def _count_usage(job: Job, result: dict[str, Any] | None, attempt: dict[str, Any]) -> None:
    """The attempt's CPU time and peak memory, into its history entry and the job's totals."""
    if not result:
        return
    cpu, peak = result.get("cpu_seconds"), result.get("memory_peak")
    if isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and cpu >= 0:
        attempt["cpu_seconds"] = float(cpu)
        job.cpu_seconds = round((job.cpu_seconds or 0.0) + float(cpu), 6)
    if isinstance(peak, int) and not isinstance(peak, bool) and peak >= 0:
        attempt["memory_peak"] = peak
        job.memory_peak = max(job.memory_peak or 0, peak)


def ended(job: Job, result: dict[str, Any] | None, now: float, retry_at: float | None = None,
          oom_retry: dict[str, Any] | None = None) -> None:
    """The job's attempt is over: result is what its monitor recorded, None if the monitor was killed too.
    retry_at: if this attempt failed, it is retried (back to the queue, not before then). oom_retry: what the
    retry of a GPU out-of-memory changes (dependencies.gpu_oom_retry: retry_exclusive, retry_gpu_memory)."""
    stopped = job.state == State.STOPPING
    if result is not None and stopped:
        # an attempt gpusched was stopping (cancel, preemption, requeue) ended because of that, whatever it printed
        result = {k: v for k, v in result.items() if k not in ("outcome", "gpu_oom")}
    job.stop_due = None
    if result is None and stopped:
        result = {"signal": "SIGKILL"}
        text = describe(None, True)
    else:
        text = describe(result, False) + _limit_note(job, result)
    outcome = str(result.get("outcome") or "") if result else ""
    exit_code = result.get("exit_code") if result else None
    sig = result.get("signal") if result else None
    end = float(result.get("ended", now)) if result else now
    attempt = {"attempt": job.attempt, "started": job.started or now, "ended": end, "outcome": text}
    if job.gpus:
        attempt["gpus"] = [g.index for g in job.gpus]
    if outcome in ("oom", "gpu_oom"):
        attempt["kind"] = outcome
    _count_usage(job, result, attempt)

    if stopped and job.stop_intent in ("preempt", "requeue"):
        _move(job, State.QUEUED)
        if job.stop_intent == "preempt":
            job.history.append(attempt | {"preempted": True, "reason": job.reason})   # why, kept past the requeue
            job.preemptions += 1
            job.reason = f"preempted ({job.reason}); {text}; requeued"
        else:
            job.history.append(attempt | {"requeued": True})
            job.reason = f"{job.reason}; {text}; requeued"
            job.queued_since = end                # a requeue goes to the back of the line (its age restarts)
            job.not_before = retry_at             # requeued again and again: a backoff (dependencies.requeue_delay)
        job.gpus, job.unit, job.started = (), "", None
        job.stop_intent = job.stop_requested = None
        return
    job.exit_code, job.signal, job.ended = exit_code, sig, end
    job.held = ""
    job.outcome = outcome if outcome in ("oom", "gpu_oom") else ""
    if stopped and job.stop_intent == "cancel":
        _move(job, State.CANCELLED)
        job.reason = f"{job.reason}; {text}"
    elif exit_code == 0 and not sig:
        _move(job, State.SUCCEEDED)
        job.reason = ""
    else:
        spec = job.spec
        if spec and spec.time_limit and job.started and end - job.started >= spec.time_limit - 1:
            text += f" (time limit {format_duration(spec.time_limit)} reached)"
        if retry_at is not None and not stopped:
            _move(job, State.QUEUED)
            job.history.append(attempt | {"outcome": text, "retried": True})
            job.retried += 1
            job.not_before = retry_at
            job.exit_code = job.signal = job.ended = None
            job.gpus, job.unit, job.started = (), "", None
            total = spec.retries if spec else job.retried
            how = _apply_oom_retry(job, oom_retry or {})
            job.reason = (f"attempt {job.attempt} {text}; retry {job.retried} of {total}{how} "
                          f"after {_clock(retry_at)}")
            return
        _move(job, State.FAILED)
        job.reason = text
    job.history.append(attempt)


def _apply_oom_retry(job: Job, change: dict[str, Any]) -> str:
    """Later attempts of a job that ran out of GPU memory: a GPU of its own, or a larger reservation. Returns
    how the reason says it."""
    if change.get("retry_exclusive"):
        job.retry_exclusive = True
        return " on a GPU of its own (on_gpu_oom)"
    memory = change.get("retry_gpu_memory")
    if memory:
        was = job.retry_gpu_memory or (job.spec.gpu_memory if job.spec else None)
        job.retry_gpu_memory = int(memory)
        before = f"was {format_size(was)}" if was else "was none: a whole GPU"
        grown = "" if was is None or memory > was else "; already the most a GPU here has"
        return f" with gpu_memory {format_size(int(memory))} ({before}{grown}; on_gpu_oom)"
    return ""


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


# --- issue 9: accounting and idle reservations (usage.py computes; these only record) ------------------------

def accounted(job: Job, usage: dict[str, Any]) -> None:
    """An active job's accounting brought up to date (usage.fold): no move."""
    if job.state not in (State.STARTING, State.RUNNING, State.STOPPING):
        raise TransitionError(f"job {job.id} is {job.state}: only an active job is accounted as it runs")
    job.usage = dict(usage)


def idle(job: Job, since: float, reason: str) -> None:
    """A running job's GPUs have all been idle since `since` for idle_after: flagged, in its reason."""
    if job.state != State.RUNNING:
        raise TransitionError(f"job {job.id} is {job.state}: only a running job is flagged idle")
    job.usage = dict(job.usage) | {"idle_since": since}
    job.reason = bounded(reason)


def busy(job: Job) -> None:
    """A job flagged idle uses its GPUs again (or idle detection was turned off): the flag goes."""
    job.usage = {k: v for k, v in job.usage.items() if k != "idle_since"}
    if job.state == State.RUNNING:
        job.reason = ""


def ended_accounted(job: Job, usage: dict[str, Any], result: dict[str, Any] | None, now: float,
                    retry_at: float | None = None, oom_retry: dict[str, Any] | None = None) -> None:
    """`ended`, with the attempt's accounting (usage.fold, up to the attempt's end) recorded with it."""
    ended(job, result, now, retry_at, oom_retry)
    job.usage = {k: v for k, v in usage.items() if k != "idle_since"}
