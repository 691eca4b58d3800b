"""What people ask the engine: the listing's pages, `show`'s and `why`'s explanations, `gpus`, `history`,
`stats` and the status line. Read only: nothing here changes a job (the one place that does is the engine's
door, `Engine.apply`).

Each answer is a function of the engine as `Asked` names it: the job table and the read-only views the engine
offers of its scheduling state (a queued job's policy Request, the pass's settings, a dependency's state as a
pass sees it, each user's fair-share standing). The engine keeps its verbs (`engine.explain`, `engine.page`,
...) as one-line calls here, so that api.py, webcalls.py and the tests ask it as before. Split out of
engine.py so that what a person can ask and what a change does can be read apart: an answer can cost a scan
of the queue (on demand only), a change must not.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, Callable, Protocol

from gpusched import config as configmod
from gpusched import listing, policy, sweep, usage, windows
from gpusched.accounting import Accounting
from gpusched.clock import Clock
from gpusched.inventory import Inventory
from gpusched.listing import Listing, Viewer
from gpusched.model import ACTIVE, FINAL, Gpu, Job, State
from gpusched.policy import fairshare, forecast, inputs, order
from gpusched.policy.classes import JobClass
from gpusched.shares import Shares

MAX_AHEAD = 20                     # job ids named in `show`'s list of what is ahead (the count is exact)


class Asked(Protocol):
    """What the answers read of the engine (gpusched.engine.Engine is one)."""
    cfg: configmod.Config
    clock: Clock
    jobs: dict[int, Job]
    live: dict[int, Job]
    listing: Listing
    inventory: Inventory
    accounting: Accounting
    shares: Shares
    classes: dict[str, JobClass] | None
    window_map: dict[str, windows.Window]
    tz: tzinfo | None
    expected: dict[int, float]
    draining: str
    paused: dict[str, str]

    def active_ids(self) -> set[int]: ...
    def queued_count(self) -> int: ...
    def array_members(self, array_id: int) -> dict[int, int]: ...
    def request(self, job: Job) -> policy.Request: ...
    def estimate(self, job: Job) -> float | None: ...
    def holder(self, job: Job) -> policy.Holder: ...
    def policy_settings(self, now: float) -> dict[str, Any]: ...
    def dependency_state(self, job_id: int) -> State | None: ...
    def dependency_wait(self, job: Job) -> tuple[str, str]: ...


# --- the listing ----------------------------------------------------------------------------------------

def page(e: Asked, all: bool, after: int, viewer: Viewer, table: bool, max_bytes: int, max_count: int,
         fold: bool = False, submitted: list[int] | None = None) -> tuple[str, int | None]:
    """A page of the listing: jobs with ids above `after` (all: finished ones too); see Listing.page.
    fold (table only): an array's jobs as one row."""
    jobs = e.jobs if all else e.live
    ids = sorted(i for i in jobs if i > after)
    return e.listing.page((jobs[i] for i in ids), viewer, table, not after, max_bytes, max_count,
                          folder(e, jobs) if fold else None, submitted)


def array_row(e: Asked, array_id: int) -> str:
    """An array's folded row, counted over every element kept, finished ones too: "2 running, 3 queued,
    1 succeeded"."""
    elements = e.array_members(array_id)
    return listing.fold_row(array_id, [e.jobs[elements[i]] for i in sorted(elements)])


def folder(e: Asked, jobs: dict[int, Job]) -> Callable[[Job], str | None]:
    """For a folded listing of `jobs`: an array's row at the first of its elements listed (the one with the
    lowest id), "" at the others; None for a job alone."""
    first: dict[int, int] = {}

    def fold(job: Job) -> str | None:
        if not job.array_id or not (elements := e.array_members(job.array_id)):
            return None
        if job.array_id not in first:
            first[job.array_id] = min(i for i in elements.values() if i in jobs)
        if first[job.array_id] != job.id:
            return ""
        return array_row(e, job.array_id)
    return fold


# --- the GPUs and the status line -----------------------------------------------------------------------

def _holders(e: Asked) -> dict[int, int]:
    return {g.index: job_id for job_id in sorted(e.active_ids()) for g in e.jobs[job_id].gpus}


