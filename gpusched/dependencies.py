"""Dependencies between jobs, and retries: pure rules over job records (docs/jobfile.md says them to users).

A job file names its dependencies by job id or by job name (`after`, `after_ok`, `after_notok`). They are
resolved once, when the job is accepted, among its owner's jobs (root's files may name anyone's): a name is
the owner's latest job of that name, an id must be one of the owner's jobs. What isn't found is kept as id 0
and fails the job at its first pass, saying so. Resolved dependencies always point at older jobs (smaller
ids), so they can't form a cycle, and a pass that goes through the queue in id order cascades a failure in
one go.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from gpusched.jobfile import DEPENDENCY_KEYS, JobSpec
from gpusched.model import FINAL, Gpu, Job, State

Dep = tuple[str, int, str]            # (kind, job id or 0 when not found, the user's text)

NOT_OK = frozenset({State.FAILED, State.CANCELLED, State.DEPENDENCY_FAILED})
WORDS = {"after": "to end", "after_ok": "to succeed", "after_notok": "to fail"}


def resolve(spec: JobSpec, uid: int, *, job: Callable[[int], Job | None],
            latest: Callable[[int, str], int | None], anyone: bool = False) -> tuple[Dep, ...]:
    """The dependencies of a new job of `uid`: `job(id)` finds a job, `latest(uid, name)` the id of the owner's
    latest job of that name. `anyone`: the file is root's and may depend on any user's job."""
    out: list[Dep] = []
    for kind in DEPENDENCY_KEYS:
        for item in getattr(spec, kind):
            if isinstance(item, int):
                j = job(item)
                found = item if j is not None and (anyone or j.uid == uid) and j.state != State.REJECTED else 0
                out.append((kind, found, str(item)))
            else:
                out.append((kind, latest(uid, item) or 0, item))
    return tuple(out)


def check(deps: Iterable[Dep], state_of: Callable[[int], State | None]) -> tuple[str, str]:
    """("ready", "") when every dependency is met; ("wait", why) while one may still be; ("never", why) when
    one can't be any more (the job then ends as dependency_failed, with why as its reason)."""
    waiting = []
    for kind, job_id, label in deps:
        what = f"job {job_id}" if job_id else (f"job {label}" if label.isdigit() else f"a job named {label!r}")
        st = state_of(job_id) if job_id else None
        if st is None or st == State.REJECTED:
            return "never", f"dependency {kind} = {label!r}: no such job of yours" + (
                " (any more)" if job_id else "")
        met = {"after": st in FINAL, "after_ok": st == State.SUCCEEDED, "after_notok": st in NOT_OK}[kind]
        if met:
            continue
        if st in FINAL:                                  # it ended, the other way
            return "never", f"dependency {kind}: {what} {st}, so it can't {WORDS[kind][3:]} any more"
        waiting.append(f"{what} {WORDS[kind]} ({kind})")
    if waiting:
        more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
        return "wait", "waiting for " + ", ".join(waiting[:3]) + more
    return "ready", ""


def array_state(states: Iterable[State]) -> State:
    """The state a dependency on a whole job array sees (its id is its first job's): queued while any of its
    jobs has not ended (so `after` waits for them all); once all have, succeeded if all did, else failed if one
    did, else cancelled if one was, else dependency_failed."""
    seen = set(states)
    if seen - FINAL:
        return State.QUEUED
    for st in (State.FAILED, State.CANCELLED, State.DEPENDENCY_FAILED, State.REJECTED):
        if st in seen:
            return st
    return State.SUCCEEDED


def retry_delay(job: Job, result: dict | None, base: float, cap: float) -> float | None:
    """Seconds until a failed attempt is tried again, or None: no retries left, the attempt didn't fail,
    it failed before the job began (a setup error, which a retry won't fix), or its exit code is not one of
    retry_on (a death by signal never is one). Exponential: base, 2 base, 4 base, ... at most cap.
    A GPU out-of-memory (result outcome "gpu_oom") follows on_gpu_oom when the file sets it: "fail" is never
    retried; "retry-exclusive" and "retry-more-memory" are, whatever retry_on says (gpu_oom_retry says how)."""
    spec = job.spec
    if spec is None or job.retried >= spec.retries:
        return None
    if result is not None:
        if "error" in result or result.get("not_started"):
            return None
        code, sig = result.get("exit_code"), result.get("signal")
        if code == 0 and not sig:
            return None
        gpu_oom = result.get("outcome") == "gpu_oom" and spec.on_gpu_oom is not None
        if gpu_oom and spec.on_gpu_oom == "fail":
            return None
        if spec.retry_on and not gpu_oom and (sig or code not in spec.retry_on):
            return None
    elif spec.retry_on:
        return None                                      # nothing recorded: no exit code to match
    return backoff(job.retried, base, cap)


def backoff(n: int, base: float, cap: float) -> float:
    """The n-th wait (from 0) of an exponential backoff: base, 2 base, 4 base, ... at most cap."""
    return float(min(cap, base * (2 ** n)))


def gpu_oom_retry(job: Job, result: dict | None, gpus: Sequence[Gpu] | None) -> dict:
    """What the retry of an attempt that ran out of GPU memory changes, by the job's on_gpu_oom: {} (nothing),
    {"retry_exclusive": True} (later attempts share no GPU), or {"retry_gpu_memory": bytes}: twice the last
    reservation (the file's gpu_memory, or an earlier retry's), or with none, twice the memory of the GPU it
    ran on; at most what the largest GPUs that can hold the job have (so that it can still start here).
    `gpus`: the server's GPUs as last probed (None: unknown, then the last reservation is kept)."""
    spec = job.spec
    if spec is None or not result or result.get("outcome") != "gpu_oom":
        return {}
    if spec.on_gpu_oom == "retry-exclusive":
        return {"retry_exclusive": True}
    if spec.on_gpu_oom != "retry-more-memory":
        return {}
    totals = {g.index: g.memory_total for g in gpus or ()}
    last = job.retry_gpu_memory or spec.gpu_memory
    if last is None:
        ran_on = [totals[g.index] for g in job.gpus if g.index in totals]
        last = min(ran_on) if ran_on else None
    want = 2 * last if last else None
    # the n-th largest total among the GPUs the job may use (type, ids): the most every one of its n can have
    usable = sorted((g.memory_total for g in gpus or () if _may_use(spec, g)), reverse=True)
    most = usable[spec.gpus - 1] if spec.gpus and len(usable) >= spec.gpus else None
    if want is None:
        want = most
    elif most is not None:
        want = min(want, most)
    else:
        want = last                                      # the GPUs are unknown now: kept, never unbounded
    return {"retry_gpu_memory": int(want)} if want else {}


def _may_use(spec: JobSpec, gpu: Gpu) -> bool:
    if spec.gpu_ids and gpu.index not in spec.gpu_ids and gpu.uuid not in spec.gpu_ids:
        return False
    return not spec.gpu_type or spec.gpu_type.lower() in gpu.name.lower()


def requeue_delay(job: Job, base: float, cap: float) -> float | None:
    """Seconds a job requeued by a person waits before it may start again: none the first time, then the
    retries' backoff (base, 2 base, ... at most cap) for each requeue before it, so a job that requeues itself
    in a loop can't spin the server."""
    before = sum(1 for h in job.history if h.get("requeued"))
    return None if before == 0 else backoff(before - 1, base, cap)
