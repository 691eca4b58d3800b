"""What a job's cgroup says it used: kernel OOM kills, CPU time, peak memory. Read by the monitor (root, in the
job's scope) when the job starts and just before it removes the job's cgroup.

- OOM kills: `oom_kill` in the scope's memory.events (cgroup v2: MemoryMax is the scope's, and its counts
  include the job's cgroup below it), or in memory.oom_control of the scope's v1 memory cgroup (Linux 4.13+).
- CPU time: `usage_usec` of cpu.stat in the job's own cgroup (v2 has it in every cgroup, controller enabled
  or not), else the scope's; v1: cpuacct.usage (nanoseconds) of the scope's cpuacct cgroup.
- Peak memory: the scope's memory.peak (v2, Linux 5.19+; the monitor's own few MiB are in it), v1:
  memory.max_usage_in_bytes.
A cgroup of some other unit (a box whose controllers aren't delegated puts every process in its own root) is
never read: only a path that ends in the job's unit counts. Whatever can't be read is None; every file is read
bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpusched import jobcgroup

MAX_READ = 8192


@dataclass(frozen=True)
class Places:
    """Directories to read, best first, for each measure."""
    memory: tuple[str, ...] = ()          # memory.events / memory.peak (v2) or the v1 memory cgroup
    cpu: tuple[str, ...] = ()             # cpu.stat (v2) or cpuacct.usage (v1)
    v1_memory: tuple[str, ...] = ()
    v1_cpu: tuple[str, ...] = ()


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, MAX_READ).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _keyed(text: str | None, key: str) -> int | None:
    """The value of `key` in a flat-keyed cgroup file ("oom_kill 3\\n...")."""
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _number(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def locate(unit: str, job_dir: str | None = None, *, own: dict[str, str] | None = None,
           mounts: list[tuple[str, str, str]] | None = None) -> Places:
    """Where the scope `unit` (the monitor's own, from /proc/self/cgroup and the mounts: jobcgroup's readers)
    and the job's cgroup `job_dir` keep their counts."""
    if own is None or mounts is None:
        try:
            own = jobcgroup._own_cgroups() if own is None else own
        except OSError:
            return Places()
        mounts = jobcgroup._mounts() if mounts is None else mounts

    def scope_in(mount: str | None, path: str | None) -> str | None:
        if mount and path and path.rstrip("/").endswith("/" + unit):
            return mount + path.rstrip("/")
        return None

    v2 = scope_in(next((m for m, fstype, _ in mounts if fstype == "cgroup2"), None), own.get(""))
    v1_memory = v1_cpu = None
    for key, path in own.items():
        parts = key.split(",")
        for m, fstype, opts in mounts:
            if fstype == "cgroup" and set(parts) <= set(opts.split(",")) and key:
                if "memory" in parts:
                    v1_memory = v1_memory or scope_in(m, path)
                if "cpuacct" in parts:
                    v1_cpu = v1_cpu or scope_in(m, path)
    cpu = tuple(d for d in (job_dir if job_dir and os.path.exists(os.path.join(job_dir, "cpu.stat")) else None,
                            v2) if d)
    return Places(memory=(v2,) if v2 else (), cpu=cpu, v1_memory=(v1_memory,) if v1_memory else (),
                  v1_cpu=(v1_cpu,) if v1_cpu else ())


def oom_kills(places: Places) -> int | None:
    """How many processes of the scope the kernel's OOM killer has killed so far."""
    for d in places.memory:
        n = _keyed(_read(os.path.join(d, "memory.events")), "oom_kill")
        if n is not None:
            return n
    for d in places.v1_memory:
        n = _keyed(_read(os.path.join(d, "memory.oom_control")), "oom_kill")
        if n is not None:
            return n
    return None


def cpu_seconds(places: Places) -> float | None:
    """CPU time (user + system) the job's cgroup has used, in seconds."""
    for d in places.cpu:
        usec = _keyed(_read(os.path.join(d, "cpu.stat")), "usage_usec")
        if usec is not None:
            return usec / 1e6
    for d in places.v1_cpu:
        ns = _number(_read(os.path.join(d, "cpuacct.usage")))
        if ns is not None:
            return ns / 1e9
    return None


def memory_peak(places: Places) -> int | None:
    """The most memory (bytes) the scope has used at once."""
    for d in places.memory:
        n = _number(_read(os.path.join(d, "memory.peak")))
        if n is not None:
            return n
    for d in places.v1_memory:
        n = _number(_read(os.path.join(d, "memory.max_usage_in_bytes")))
        if n is not None:
            return n
    return None
