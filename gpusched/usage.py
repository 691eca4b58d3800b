"""GPU accounting and idle detection (issue 9, features 10 and 11): the rules, pure.

The engine samples each held GPU at most once a second (gpus.py: NVML's utilisation, used memory and energy
counter, or the simulated inventory's test hook) and feeds the samples to a `Meter`, which keeps, per active
job, a `Tally` of what happened since the tally was last folded into the job's record:

- GPU-seconds used: each GPU's utilisation (0..1) times the time since the previous sample, summed over the
  job's GPUs. A gap longer than MAX_GAP (the daemon stalled or restarted) is not integrated: better a little
  less than a guess.
- energy: the GPU's energy counter's increase since the previous sample. A GPU that several jobs share
  (`share = true`) has its utilisation and energy split between them in proportion to their `gpu_memory`
  reservations (equally where a job has none), and those jobs' figures are marked `estimated`.
- peak GPU memory: the most memory used on any one of the job's GPUs (the GPU's total, so on a shared GPU it
  includes the other jobs' memory: an upper bound).
- idle: a sample where every GPU of the job is at or under the idle threshold (percent utilisation) starts
  the idle timer (`idle_since`); any other sample, or a GPU without a sample (unknown is not idle: a job is
  never stopped on missing data), stops it.

`fold` adds a tally to the `usage` dict a job record keeps; `reserved_seconds` is exact, from the record's
attempts (GPUs held x time held), not sampled. `summarize` is `gpuschedctl stats`'s table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

SAMPLE_EVERY = 1.0        # seconds: the least time between two samples of the GPUs (NVML calls are per GPU)
FOLD_EVERY = 60.0         # seconds: a running job's record gets its accounting this often (and at its end)
MAX_GAP = 10.0            # seconds: a longer time between two samples is not integrated
IDLE_PERCENT = 5.0        # default idle threshold: at or under this utilisation a GPU counts as idle


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one instant; None where the GPU (or NVML) can't say."""
    utilization: float | None = None     # percent, 0..100
    memory_used: int | None = None       # bytes
    energy: float | None = None          # joules: a counter that only grows (NVML: since the driver loaded)


@dataclass(slots=True)
class Tally:
    """What one active job did since its record last got it (fold)."""
    used: float = 0.0                    # GPU-seconds: utilisation x time
    energy: float = 0.0                  # joules
    energy_seen: bool = False            # some energy counter was read for it
    memory_peak: int = 0                 # bytes, on one GPU
    estimated: bool = False              # some GPU of it was shared: its figures are split estimates
    idle_since: float | None = None      # every GPU of it idle since then; None: not idle (or unknown)


class Meter:
    """The tallies of active jobs and, per GPU, the previous sample (to integrate against)."""

    def __init__(self, idle_percent: float = IDLE_PERCENT):
        self.idle_percent = idle_percent
        self.tallies: dict[int, Tally] = {}
        self._last: float | None = None
        self._energy: dict[int, float] = {}       # GPU index -> its counter at the previous sample

    def observe(self, now: float, samples: Mapping[int, GpuSample],
                holders: Mapping[int, Sequence[tuple[int, float]]]) -> None:
        """One sample of the GPUs at `now`: samples by GPU index (missing: no answer); holders: GPU index ->
        [(job id, weight)], the active jobs on it (weight: its gpu_memory reservation, 0 for none)."""
        dt = None if self._last is None else now - self._last
        if dt is not None and not 0 < dt <= MAX_GAP:
            dt = None
        self._last = now
        jobs_gpus: dict[int, list[int]] = {}
        for index, holding in holders.items():
            for job_id, _ in holding:
                jobs_gpus.setdefault(job_id, []).append(index)
                self.tallies.setdefault(job_id, Tally())
        for index, holding in holders.items():
            s = samples.get(index)
            if s is None or not holding:
                continue
            shares = split(holding)
            delta = None
            if s.energy is not None:
                before = self._energy.get(index)
                self._energy[index] = s.energy
                if before is not None and s.energy >= before and dt is not None:
                    delta = s.energy - before          # a counter that went back (driver reload): skipped
            for job_id, share in shares.items():
                t = self.tallies[job_id]
                if len(holding) > 1:
                    t.estimated = True
                if dt is not None and s.utilization is not None:
                    t.used += share * min(max(s.utilization, 0.0), 100.0) / 100.0 * dt
                if delta is not None:
                    t.energy += share * delta
                    t.energy_seen = True
                if s.memory_used is not None:
                    t.memory_peak = max(t.memory_peak, s.memory_used)
        for job_id, indices in jobs_gpus.items():
            t = self.tallies[job_id]
            if all(self.is_idle(samples.get(i)) for i in indices):
                if t.idle_since is None:
                    t.idle_since = now
            else:
                t.idle_since = None
        for index in list(self._energy):
            if index not in holders:
                del self._energy[index]               # nobody holds it: its next holder starts afresh

    def is_idle(self, s: GpuSample | None) -> bool:
        return s is not None and s.utilization is not None and s.utilization <= self.idle_percent

    def tally(self, job_id: int, idle_since: float | None = None) -> Tally:
        """The job's tally (a new one starts with the idle timer its record had: after a restart)."""
        t = self.tallies.get(job_id)
        if t is None:
            t = self.tallies[job_id] = Tally(idle_since=idle_since)
        return t

    def take(self, job_id: int) -> Tally:
        """The job's tally for its record; the meter goes on counting from zero (idle timer and peak kept)."""
        t = self.tallies.get(job_id) or Tally()
        self.tallies[job_id] = Tally(memory_peak=t.memory_peak, estimated=t.estimated, idle_since=t.idle_since)
        return t

    def forget(self, job_id: int) -> Tally:
        """The job holds no GPU any more: its last tally."""
        return self.tallies.pop(job_id, None) or Tally()

    def reset(self) -> None:
        """Nothing is held: the next sample only sets the baseline."""
        self._last = None
        self._energy.clear()


