"""The GPU inventory: NVML on a real machine, or the simulated GPUs the config names.

probe(active_units) returns the GPUs as they are now, each with the compute processes on it that are not
gpusched's (`foreign`, with who and what they are). A process is gpusched's only when systemd tracks it in
the scope of one of the jobs the daemon says are active: its cgroup is `/gpusched.slice/<that scope>` (or
below it) from the root of the hierarchy. Anything else is foreign, even a cgroup with the same names further
down: a user's own manager can make `/user.slice/user-1000.slice/user@1000.service/gpusched.slice/
gpusched-job-7.scope`. It raises GpuProbeError when NVML fails.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from dataclasses import replace
from typing import Any, Iterable, Protocol, Sequence

from gpusched import fds
from gpusched.cgroups import SLICE
from gpusched.config import SimulatedGpu
from gpusched.model import ForeignProcess, Gpu
from gpusched.units import parse_size
from gpusched.usage import GpuSample

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
# Only for simulated inventories (tests, demos): while this file exists, the probe fails as NVML can
SIMULATED_FAULT = "/run/gpusched/simulate-gpu-failure"
# Only for simulated inventories: "<gpu index> <pid>" per line puts that process "on" that simulated GPU,
# where it is classified as a real one would be. Read only when root owns it and only root can write it.
SIMULATED_PROCS = "/run/gpusched/simulate-gpu-procs"
# Only for simulated inventories: "<gpu index> <utilisation %> [<memory used, e.g. 20G>] [<power in W>]" per
# line gives that GPU's utilisation and used memory, and makes its energy counter grow at that power
# (issue 9's accounting and idle detection, usage.py). Same rule: root's file, only root can write it.
SIMULATED_USAGE = "/run/gpusched/simulate-gpu-usage"
_MAX_SIMULATED = 64 * 1024
MAX_NAME = 64
MAX_CMDLINE = 256
MAX_DESCRIBED = 16            # foreign processes described per GPU; all are counted


class GpuProbeError(Exception):
    pass


class Probe(Protocol):
    simulated: bool

    def probe(self, active_units: frozenset[str] = frozenset()) -> list[Gpu]: ...

    # and, where the probe can tell (usage.py): def sample(self, indices) -> dict[int, GpuSample]


def tracked_cgroup(proc_cgroup: str) -> str | None:
    """The cgroup a process is tracked by, from the text of /proc/PID/cgroup: the unified "0::" line where
    the unified hierarchy is in use (v2, and hybrid: systemd tracks by it there), else the name=systemd line
    (pure v1). Never v1 first where v2 is there: on v1 a process's owner may move it into any cgroup whose
    cgroup.procs they can write (a job into its user's manager, to look foreign), while v2 asks for write
    access at the common ancestor. None if neither."""
    unified = legacy = None
    for line in proc_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if not sep:
            continue
        if controllers == "name=systemd":
            legacy = path
        elif hid == "0" and controllers == "":
            unified = path
    if unified and unified != "/":
        return unified
    return legacy if legacy is not None else unified


def job_scope_of(cgroup: str | None, active_units: Iterable[str]) -> str | None:
    """The active job scope a cgroup path is (or is under), or None. Only a path from the root counts."""
    prefix = f"/{SLICE}/"
    if not cgroup or not cgroup.startswith(prefix):
        return None
    unit = cgroup[len(prefix):].split("/", 1)[0]
    if not (unit.startswith("gpusched-job-") and unit.endswith(".scope")):
        return None
    return unit if unit in active_units else None


def ours(pid: int, active_units: Iterable[str] = frozenset()) -> bool:
    """Whether pid is in an active job's scope. A pid we can't see (another PID namespace, or gone) is
    not ours: better a GPU left idle than one handed to a second user."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            text = f.read(64 * 1024)
    except OSError:
        return False
    return job_scope_of(tracked_cgroup(text), active_units) is not None


def _bounded(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe(pid: int, gpu_memory: int | None = None) -> ForeignProcess:
    """Who and what a process is (psutil), bounded in size; what can't be read is "?"."""
    user, name, cmdline = "?", "?", ""
    try:
        import psutil
        p = psutil.Process(pid)
        with p.oneshot():
            for attr in ("username", "name", "cmdline"):
                try:
                    v = getattr(p, attr)()
                except (psutil.AccessDenied, psutil.ZombieProcess, KeyError):
                    continue
                if attr == "username":
                    user = v
                elif attr == "name":
                    name = v
                else:
                    cmdline = " ".join(v)
    except ImportError:
        pass                          # psutil is a dependency; without it only the pid is known
    except Exception:  # noqa: BLE001 - gone meanwhile (NoSuchProcess) or unreadable: keep what we have
        pass
    return ForeignProcess(pid=pid, user=_bounded(user, MAX_NAME), name=_bounded(name, MAX_NAME),
                          cmdline=_bounded(cmdline, MAX_CMDLINE), gpu_memory=gpu_memory)


def foreign_of(procs: Iterable[tuple[int, int | None]], active_units: Iterable[str]
               ) -> tuple[tuple[int, ...], tuple[ForeignProcess, ...]]:
    """The foreign pids among (pid, gpu memory) pairs, in pid order, each once; and the first MAX_DESCRIBED
    of them described (what a GPU listing shows stays small however many processes a user starts)."""
    units = frozenset(active_units)
    seen: dict[int, int | None] = {}
    for pid, mem in procs:
        if pid not in seen or seen[pid] is None:
            seen[pid] = mem
    pids = tuple(pid for pid in sorted(seen) if not ours(pid, units))
    return pids, tuple(describe(pid, seen[pid]) for pid in pids[:MAX_DESCRIBED])


class NoGpus:
    simulated = False

    def probe(self, active_units: frozenset[str] = frozenset()) -> list[Gpu]:
        return []


class SimulatedGpus:
    simulated = True

    def __init__(self, gpus: Sequence[SimulatedGpu]):
        self._gpus = [
            Gpu(index=i, uuid="GPU-" + str(uuid.uuid5(uuid.NAMESPACE_OID, f"gpusched-simulated-{i}-{g.name}")),
                name=g.name, memory_total=g.memory, memory_free=g.memory, minor=i, simulated=True)
            for i, g in enumerate(gpus)
        ]
        self._energy: dict[int, tuple[float, float, float]] = {}   # index -> (power, when, joules so far)

    def probe(self, active_units: frozenset[str] = frozenset()) -> list[Gpu]:
        if os.path.exists(SIMULATED_FAULT):
            raise GpuProbeError(f"simulated GPU probe failure ({SIMULATED_FAULT} exists)")
        on_gpu = read_simulated_procs(SIMULATED_PROCS)
        if not on_gpu:
            return list(self._gpus)
        out = []
        for g in self._gpus:
            # NVML lists only live processes; so does the simulation
            live = [pid for pid in on_gpu.get(g.index, ()) if os.path.exists(f"/proc/{pid}")]
            pids, foreign = foreign_of(((pid, None) for pid in live), active_units)
            out.append(replace(g, foreign=foreign, foreign_pids=pids))
        return out

    def sample(self, indices: Iterable[int]) -> dict[int, GpuSample]:
        """The usage hook's figures for these GPUs; an energy counter that grows at the hook's power. A GPU
        the hook doesn't name (or no hook at all) has no sample: its utilisation is unknown, not zero."""
        if os.path.exists(SIMULATED_FAULT):
            raise GpuProbeError(f"simulated GPU probe failure ({SIMULATED_FAULT} exists)")
        now = time.monotonic()
        hook = read_simulated_usage(SIMULATED_USAGE)
        out = {}
        for i in indices:
            if i not in hook or not 0 <= i < len(self._gpus):
                continue
            util, mem, power = hook[i]
            energy = None
            if power is not None:
                last_power, last_t, counter = self._energy.get(i, (power, now, 0.0))
                counter += last_power * (now - last_t)
                self._energy[i] = (power, now, counter)
                energy = counter
            out[i] = GpuSample(utilization=util, memory_used=mem, energy=energy)
        return out


def _read_root_file(path: str) -> bytes | None:
    """A simulation hook file's bytes, or None when it is absent or anyone but root could have written it (a
    user must not be able to fake a busy or an idle GPU)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return None
        return os.read(fd, _MAX_SIMULATED)
    finally:
        os.close(fd)


def read_simulated_usage(path: str) -> dict[int, tuple[float, int | None, float | None]]:
    """{gpu index: (utilisation %, memory used or None, power in W or None)} from the usage hook file; {}
    when absent or not root's. Malformed lines are skipped."""
    data = _read_root_file(path)
    out: dict[int, tuple[float, int | None, float | None]] = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        parts = line.split("#", 1)[0].split()
        if not 2 <= len(parts) <= 4 or not parts[0].isdigit():
            continue
        try:
            util = float(parts[1])
            mem = parse_size(parts[2]) if len(parts) > 2 else None
            power = float(parts[3]) if len(parts) > 3 else None
        except ValueError:
            continue
        if 0 <= util <= 100 and (power is None or 0 <= power < 1e5):
            out[int(parts[0])] = (util, mem, power)
    return out


def read_simulated_procs(path: str) -> dict[int, list[int]]:
    """{gpu index: [pid, ...]} from the simulation file, or {} when it is absent or anyone but root could
    have written it (a user must not be able to fake a busy GPU). Malformed lines are skipped."""
    data = _read_root_file(path)
    if data is None:
        return {}
    out: dict[int, list[int]] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out.setdefault(int(parts[0]), []).append(int(parts[1]))
    return out


class NvmlGpus:
    simulated = False

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError:           # the Debian package's own copy of nvidia-ml-py (packaging/vendor/)
            from gpusched._vendor import pynvml
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        finally:
            fds.cloexec_all()         # NVML opens device fds without O_CLOEXEC; no job may inherit one

    def probe(self, active_units: frozenset[str] = frozenset()) -> list[Gpu]:
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
                procs = [(p.pid, _memory(p)) for p in n.nvmlDeviceGetComputeRunningProcesses(h)]
                pids, foreign = foreign_of(procs, active_units)
                out.append(Gpu(index=i, uuid=uid if isinstance(uid, str) else uid.decode(),
                               name=name if isinstance(name, str) else name.decode(),
                               memory_total=mem.total, memory_free=mem.free, minor=minor,
                               foreign_pids=pids, foreign=foreign))
            return out
        except n.NVMLError as e:
            raise GpuProbeError(f"NVML: {e}") from e
        finally:
            fds.cloexec_all()         # NVML opens /dev/nvidia<N> lazily, on whichever call first needs it

    def sample(self, indices: Iterable[int]) -> dict[int, GpuSample]:
        """Utilisation (the percent of the last sample period a kernel ran), used memory and the energy
        counter (mJ since the driver loaded; Volta and newer) of these GPUs: three NVML calls per GPU. A
        figure NVML can't give (not supported, a GPU lost) is None; only a failing NVML as a whole raises."""
        n = self._nvml
        out = {}
        try:
            for i in indices:
                try:
                    h = n.nvmlDeviceGetHandleByIndex(i)
                except n.NVMLError:
                    continue
                out[i] = GpuSample(utilization=_nvml_or_none(lambda: float(n.nvmlDeviceGetUtilizationRates(h).gpu)),
                                   memory_used=_nvml_or_none(lambda: int(n.nvmlDeviceGetMemoryInfo(h).used)),
                                   energy=_nvml_or_none(lambda: n.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0))
            return out
        finally:
            fds.cloexec_all()


def _nvml_or_none(fn: Any) -> Any:
    import pynvml
    try:
        return fn()
    except pynvml.NVMLError:
        return None


def _memory(p: object) -> int | None:
    used = getattr(p, "usedGpuMemory", None)
    # NVML reports "not available" (under some drivers or containers) as None or as a huge sentinel
    return used if isinstance(used, int) and 0 <= used < 1 << 60 else None


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
