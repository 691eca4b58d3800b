"""Dependencies between jobs, and retries: pure rules over job records (docs/jobfile.md says them to users).

A job file names its dependencies by job id or by job name (`after`, `after_ok`, `after_notok`). They are
resolved once, when the job is accepted, among its owner's jobs (root's files may name anyone's): a name is
the owner's latest job of that name, an id must be one of the owner's jobs. What isn't found is kept as id 0
and fails the job at its first pass, saying so. Resolved dependencies always point at older jobs (smaller
ids), so they can't form a cycle, and a pass that goes through the queue in id order cascades a failure in
one go.
"""

from __future__ import annotations

from typing import Callable, Iterable

from gpusched.jobfile import DEPENDENCY_KEYS, JobSpec
from gpusched.model import FINAL, Job, State

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
    retry_on (a death by signal never is one). Exponential: base, 2 base, 4 base, ... at most cap."""
    spec = job.spec
    if spec is None or job.retried >= spec.retries:
        return None
    if result is not None:
        if "error" in result or result.get("not_started"):
            return None
        code, sig = result.get("exit_code"), result.get("signal")
        if code == 0 and not sig:
            return None
        if spec.retry_on and (sig or code not in spec.retry_on):
            return None
    elif spec.retry_on:
        return None                                      # nothing recorded: no exit code to match
    return float(min(cap, base * (2 ** job.retried)))
