"""The cgroup a job's processes run in, so that when the job's main process ends, everything it left behind
is killed: also a process that forks and exits in a loop to keep changing its pid, which outruns any sweep
of "kill every pid listed".

The best way the machine has, chosen once per job by the monitor (which runs as root inside the job's scope):

- "kill", cgroup v2 (the unified hierarchy; also the hybrid layout's /sys/fs/cgroup/unified) with cgroup.kill
  (Linux 5.14+): the job runs in a child cgroup `job` of its scope and `job/cgroup.kill` kills all of it at
  once, forks in flight included. Not the scope itself: cgroup.kill there would kill the monitor too, which
  must live on to record the result. The scope is Delegate=yes (launch.py), so systemd leaves the child alone;
  the monitor stays in the scope's own cgroup, which v2's no-internal-processes rule allows because no
  controller is enabled in the scope's subtree_control, and the scope's limits (memory, CPU, tasks, devices)
  apply to the whole subtree.
- "freeze": cgroup v2 without cgroup.kill (the same child cgroup, frozen with cgroup.freeze), or cgroup v1 with
  a writable freezer hierarchy (a freezer cgroup of the job's own, freezer/gpusched.slice/<unit>): freeze it,
  SIGKILL every pid in it (a frozen process can't fork), thaw it; repeat until it is empty.
- "sweep", when neither can be had: SIGKILL every pid in the scope but the monitor, again and again until only
  the monitor is left. A fork loop can outrun it; it gives up after a bounded time and says how many are left.

Nothing here raises into the monitor: a cgroup that can't be made means the next way is used, and a job
whose cgroup can't be entered fails to start with the reason (rather than run where it can't be stopped).
"""

from __future__ import annotations

import os
import signal
import time

from gpusched.cgroups import SLICE, alive

V1_FREEZER_PARENT = SLICE


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields, tail = pre.split(), post.split()
                if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                    out.append((fields[4], tail[0], tail[2]))
    except OSError:
        pass
    return out


