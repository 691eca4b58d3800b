"""Starts and stops jobs' scopes and watches their monitors; says what happened and changes no job.

The engine decides; the runner does, and reports: `start` returns once the job's scope exists and its monitor
has the spec, or raises what went wrong as a type (scopes.UnitExists, scopes.SystemdUnavailable, another
scopes.SystemdError, MonitorDied); `observe` says where an active job stands (Ended with its monitor's
result, Leftovers while processes remain in its scope, Running, Gone). A monitor's exit is reported through
the `on_exit` given to `start`. gpusched.testing.FakeRunner does the same on a virtual clock.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from gpusched import cgroups, hooks, launch
from gpusched import config as configmod
from gpusched.cgroups import SLICE
from gpusched.gpus import device_nodes
from gpusched.log import Log
from gpusched.monitor import GO as monitor_go
from gpusched.model import Gpu, Job
from gpusched.scopes import SystemdError, UnitExists, Units
from gpusched.spawner import Spawner
from gpusched.store import Store

Watch = Callable[[int, Callable[[], None]], None]    # call fn once the process pid has exited


class MonitorDied(Exception):
    """The monitor died before it read its spec (killed, out of memory): nothing of the job runs."""

    def __init__(self, strerror: str | None):
        super().__init__(strerror)
        self.strerror = strerror


@dataclass(frozen=True)
class Ended:
    """The job's monitor recorded how this attempt ended, and its scope holds no process any more."""
    result: dict[str, Any]


@dataclass(frozen=True)
class Leftovers:
    """The monitor is done but processes remain in the scope: being killed; the job keeps its GPUs."""


@dataclass(frozen=True)
class Running:
    """The scope is up and no result yet."""


@dataclass(frozen=True)
class Gone:
    """No scope and no result (the monitor was killed, or the start never got that far)."""


Seen = Ended | Leftovers | Running | Gone


class NoAccount(Exception):
    """A hook's user doesn't exist (any more)."""


class Runner(Protocol):
    def account(self, uid: int) -> launch.Account | None: ...
    def start(self, job: Job, account: launch.Account, gpus: Sequence[Gpu], on_exit: Callable[[], None]) -> None: ...
    def stop(self, unit: str) -> bool: ...
    def kill(self, job: Job) -> None: ...
    def observe(self, job: Job) -> Seen: ...
    def watched(self) -> set[int]: ...
    def reap(self) -> None: ...
    def signal(self, job: Job, sig: int) -> int | None: ...
    def start_hook(self, hook: hooks.Hook, job_id: int, timeout: float) -> None: ...
    def can_mail(self) -> bool: ...


class ScopeRunner:
    def __init__(self, cfg: configmod.Config, store: Store, units: Units, spawner: Spawner, watch: Watch,
                 log: Log):
        self.cfg = cfg
        self.store = store
        self.units = units
        self.spawner = spawner
        self._watch_exit = watch
        self._log = log
        self._monitors: dict[int, int] = {}             # monitor pid -> job id (our own children, or the zygote's)
        self._killing: set[int] = set()                # jobs whose leftover processes are being killed

    def account(self, uid: int) -> launch.Account | None:
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return None
        return launch.Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)

    def start(self, job: Job, account: launch.Account, gpus: Sequence[Gpu], on_exit: Callable[[], None]) -> None:
        """Start a STARTING job (its record already on disk): a monitor, then its scope with the monitor in
        it, then the spec down the monitor's pipe, which lets the job begin. Raises scopes.SystemdError (its
        subclasses UnitExists and SystemdUnavailable included) or MonitorDied."""
        spec = job.spec
        assert spec is not None
        result_path = self.store.result_path(job.id, job.attempt, job.start_token)
        plan = launch.plan(job.id, job.attempt, spec, account, gpus, device_nodes(gpus), job.log, result_path,
                           max_log_size=self.cfg.max_log_size, log_min_free=self._log_floor())
        r, w = os.pipe()
        try:
            pid = self.spawner.spawn(r, result_path)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        # The spec goes first (one line), so the monitor opens the job's PAM session while systemd starts the
        # scope; GO after StartTransientUnit lets the job begin. w is closed on every path: at EOF without
        # GO the monitor exits without running anything.
        try:
            self._watch(pid, job.id, on_exit)
            self._send(w, json.dumps(plan.monitor).encode() + b"\n")
            self.units.start_scope(job.unit, pid, plan.properties)
            self._send(w, monitor_go)
        finally:
            os.close(w)

    @staticmethod
    def _send(fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            raise MonitorDied(e.strerror) from None

    def stop(self, unit: str) -> bool:
        """StopUnit: the unit's KillSignal, its grace, then SIGKILL. False if it is gone already."""
        return self.units.stop(unit)

    def kill(self, job: Job) -> None:
        """SIGKILL now, whatever the grace: the job's own cgroup (jobcgroup.py) where it has one, so that its
        monitor lives on to record the SIGKILL; else the whole scope, monitor included (then the record says
        killed after its grace)."""
        scope = cgroups.unit_dir(SLICE, job.unit)
        inner = os.path.join(scope, "job") if scope else None
        self._kill(job, inner if inner and os.path.isdir(inner) else scope)

    def observe(self, job: Job) -> Seen:
        result = self.store.read_result(job.id, job.attempt, job.start_token)
        if result is None:
            if self.units.alive(job.unit):
                return Running()
            # it may have ended between the two looks: its result lands before its scope goes
            result = self.store.read_result(job.id, job.attempt, job.start_token)
            if result is None:
                return Gone()
        return Leftovers() if self._scope_busy(job) else Ended(result)

    def signal(self, job: Job, sig: int) -> int | None:
        """Send `sig` to the job's main process only (the process its monitor forked: Slurm's `B:`), not to
        every process of the scope: a dataloader worker that doesn't trap it would die. Returns its pid; None
        when there is none now."""
        path = cgroups.unit_dir(SLICE, job.unit)
        pid = cgroups.main_process(path, job.uid)
        if pid is None:
            return None
        # through a pidfd, checked again once it is open: the pid can't be another process's by the time the
        # signal goes (the job's main process may end, and its pid be reused, between the look and the kill)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        try:
            if cgroups.main_process(path, job.uid) != pid:
                return None
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return None
        finally:
            os.close(fd)
        return pid

    def start_hook(self, hook: hooks.Hook, job_id: int, timeout: float) -> None:
        """Start a hook as a transient service of its own (hooks.py); raises NoAccount or a SystemdError."""
        try:
            account = pwd.getpwnam(hook.user)
        except KeyError:
            raise NoAccount(f"no such user: {hook.user}") from None
        workdir = account.pw_dir if os.path.isdir(account.pw_dir) else "/"
        # the user's hooks slice, bounding all their hooks together; made on first use (and again if an
        # administrator stopped it), kept while it exists
        slice_ = hooks.user_slice(account.pw_uid)
        try:
            self.units.start_service(slice_, hooks.slice_properties(hook.user, account.pw_uid))
        except UnitExists:
            pass
        self.units.start_service(hook.unit, hooks.properties(hook, job_id, workdir, timeout, slice_))

    def can_mail(self) -> bool:
        return os.access(hooks.SENDMAIL, os.X_OK)

    def watched(self) -> set[int]:
        """Jobs whose monitor is ours to watch: their end is reported, no need to poll them."""
        return set(self._monitors.values())

    def reap(self) -> None:
        self.spawner.reap()

    # --- internals -------------------------------------------------------------------------------------

    def _watch(self, pid: int, job_id: int, on_exit: Callable[[], None]) -> None:
        self._monitors[pid] = job_id

        def _monitor_exited() -> None:
            if self._monitors.pop(pid, None) is not None:
                on_exit()
        self._watch_exit(pid, _monitor_exited)

    def _log_floor(self) -> int:
        try:
            st = os.statvfs(self.store.logs_dir)
        except OSError:
            return 0
        return configmod.log_floor(self.cfg, st.f_blocks * st.f_frsize)

    def _scope_busy(self, job: Job) -> bool:
        """True while the job's scope still holds a process after its monitor is done: then kill them all
        and keep the job's GPUs until the kernel says the scope is empty (the engine looks again every tick)."""
        left = cgroups.pids(cgroups.unit_dir(SLICE, job.unit))
        if not left:
            self._killing.discard(job.id)
            return False
        if job.id not in self._killing:
            self._killing.add(job.id)
            self._log(f"job {job.id} ended but {len(left)} process(es) remain in {job.unit}; killing them "
                      f"before its GPUs are freed", 4, job=job)
        self._kill(job, cgroups.unit_dir(SLICE, job.unit))
        return True

    def _kill(self, job: Job, cgroup: str | None) -> None:
        """SIGKILL what runs in `cgroup` straight through cgroupfs; systemd's KillUnit when there is no such
        cgroup here. KillUnit fails on a scope with a delegated subtree under systemd 252 ("Input/output
        error"), and cgroup.kill is atomic besides."""
        if cgroups.kill(cgroup):
            return
        try:
            self.units.kill(job.unit, signal.SIGKILL)
        except SystemdError as e:
            self._log(f"can't kill the processes of job {job.id}: {e}", 3, job=job)
