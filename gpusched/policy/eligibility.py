"""Eligibility: may this job start in this pass at all, whatever GPUs are free? If not, why not.

The caps that hold a job back whatever its place in the order: max_running, the per-user caps (jobs running,
CPU-only jobs running; root is exempt, as from max_queued_per_user), a class's per-user GPU cap, and GPU jobs
while the probe fails or on a server that could never fit them. The gate counts what the pass starts, so a
user's second job in the same pass sees the first.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from gpusched.model import Gpu
from gpusched.policy import classes as classmod
from gpusched.policy.classes import JobClass
from gpusched.policy.data import Holder, Request
from gpusched.policy.placement import never_fits


class Gate:
    def __init__(self, holders: Sequence[Holder], gpus: Sequence[Gpu] | None, *, max_running: int = 0,
                 max_running_per_user: int = 0, max_cpu_jobs_per_user: int = 0,
                 classes: Mapping[str, JobClass] | None = None):
        self.gpus = gpus
        self.max_running = max_running
        self.max_running_per_user = max_running_per_user
        self.max_cpu_jobs_per_user = max_cpu_jobs_per_user
        self.classes = classes
        self.running_of: dict[int, int] = {}     # uid -> jobs holding resources (stopping ones too: they still do)
        self.cpu_of: dict[int, int] = {}
        self.class_gpus: dict[tuple[int, str], int] = {}    # (uid, class) -> GPUs held
        for h in holders:
            self.running_of[h.uid] = self.running_of.get(h.uid, 0) + 1
            if h.cpu_only:
                self.cpu_of[h.uid] = self.cpu_of.get(h.uid, 0) + 1
            if classes:
                key = (h.uid, h.job_class)
                self.class_gpus[key] = self.class_gpus.get(key, 0) + len(h.gpus)
        self.active = len(holders)
        self._never: dict[tuple, str | None] = {}

    def full(self) -> bool:
        return bool(self.max_running) and self.active >= self.max_running

    def check(self, req: Request) -> str | None:
        """Why the request may not start in this pass, or None."""
        if self.full():
            return f"max_running ({self.max_running}) reached"
        capped = req.uid != 0                # root is trusted (and exempt, as from max_queued_per_user)
        if capped and self.max_running_per_user and self.running_of.get(req.uid, 0) >= self.max_running_per_user:
            return (f"waiting for the user's own jobs: {self.running_of[req.uid]} running, "
                    f"max_running_per_user is {self.max_running_per_user}")
        if req.gpus == 0:
            if capped and self.max_cpu_jobs_per_user and self.cpu_of.get(req.uid, 0) >= self.max_cpu_jobs_per_user:
                return (f"waiting for the user's own CPU-only jobs: {self.cpu_of[req.uid]} running, "
                        f"max_cpu_jobs_per_user is {self.max_cpu_jobs_per_user}")
            return None
        if self.gpus is None:
            return "GPU state unknown (the GPU probe is failing); GPU jobs wait"
        if not self.gpus:
            return "no GPUs"
        # many queued jobs ask for the same thing: ask once per distinct request shape
        shape = (req.gpus, req.gpu_memory, req.gpu_type, req.gpu_ids)
        if shape not in self._never:
            self._never[shape] = never_fits(req, self.gpus)
        if reason := self._never[shape]:
            return reason
        cap = classmod.gpu_cap(self.classes, req.job_class)
        if capped and cap and req.gpus > cap:
            return (f"can never run here: asks for {req.gpus} GPU(s), class {req.job_class!r} allows {cap} per "
                    f"user")
        if capped and cap:
            have = self.class_gpus.get((req.uid, req.job_class), 0)
            if have + req.gpus > cap:
                return (f"waiting for the user's own {req.job_class!r} jobs: they hold {have} GPU(s), the class "
                        f"allows {cap} per user")
        return None

    def admit(self, req: Request) -> None:
        """Count a job this pass starts."""
        self.running_of[req.uid] = self.running_of.get(req.uid, 0) + 1
        if req.gpus == 0:
            self.cpu_of[req.uid] = self.cpu_of.get(req.uid, 0) + 1
        elif self.classes:
            key = (req.uid, req.job_class)
            self.class_gpus[key] = self.class_gpus.get(key, 0) + req.gpus
        self.active += 1
