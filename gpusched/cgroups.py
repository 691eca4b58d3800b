"""Reads a unit's cgroup straight from cgroupfs: which processes are still in it.

The daemon frees a job's GPUs only once its scope holds no process: systemd's view of a scope ("active") lags
the kernel's, and a job's leftover process that forks in a loop can outlive a kill sweep. Works on the
unified hierarchy (cgroup v2), the hybrid one, and v1's name=systemd hierarchy (the dev box).
"""

from __future__ import annotations

import os
import signal

SLICE = "gpusched.slice"   # every job's scope lives here (the unit file units/gpusched.slice)
ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup")


def _base() -> str | None:
    for root in ROOTS:
        if os.path.exists(os.path.join(root, "cgroup.procs")) and (
                root != "/sys/fs/cgroup" or os.path.exists("/sys/fs/cgroup/cgroup.controllers")):
            return root
    return None


def unit_dir(slice_: str, unit: str) -> str | None:
    base = _base()
    return os.path.join(base, slice_, unit) if base else None


def pids(path: str | None) -> set[int] | None:
    """Every pid in the cgroup at `path` and below it; None if it doesn't exist (or can't be read)."""
    if path is None or not os.path.isdir(path):
        return None
    found: set[int] = set()
    try:
        for dirpath, _dirs, files in os.walk(path):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        found.update(int(p) for p in f.read().split())
                except FileNotFoundError:
                    pass                      # removed meanwhile
    except OSError:
        return None
    return {pid for pid in found if alive(pid)}


def kill(path: str | None) -> bool:
    """SIGKILL every process in the cgroup at `path` and below: at once through cgroup.kill where the kernel
    has it (v2, Linux 5.14+; a process forking in a loop can't escape it), else one sweep of the pids listed
    (the caller looks again later). False if there is no such cgroup."""
    if path is None or not os.path.isdir(path):
        return False
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
        return True
    except OSError:
        pass
    for pid in pids(path) or ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def alive(pid: int) -> bool:
    """Not a zombie: a process that just exited (or was killed) is listed until its parent reaps it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _proc(pid: int) -> tuple[int, int] | None:
    """(parent pid, real uid) of a process, from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return ppid, int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def pick_main(info: dict[int, tuple[int, int]], top: set[int], uid: int) -> int | None:
    """The job's main process among a scope's processes (pid -> (parent pid, uid)): the child of the job's
    monitor, which is the root process in the scope's own cgroup whose parent is outside the scope (the zygote,
    the daemon, or init after they died), once it runs as the job's user `uid` (before, it is the monitor's
    fork on its way to exec the job: a signal then would kill it, trap or not). Pure, tested alone."""
    monitors = {p for p in top if p in info and info[p][1] == 0 and info[p][0] not in info}
    children = sorted(p for p, (ppid, puid) in info.items() if ppid in monitors and p not in monitors
                      and puid == uid)
    return children[0] if children else None


def main_process(path: str | None, uid: int) -> int | None:
    """The pid of the main process of the job whose scope's cgroup is at `path` (the process its monitor
    forked), running as `uid`, found from cgroupfs and /proc alone, so that it works after a daemon restart.
    None: none now."""
    every = pids(path)
    if not every or path is None:
        return None
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            top = {int(p) for p in f.read().split()}
    except (OSError, ValueError):
        return None
    info = {p: i for p in every if (i := _proc(p)) is not None}
    return pick_main(info, top, uid)
