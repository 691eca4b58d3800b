"""The first policy (gpusched/policy.py before it became a package), frozen: tests/test_policy_compat.py checks
that schedule() called with only these arguments still decides exactly as it did.

Pure: plain data in, a Decision out. Order is priority (lower number = more urgent), then job id (arrival).
Each job in that order takes the GPUs it fits on (first fit); a job that can't fit may preempt less urgent,
preemptible running jobs when the difference in priority is at least preempt_margin. Per-user caps (jobs
running at once, CPU-only jobs running at once) hold a user's further jobs back, whatever their priority, so
one user's load can't crowd out the others (root's jobs are exempt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from gpusched.model import Gpu


@dataclass(frozen=True)
class Request:
    id: int
    priority: int
    gpus: int
    gpu_memory: int | None = None
    gpu_type: str | None = None
    gpu_ids: tuple[int | str, ...] = ()
    uid: int = -1


@dataclass(frozen=True)
class Holder:
    """A job that holds GPUs now (starting, running or stopping)."""
    id: int
    priority: int
    gpus: tuple[int, ...]
    preemptible: bool = True
    stopping: bool = False
    uid: int = -1
    cpu_only: bool = False


@dataclass
class Decision:
    starts: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    preempts: list[tuple[int, int]] = field(default_factory=list)       # (victim, for job)
    waiting: dict[int, str] = field(default_factory=dict)               # job id -> reason


def fits(req: Request, gpu: Gpu, *, assume_empty: bool = False) -> bool:
    if req.gpu_ids and gpu.index not in req.gpu_ids and gpu.uuid not in req.gpu_ids:
        return False
    if req.gpu_type and req.gpu_type.lower() not in gpu.name.lower():
        return False
    if req.gpu_memory is not None:
        free = gpu.memory_total if assume_empty else gpu.memory_free
        if free < req.gpu_memory:
            return False
    return True


def never_fits(req: Request, gpus: Sequence[Gpu]) -> str | None:
    """Why this request can't run on this server even when it's idle, or None."""
    matching = [g for g in gpus if fits(req, g, assume_empty=True)]
    if len(matching) >= req.gpus:
        return None
    what = []
    if req.gpu_type:
        what.append(f"type {req.gpu_type!r}")
    if req.gpu_memory is not None:
        what.append(f"{req.gpu_memory >> 20} MiB free")
    if req.gpu_ids:
        what.append("ids " + ",".join(map(str, req.gpu_ids)))
    extra = f" matching {' and '.join(what)}" if what else ""
    return f"can never run here: asks for {req.gpus} GPU(s){extra}, the server has {len(matching)}"


def schedule(queued: Sequence[Request], holders: Sequence[Holder], gpus: Sequence[Gpu] | None,
             *, max_running: int = 0, preempt_margin: int = 10, max_running_per_user: int = 0,
             max_cpu_jobs_per_user: int = 0) -> Decision:
    d = Decision()
    running_of: dict[int, int] = {}          # uid -> jobs holding resources (stopping ones too: they still do)
    cpu_of: dict[int, int] = {}
    for h in holders:
        running_of[h.uid] = running_of.get(h.uid, 0) + 1
        if h.cpu_only:
            cpu_of[h.uid] = cpu_of.get(h.uid, 0) + 1
    held = {i for h in holders for i in h.gpus}
    by_index = {g.index: g for g in gpus or ()}
    free = [g for g in gpus or () if g.index not in held and not g.foreign_pids]
    # free once their stop completes; a held GPU the probe no longer lists can't be counted on
    coming = {i for h in holders if h.stopping for i in h.gpus if i in by_index}
    victims = sorted((h for h in holders if h.preemptible and not h.stopping),
                     key=lambda h: (-h.priority, -h.id))
    active = len(holders)
    margin = max(1, preempt_margin)

    for req in sorted(queued, key=lambda r: (r.priority, r.id)):
        if max_running and active >= max_running:
            d.waiting[req.id] = f"max_running ({max_running}) reached"
            continue
        capped = req.uid != 0                # root is trusted (and exempt, as from max_queued_per_user)
        if capped and max_running_per_user and running_of.get(req.uid, 0) >= max_running_per_user:
            d.waiting[req.id] = (f"waiting for the user's own jobs: {running_of[req.uid]} running, "
                                 f"max_running_per_user is {max_running_per_user}")
            continue
        if req.gpus == 0:
            if capped and max_cpu_jobs_per_user and cpu_of.get(req.uid, 0) >= max_cpu_jobs_per_user:
                d.waiting[req.id] = (f"waiting for the user's own CPU-only jobs: {cpu_of[req.uid]} running, "
                                     f"max_cpu_jobs_per_user is {max_cpu_jobs_per_user}")
                continue
            d.starts.append((req.id, ()))
            cpu_of[req.uid] = cpu_of.get(req.uid, 0) + 1
            running_of[req.uid] = running_of.get(req.uid, 0) + 1
            active += 1
            continue
        if gpus is None:
            d.waiting[req.id] = "GPU state unknown (the GPU probe is failing); GPU jobs wait"
            continue
        if not gpus:
            d.waiting[req.id] = "no GPUs"
            continue
        if reason := never_fits(req, gpus):
            d.waiting[req.id] = reason
            continue
        usable = [g for g in free if fits(req, g)]
        if len(usable) >= req.gpus:
            take = usable[:req.gpus]
            d.starts.append((req.id, tuple(g.index for g in take)))
            free = [g for g in free if g not in take]
            running_of[req.uid] = running_of.get(req.uid, 0) + 1
            active += 1
            continue
        # Not enough now. GPUs already being freed for it (earlier preemptions) count before preempting more.
        soon = [i for i in sorted(coming) if fits(req, by_index[i], assume_empty=True)]
        if len(usable) + len(soon) >= req.gpus:
            need = req.gpus - len(usable)
            coming -= set(soon[:need])
            free = [g for g in free if g not in usable]   # keep them for this job
            d.waiting[req.id] = "waiting for GPUs being freed by stopping jobs"
            continue
        chosen: list[Holder] = []
        gain = 0
        for h in victims:
            if h.priority - req.priority < margin:
                continue
            n = sum(1 for i in h.gpus if i in by_index and fits(req, by_index[i], assume_empty=True))
            if n == 0:
                continue
            chosen.append(h)
            gain += n
            if len(usable) + len(soon) + gain >= req.gpus:
                break
        if chosen and len(usable) + len(soon) + gain >= req.gpus:
            for h in chosen:
                d.preempts.append((h.id, req.id))
                victims.remove(h)
            coming -= set(soon)
            free = [g for g in free if g not in usable]
            d.waiting[req.id] = "preempting job(s) " + ", ".join(str(h.id) for h in chosen)
            continue
        nfree = len(usable)
        foreign = [g.index for g in gpus if g.foreign_pids and g.index not in held and fits(req, g, assume_empty=True)]
        reason = f"waiting for {req.gpus} GPU(s), {nfree} free"
        if foreign:
            reason += f"; GPU(s) {', '.join(map(str, foreign))} busy with processes gpusched did not start"
        d.waiting[req.id] = reason
    return d