def gpu_table(e: Asked) -> list[dict[str, Any]]:
    """inventory.table, with each GPU's utilisation (percent) and used memory (bytes) from the latest
    sample (accounting.py: the GPUs in use, held or foreign), None where none is recent; used memory falls
    back on the probe's free memory."""
    samples = e.accounting.latest()
    table = e.inventory.table(_holders(e))
    for g in table:
        s = samples.get(g["index"])
        g["utilization"] = s.utilization if s is not None else None
        used = s.memory_used if s is not None else None
        g["memory_used"] = used if used is not None else max(0, g["memory_total"] - g["memory_free"])
    return table


def status_line(e: Asked) -> str:
    running, queued = len(e.active_ids()), e.queued_count()   # from the indexes: this runs every second
    drain = f"draining (by {e.draining}), " if e.draining else ""
    return f"{drain}{running} running, {queued} queued, {e.inventory.summary(set(_holders(e)))}"


def foreign_text(g: Gpu) -> str:
    """"GPU 2 is used outside gpusched by alice (pid 4242, python)" (and how many more processes)."""
    if g.foreign:
        p = g.foreign[0]
        text = f"GPU {g.index} is used outside gpusched by {p.user} (pid {p.pid}, {p.name})"
    else:
        text = f"GPU {g.index} is used outside gpusched (pid {g.foreign_pids[0]})"
    more = len(g.foreign_pids) - 1
    return text + (f" and {more} more process(es)" if more > 0 else "")


def contested_text(e: Asked, job: Job) -> str:
    """For `show` of an active job: which of its GPUs processes gpusched did not start use too."""
    busy = {g.index: g for g in e.inventory.gpus or () if g.foreign_pids}
    hit = [g.index for g in job.gpus if g.index in busy]
    return "; ".join(foreign_text(busy[i]) for i in hit)


# --- where a queued job stands --------------------------------------------------------------------------

def _order_key(e: Asked, users: dict[str, int], now: float) -> tuple[dict[int, fairshare.Standing], Any]:
    """Each user's standing and the order the next pass would use, at `now`."""
    standing = e.shares.standing(users, now)
    settings = e.policy_settings(now)
    return standing, order.keyfunc(classes=settings["classes"], now=now, aging=settings["aging"],
                                   standing=standing)


def explain(e: Asked, job: Job) -> dict[str, Any]:
    """For `gpuschedctl show` of a queued job: its class, its user's fair-share standing and the jobs
    ahead of it in the order the next pass would use (one linear scan of the queue, on demand only)."""
    if job.state in ACTIVE:
        contested = contested_text(e, job)
        return {"contested": contested} if contested else {}
    if job.state != State.QUEUED or job.spec is None:
        return {}
    now = e.clock.time()
    queued, users = [], {}
    for j in e.live.values():
        if j.state == State.QUEUED:
            queued.append(e.request(j))
        users[j.user] = j.uid
    standing, key = _order_key(e, users, now)
    ahead = [r.id for r in order.ahead(e.request(job), queued, key)]
    out: dict[str, Any] = {}
    if e.classes:
        out["class"] = inputs.job_class(job, e.classes, e.cfg.default_class)
    if job.uid in standing:
        out["fair_share"] = f"{job.user} is at " + fairshare.describe(standing[job.uid])
    shown = ", ".join(map(str, ahead[:MAX_AHEAD])) + (f" and {len(ahead) - MAX_AHEAD} more"
                                                       if len(ahead) > MAX_AHEAD else "")
    out["ahead"] = f"{len(ahead)} job(s): {shown}" if ahead else "none: it is first in line"
    return out