def _own_cgroups() -> dict[str, str]:
    """hierarchy key -> path, from /proc/self/cgroup: "" for v2's "0::" line, else the controller list."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            _hid, controllers, path = line.split(":", 2)
            out[controllers] = path
    return out


def _read_pids(procs: str) -> set[int]:
    try:
        with open(procs) as f:
            return {int(p) for p in f.read().split()}
    except (FileNotFoundError, ProcessLookupError):
        return set()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class JobCgroup:
    """Where the job runs and how its leftovers are killed. `mode` is "kill", "freeze", "sweep" or "none"."""

    def __init__(self, mode: str, procs: str | None, directory: str | None = None, *, v2: bool = True,
                 scope_procs: str | None = None, note: str = ""):
        self.mode = mode
        self.procs = procs                  # the job's cgroup.procs (the scope's own, in "sweep" mode)
        self.directory = directory          # the cgroup made for the job, removed at the end
        self.v2 = v2
        self.scope_procs = scope_procs      # the scope's own cgroup.procs: anything there but the monitor is swept
        self.note = note                    # why a better way wasn't used
        self.killed: set[int] = set()       # every pid found and killed so far

    def enter(self) -> None:
        """In the job's child, before it drops root: move into the job's cgroup. Raises OSError."""
        if self.directory is not None:
            _write(os.path.join(self.directory, "cgroup.procs"), "0")

    def pids(self) -> set[int]:
        """The job's processes still alive (never the monitor)."""
        found = set()
        for procs in {self.procs, self.scope_procs} - {None}:
            found |= _read_pids(procs)      # type: ignore[arg-type]
        found.discard(os.getpid())
        return {p for p in found if alive(p)}

    def kill_all(self, timeout: float = 10.0) -> tuple[int, int]:
        """Kill every process of the job still there and wait until they are gone. Returns (killed, left):
        how many were found and killed (by this call and earlier ones), and how many were still there when it
        gave up after `timeout`."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            pids = self.pids()
            if not pids:
                return len(self.killed), 0
            self.killed |= pids
            try:
                if self.mode == "kill":
                    _write(os.path.join(self.directory, "cgroup.kill"), "1")     # type: ignore[arg-type]
                    _kill(self._outside())
                elif self.mode == "freeze":
                    self._freeze_and_kill(deadline)
                else:
                    _kill(pids)
            except OSError:
                _kill(pids)                 # the cgroup went away or can't be written: at least the sweep
            if time.monotonic() >= deadline:
                return len(self.killed), len(self.pids())
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _outside(self) -> set[int]:
        """Processes in the scope's own cgroup but not the job's (none, unless something moved them)."""
        if self.scope_procs is None or self.scope_procs == self.procs:
            return set()
        return {p for p in _read_pids(self.scope_procs) - {os.getpid()} if alive(p)}

    def _freeze_and_kill(self, deadline: float) -> None:
        assert self.directory is not None
        freeze = os.path.join(self.directory, "cgroup.freeze" if self.v2 else "freezer.state")
        _write(freeze, "1" if self.v2 else "FROZEN")
        try:
            while not self._frozen() and time.monotonic() < deadline:
                time.sleep(0.001)
            _kill(self.pids())                  # frozen: nobody can fork meanwhile
        finally:
            _write(freeze, "0" if self.v2 else "THAWED")       # the SIGKILLs land as they thaw

    def _frozen(self) -> bool:
        assert self.directory is not None
        try:
            if self.v2:
                with open(os.path.join(self.directory, "cgroup.events")) as f:
                    return "frozen 1" in f.read().split("\n")
            with open(os.path.join(self.directory, "freezer.state")) as f:
                return f.read().strip() == "FROZEN"
        except OSError:
            return True

    def remove(self) -> None:
        """Remove the cgroup made for the job (it must be empty; systemd removes the scope's)."""
        if self.directory is None:
            return
        try:
            os.rmdir(self.directory)
        except OSError:
            pass


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def prepare(unit: str) -> JobCgroup:
    """Make the job's cgroup (called by the monitor as root, once it is in the scope `unit`)."""
    notes = []
    try:
        own = _own_cgroups()
        mounts = _mounts()
    except OSError as e:
        return JobCgroup("none", None, note=f"can't read /proc/self/cgroup: {e.strerror}")
    v2_mount = next((m for m, fstype, _ in mounts if fstype == "cgroup2"), None)
    v2_path = own.get("")
    scope_procs = None
    if v2_mount and v2_path and v2_path.rstrip("/").endswith("/" + unit):
        scope = v2_mount + v2_path.rstrip("/")
        scope_procs = os.path.join(scope, "cgroup.procs")
        if os.path.exists(scope_procs):
            job = os.path.join(scope, "job")
            try:
                _mkdir(job)
            except OSError as e:
                notes.append(f"can't make {job}: {e.strerror}")
            else:
                for mode, control in (("kill", "cgroup.kill"), ("freeze", "cgroup.freeze")):
                    if os.path.exists(os.path.join(job, control)):
                        return JobCgroup(mode, os.path.join(job, "cgroup.procs"), job, scope_procs=scope_procs)
                os.rmdir(job)
                notes.append("cgroup v2 without cgroup.kill or cgroup.freeze")
    systemd_path = own.get("name=systemd")
    systemd_mount = next((m for m, fstype, opts in mounts
                          if fstype == "cgroup" and "name=systemd" in opts.split(",")), None)
    if scope_procs is None and systemd_mount and systemd_path and systemd_path.rstrip("/").endswith("/" + unit):
        scope_procs = os.path.join(systemd_mount + systemd_path.rstrip("/"), "cgroup.procs")
    freezer = next((m for m, fstype, opts in mounts if fstype == "cgroup" and "freezer" in opts.split(",")), None)
    if freezer:
        job = os.path.join(freezer, V1_FREEZER_PARENT, unit)
        try:
            _mkdir(os.path.dirname(job))
            _mkdir(job)
        except OSError as e:
            notes.append(f"can't make {job}: {e.strerror}")
        else:
            return JobCgroup("freeze", os.path.join(job, "cgroup.procs"), job, v2=False,
                             scope_procs=scope_procs, note="; ".join(notes))
    if scope_procs and os.path.exists(scope_procs):
        return JobCgroup("sweep", scope_procs, note="; ".join(notes))
    notes.append(f"no cgroup of {unit} found")
    return JobCgroup("none", None, note="; ".join(notes))


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass

