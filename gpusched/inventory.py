"""The GPUs as last probed: what the scheduling pass places jobs on, and what `gpuschedctl gpus` shows.

The probe (gpus.py: NVML or simulated) is asked every gpu_poll_interval. A failed probe is said once and
leaves the inventory unknown (None): no new GPU job starts until it recovers. Only a change that can alter a
decision (a GPU appearing or going, foreign processes, free memory in 256 MiB steps) asks for a pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from gpusched.clock import Clock
from gpusched.gpus import GpuProbeError, Probe
from gpusched.log import Log
from gpusched.model import Gpu
from gpusched.usage import GpuSample


class Inventory:
    def __init__(self, probe: Probe, clock: Clock, log: Log, poll_interval: float):
        self.probe = probe
        self.gpus: list[Gpu] | None = []
        self.error: str | None = None
        self._clock = clock
        self._log = log
        self._poll_interval = poll_interval
        self._last = 0.0

    @property
    def simulated(self) -> bool:
        return self.probe.simulated

    def due(self) -> bool:
        return self._clock.monotonic() - self._last >= self._poll_interval

    def refresh(self, active_units: Iterable[str]) -> bool:
        """Probe now. True if what the policy sees has changed."""
        self._last = self._clock.monotonic()
        try:
            gpus = self.probe.probe(frozenset(active_units))
        except GpuProbeError as e:
            if self.error is None:
                self._log(f"GPU probe failed: {e}; no new GPU jobs start until it recovers", 3)
            self.error, self.gpus = str(e), None
            return False
        if self.error is not None:
            self._log("GPU probe recovered")
            self.error = None
        changed = self.gpus is None or _key(gpus) != _key(self.gpus)
        self.gpus = gpus
        return changed

    def sample(self, indices: Iterable[int]) -> dict[int, GpuSample]:
        """Utilisation, used memory and energy of these GPUs (usage.py), where the probe can tell: {} from a
        probe that can't, or while the probe fails (refresh says so in the journal)."""
        sample = getattr(self.probe, "sample", None)
        if sample is None or self.gpus is None:
            return {}
        try:
            return sample(sorted(indices))
        except GpuProbeError:
            return {}

    def summary(self, held: set[int]) -> str:
        """For the STATUS= line: how many GPUs are free (held by no job, used by no foreign process)."""
        if self.gpus is None:
            return f"GPUs unknown ({self.error})"
        free = sum(1 for g in self.gpus if g.index not in held and not g.foreign_pids)
        return f"GPUs {free}/{len(self.gpus)} free" + (" (simulated)" if self.simulated else "")

    def table(self, holders: Mapping[int, int]) -> list[dict[str, Any]]:
        """Each GPU with its state: held by a job (holders: GPU index -> job id), foreign, or free."""
        out = []
        for g in self.gpus or ():
            state = f"job {holders[g.index]}" if g.index in holders else "foreign" if g.foreign_pids else "free"
            contested = g.index in holders and bool(g.foreign_pids)     # a job's GPU used outside gpusched too
            if contested:
                state += ", contested"
            out.append({"index": g.index, "uuid": g.uuid, "name": g.name, "memory_total": g.memory_total,
                        "memory_free": g.memory_free, "simulated": g.simulated, "state": state,
                        "job": holders.get(g.index), "contested": contested, "foreign_pids": list(g.foreign_pids),
                        "foreign": [dataclasses.asdict(p) for p in g.foreign]})
        return out


def _key(gpus: list[Gpu]) -> list[tuple]:
    return [(g.index, g.uuid, g.foreign_pids, g.memory_free >> 28) for g in gpus]   # 256 MiB steps