def outlook(e: Asked, job: Job) -> dict[str, Any]:
    """For `gpuschedctl why` and `submit --dry-run`: where a queued job (or one not yet submitted, id 0)
    stands: its place in the order the next pass uses, what keeps it waiting, and when it can be expected
    to start: the policy's own plan when it made one (EASY backfill's reservation), else the queue played
    forward on the running jobs' time limits (policy/forecast.py). One linear scan of the queue, on demand."""
    now = e.clock.time()
    queued, users = [], {job.user: job.uid}
    for j in e.live.values():
        if j.state == State.QUEUED and j.id != job.id:
            queued.append(j)
        users[j.user] = j.uid
    standing, key = _order_key(e, users, now)
    mine = e.request(job) if job.id in e.jobs else inputs.request(
        job, classes=e.classes, default_class=e.cfg.default_class, history_estimate=e.estimate(job))
    ahead = order.ahead(mine, [e.request(j) for j in queued], key)
    out: dict[str, Any] = {"position": len(ahead) + 1, "ahead": [r.id for r in ahead[:MAX_AHEAD]],
                           "ahead_count": len(ahead)}
    if e.classes:
        out["class"] = mine.job_class
    if job.uid in standing:
        out["fair_share"] = f"{job.user} is at " + fairshare.describe(standing[job.uid])
    deps = []
    for kind, dep, label in job.after:
        state = e.dependency_state(dep) if dep else None
        deps.append({"kind": kind, "id": dep or None, "label": label, "state": str(state) if state else None})
    out["dependencies"] = deps
    gate = waits_for(e, job, now)
    if gate:
        out["expected_start"], out["expected_why"] = None, f"unknown: {gate}"
        return out
    if job.id in e.expected:
        out["expected_start"], out["expected_source"] = e.expected[job.id], "policy"
        return out
    floor = job.not_before or 0.0
    if job.spec is not None and job.spec.window:
        floor = max(floor, windows.waiting_reason(job.spec.window, e.window_map.get(job.spec.window), now,
                                                  e.tz)[1] or 0.0)
    # beyond forecast.MAX_AHEAD the forecast gives up: the jobs ahead are not looked at one by one
    playable = ahead if len(ahead) > forecast.MAX_AHEAD else [
        r for r in ahead if not waits_for(e, e.jobs[r.id], now)]
    f = forecast.expected_start(mine, playable, [e.holder(e.jobs[i]) for i in sorted(e.active_ids())],
                                e.inventory.gpus, now, floor)
    out["expected_start"], out["expected_gpus"], out["expected_source"] = f.at, list(f.gpus), "forecast"
    if f.at is None:
        out["expected_why"] = f"unknown: {f.why}"
    return out


def waits_for(e: Asked, job: Job, now: float) -> str:
    """What keeps a queued job out of every pass whatever the GPUs do (its start can't be dated), or ""."""
    if job.held:
        return f"held by {job.held} until released"
    if job.after and not job.deps_met:
        verdict, why = e.dependency_wait(job)
        if verdict != "ready":
            return f"{why} (their end can't be dated)" if verdict == "wait" else why
    if job.user in e.paused:
        return f"{job.user}'s jobs are paused by {e.paused[job.user]}"
    if e.draining:
        return f"the server is draining (by {e.draining})"
    return ""


# --- accounting and history -----------------------------------------------------------------------------

def usage_report(e: Asked, users: set[str] | None, since: float) -> list[dict[str, Any]]:
    """`gpuschedctl stats`: per user (all of them, or `users`), usage.summarize over the jobs still kept."""
    jobs = (j for j in e.jobs.values() if users is None or j.user in users)
    return usage.summarize(jobs, since, e.clock.time())


def finished(e: Asked, users: set[str] | None, name: str, state: str, since: float, limit: int,
             tag: str = "") -> tuple[list[Job], int]:
    """`gpuschedctl history`: the last `limit` finished jobs (in id order) of `users` (None: everyone's),
    with that name (an array's jobs: the name its file gave), final state and tag if given, ended at or
    after `since`; and how many more matched.
    Rejected entries only when asked for by state."""
    out = [j for j in e.jobs.values()
           if j.state in FINAL and (users is None or j.user in users)
           and (not tag or (j.spec is not None and tag in j.spec.tags))
           and (not name or j.name == name or (j.array_id and sweep.base_name(j.name, j.array_index) == name))
           and (str(j.state) == state if state else j.state != State.REJECTED)
           and (j.ended or j.submitted) >= since]
    out.sort(key=lambda j: j.id)
    more = max(0, len(out) - limit)
    return out[more:], more
