"""The GPU inventory: NVML on a real machine, or the simulated GPUs the config names.

probe() returns the GPUs as they are now, each with the compute processes on it that gpusched did not start
(a process is ours when its cgroup is under gpusched.slice). It raises GpuProbeError when NVML fails.
"""

from __future__ import annotations

import os
import uuid
from typing import Protocol, Sequence

from gpusched.config import SimulatedGpu
from gpusched.model import Gpu

SLICE = "gpusched.slice"
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
# Only for simulated inventories (tests, demos): while this file exists, the probe fails as NVML can
SIMULATED_FAULT = "/run/gpusched/simulate-gpu-failure"


class GpuProbeError(Exception):
    pass


class Probe(Protocol):
    simulated: bool

    def probe(self) -> list[Gpu]: ...


def ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f"/{SLICE}/" in f.read()
    except OSError:
        return False              # not visible here (another PID namespace, or gone): not ours


class NoGpus:
    simulated = False

    def probe(self) -> list[Gpu]:
        return []


class SimulatedGpus:
    simulated = True

    def __init__(self, gpus: Sequence[SimulatedGpu]):
        self._gpus = [
            Gpu(index=i, uuid="GPU-" + str(uuid.uuid5(uuid.NAMESPACE_OID, f"gpusched-simulated-{i}-{g.name}")),
                name=g.name, memory_total=g.memory, memory_free=g.memory, minor=i, simulated=True)
            for i, g in enumerate(gpus)
        ]

    def probe(self) -> list[Gpu]:
        if os.path.exists(SIMULATED_FAULT):
            raise GpuProbeError(f"simulated GPU probe failure ({SIMULATED_FAULT} exists)")
        return list(self._gpus)


class NvmlGpus:
    simulated = False

    def __init__(self) -> None:
        import pynvml
        self._nvml = pynvml
        pynvml.nvmlInit()

    def probe(self) -> list[Gpu]:
        n = self._nvml
        try:
            out = []
            for i in range(n.nvmlDeviceGetCount()):
                h = n.nvmlDeviceGetHandleByIndex(i)
                mem = n.nvmlDeviceGetMemoryInfo(h)
                name = n.nvmlDeviceGetName(h)
                uid = n.nvmlDeviceGetUUID(h)
                try:
                    minor = n.nvmlDeviceGetMinorNumber(h)
                except n.NVMLError:
                    minor = None
                pids = [p.pid for p in n.nvmlDeviceGetComputeRunningProcesses(h)]
                out.append(Gpu(index=i, uuid=uid if isinstance(uid, str) else uid.decode(),
                               name=name if isinstance(name, str) else name.decode(),
                               memory_total=mem.total, memory_free=mem.free, minor=minor,
                               foreign_pids=tuple(p for p in pids if not ours(p))))
            return out
        except n.NVMLError as e:
            raise GpuProbeError(f"NVML: {e}") from e


def make_probe(simulated: Sequence[SimulatedGpu]) -> tuple[Probe, str]:
    """The probe to use, and a line saying what it is, for the journal."""
    if simulated:
        return SimulatedGpus(simulated), f"{len(simulated)} simulated GPU(s) from the config"
    try:
        probe = NvmlGpus()
    except Exception as e:  # noqa: BLE001 - no pynvml, no library, no driver: all mean no GPUs here
        return NoGpus(), f"no GPUs: NVML unavailable ({e}); GPU jobs stay queued"
    return probe, "GPUs from NVML"


def device_nodes(gpus: Sequence[Gpu]) -> list[str]:
    """Device nodes a job on these GPUs needs: each GPU's own node plus the control nodes."""
    if not gpus:
        return []
    own = [f"/dev/nvidia{g.minor if g.minor is not None else g.index}" for g in gpus]
    return own + [p for p in CONTROL_NODES if os.path.exists(p) or gpus[0].simulated]
