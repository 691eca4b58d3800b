"""Placement: which GPUs a job may take, and what is left for the next one in the same pass.

Whole GPUs by count, type and ids, as always. `gpu_memory` is checked one of two ways:
- against NVML's momentary free memory (the first policy; `reserve_memory=False`);
- as a reservation against the GPU's total (`reserve_memory=True`): another job's allocation pattern changes
  the free figure second to second, so a decision made on it is a coin toss; a declared reservation is not.
  Jobs that say `share = true` and declare `gpu_memory` may then share a GPU while the declared memory of
  everyone on it fits its total; any other job gets its GPUs to itself.
Sharing jobs are packed best fit (the fullest GPU that still fits first), so whole GPUs stay free for the jobs
that need them whole.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from gpusched.model import Gpu
from gpusched.policy.data import Holder, Request


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


def sharing(req: Request | Holder, reserve_memory: bool) -> bool:
    """A job shares only when it says so and declares what it will use (otherwise nothing bounds it)."""
    return reserve_memory and req.share and req.gpu_memory is not None


class Pool:
    """The GPUs as one pass sees them, updated as the pass hands them out. Mutable, but only inside one call
    of schedule(): nothing outside sees it."""

    def __init__(self, gpus: Sequence[Gpu] | None, holders: Sequence[Holder], reserve_memory: bool = False):
        self.reserve_memory = reserve_memory
        self.by_index = {g.index: g for g in gpus or ()}
        # holders per GPU, and what sharing holders have reserved on it
        self.holders_on: dict[int, list[Holder]] = {}
        self.reserved: dict[int, int] = {}
        exclusive: set[int] = set()
        for h in holders:
            for i in h.gpus:
                self.holders_on.setdefault(i, []).append(h)
                if sharing(h, reserve_memory):
                    self.reserved[i] = self.reserved.get(i, 0) + (h.gpu_memory or 0)
                else:
                    exclusive.add(i)
        held = set(self.holders_on)
        self.free = [g for g in gpus or () if g.index not in held and not g.foreign_pids]
        # GPUs only sharing jobs hold, which another sharing job may join
        self.shared = {i for i in held - exclusive if i in self.by_index and not self.by_index[i].foreign_pids}
        # free once their stop completes (every job on them is stopping); a GPU the probe no longer lists
        # can't be counted on
        self.any_foreign = any(g.foreign_pids for g in gpus or ())
        self.coming = {i for i, hs in self.holders_on.items() if i in self.by_index and all(h.stopping for h in hs)}

    def _fits_now(self, req: Request, g: Gpu) -> bool:
        return fits(req, g, assume_empty=self.reserve_memory)

    def usable(self, req: Request) -> list[Gpu]:
        """GPUs the request could take now, in the order it should take them."""
        whole = [g for g in self.free if self._fits_now(req, g)]
        if not sharing(req, self.reserve_memory):
            return whole
        assert req.gpu_memory is not None
        joinable = [self.by_index[i] for i in self.shared
                    if fits(req, self.by_index[i], assume_empty=True)
                    and self.by_index[i].memory_total - self.reserved[i] >= req.gpu_memory]
        # best fit: the least room left after this job first; whole GPUs last
        joinable.sort(key=lambda g: (g.memory_total - self.reserved[g.index], g.index))
        return joinable + whole

    def take(self, req: Request, chosen: Iterable[Gpu]) -> tuple[int, ...]:
        chosen = list(chosen)
        idx = {g.index for g in chosen}
        self.free = [g for g in self.free if g.index not in idx]
        if sharing(req, self.reserve_memory):
            for i in idx:
                self.shared.add(i)
                self.reserved[i] = self.reserved.get(i, 0) + (req.gpu_memory or 0)
        else:
            self.shared -= idx
        return tuple(g.index for g in chosen)

    def keep(self, gpus: Iterable[Gpu]) -> None:
        """Hold these GPUs back from the rest of the pass (they are promised to a job that waits for more)."""
        idx = {g.index for g in gpus}
        self.free = [g for g in self.free if g.index not in idx]
        self.shared -= idx

    def soon(self, req: Request) -> list[int]:
        """GPUs being freed by stopping jobs that would fit the request."""
        return [i for i in sorted(self.coming) if fits(req, self.by_index[i], assume_empty=True)]

    def foreign_busy(self, req: Request) -> list[int]:
        if not self.any_foreign:
            return []
        return [g.index for g in self.by_index.values()
                if g.foreign_pids and g.index not in self.holders_on and fits(req, g, assume_empty=True)]

    def any_free(self) -> bool:
        return bool(self.free) or bool(self.shared)