def split(holding: Sequence[tuple[int, float]]) -> dict[int, float]:
    """Each job's part of a GPU: in proportion to its weight (gpu_memory reservation); equal parts when some
    job has no weight."""
    weights = [w for _, w in holding]
    if all(w > 0 for w in weights):
        total = sum(weights)
        return {job_id: w / total for job_id, w in holding}
    return {job_id: 1.0 / len(holding) for job_id, _ in holding}


def reserved_seconds(history: Iterable[Mapping[str, Any]], gpus: int = 0, started: float | None = None,
                     now: float = 0.0) -> float:
    """GPU-seconds held: each earlier attempt's GPUs x (ended - started), plus the current attempt's (gpus
    held since `started`) up to `now`."""
    total = 0.0
    for h in history:
        held = h.get("gpus") or ()
        if held and h.get("started") is not None and h.get("ended") is not None:
            total += len(held) * max(0.0, float(h["ended"]) - float(h["started"]))
    if gpus and started is not None:
        total += gpus * max(0.0, now - started)
    return total


def fold(usage: Mapping[str, Any], tally: Tally, reserved: float) -> dict[str, Any]:
    """The record's `usage` with a tally added: gpu_hours_reserved (exact, given), gpu_hours_used,
    gpu_memory_peak (bytes), energy_joules and energy_estimated (only once an energy counter was read),
    idle_since kept as it is (the engine sets and clears it)."""
    out = dict(usage)
    out["gpu_hours_reserved"] = round(reserved / 3600.0, 6)
    out["gpu_hours_used"] = round(float(usage.get("gpu_hours_used", 0.0)) + tally.used / 3600.0, 6)
    peak = max(int(usage.get("gpu_memory_peak", 0)), tally.memory_peak)
    if peak:
        out["gpu_memory_peak"] = peak
    if tally.energy_seen or "energy_joules" in usage:
        out["energy_joules"] = round(float(usage.get("energy_joules", 0.0)) + tally.energy, 3)
        if tally.estimated or usage.get("energy_estimated"):
            out["energy_estimated"] = True
    return out


def idle_for(idle_since: float | None, now: float) -> float:
    return 0.0 if idle_since is None else max(0.0, now - idle_since)


# --- gpuschedctl stats ----------------------------------------------------------------------------------

def summarize(jobs: Iterable[Any], since: float = 0.0, now: float = 0.0) -> list[dict[str, Any]]:
    """Per user, over the jobs that ended at or after `since` or are still active (rejected files are not
    jobs): jobs (finished ones), running, GPU-hours reserved and used, energy (joules; `energy_estimated`
    when a part of it was split), CPU-seconds and the highest peak RAM (when the records have them), and the
    wait (first start - submission) of every job that started: mean and max. Sorted by GPU-hours reserved,
    most first."""
    rows: dict[str, dict[str, Any]] = {}
    waits: dict[str, list[float]] = {}
    for job in jobs:
        state = str(job.state)
        if state == "rejected":
            continue
        active = state in ("starting", "running", "stopping")
        if not active and (job.ended is None or job.ended < since):
            continue
        r = rows.setdefault(job.user, {"user": job.user, "jobs": 0, "running": 0, "gpu_hours_reserved": 0.0,
                                       "gpu_hours_used": 0.0, "energy_joules": 0.0})
        r["running" if active else "jobs"] += 1
        u = job.usage or {}
        reserved = u.get("gpu_hours_reserved", 0.0)
        if active and job.gpus:
            reserved = reserved_seconds(job.history, len(job.gpus), job.started, now) / 3600.0
        r["gpu_hours_reserved"] += reserved
        r["gpu_hours_used"] += u.get("gpu_hours_used", 0.0)
        r["energy_joules"] += u.get("energy_joules", 0.0)
        if u.get("energy_estimated"):
            r["energy_estimated"] = True
        cpu = getattr(job, "cpu_seconds", None)           # from the job's cgroup (another part of issue 9)
        if cpu is not None:
            r["cpu_seconds"] = r.get("cpu_seconds", 0.0) + cpu
        ram = getattr(job, "memory_peak", None)
        if ram is not None:
            r["memory_peak_max"] = max(r.get("memory_peak_max", 0), ram)
        first = job.history[0].get("started") if job.history else job.started
        if first is not None:
            waits.setdefault(job.user, []).append(max(0.0, float(first) - job.submitted))
    for user, r in rows.items():
        w = waits.get(user)
        if w:
            r["wait_mean"] = round(sum(w) / len(w), 3)
            r["wait_max"] = round(max(w), 3)
        for key in ("gpu_hours_reserved", "gpu_hours_used"):
            r[key] = round(r[key], 6)
        r["energy_joules"] = round(r["energy_joules"], 3)
    return sorted(rows.values(), key=lambda r: (-r["gpu_hours_reserved"], r["user"]))
