"""The per-job monitor (the conmon pattern): one short-lived process per job, exec'd fresh by the daemon.

It reads the job's launch spec (JSON) from stdin. The daemon writes it once it has asked systemd to put this
process into the job's scope, and the monitor waits until it is there, so the job starts inside the scope;
an empty stdin means the daemon gave up (or died), and nothing runs (the result file says "not_started"). The monitor then starts the job as its user in a new session, copies its output to journald
and the job's log file, reaps it and writes the exit code or signal to the result file atomically. It stays
root (to write the result) and ignores the stop signal, so it outlives a StopUnit long enough to record how
the job ended; it lives outside gpusched.service, so the daemon can restart or die without touching the job.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
import traceback
from typing import Callable

from gpusched import acl, cgroupusage, fds, gpuoom, jobcgroup, joblog, journal, output, pam, wakeup
from gpusched.atomicfile import Reserved, atomic_write

SETUP_FAILED = 127
GO = b"go"                 # the daemon's word, after the spec's line, that the job's scope is up


def _wait_in_unit(unit: str, timeout: float = 10.0) -> bool:
    """Block until systemd has moved this process into the job's scope (StartTransientUnit returns before
    the move is certain to be done). False if that doesn't happen in time."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        if f"/{unit}" in _own_cgroup():
            return True
        if time.monotonic() > deadline:
            return False
        tries += 1                                    # it takes a few ms: look often, then less so
        time.sleep(0.0005 if tries < 40 else 0.01)


OOM_SCORE_ADJ = "/proc/self/oom_score_adj"


def _oom_shield() -> str | None:
    """The kernel's OOM killer must pick the job, never its monitor (the job's end would go unrecorded): the
    monitor takes -1000 and the job gets back the value it had. Returns that value (None: left as it was)."""
    try:
        with open(OOM_SCORE_ADJ) as f:
            before = f.read().strip()
        with open(OOM_SCORE_ADJ, "w") as f:
            f.write("-1000")
        return before
    except OSError:
        return None


def _child(spec: dict, out_fd: int, err_w: int, cgroup: jobcgroup.JobCgroup, oom_score: str | None = None) -> None:
    """In the forked child: join the job's cgroup, become the user, enter the workdir, exec. Never returns."""
    try:
        os.setsid()                                   # own session and process group
        if oom_score is not None:                     # as root: the job must not keep the monitor's shield
            with open(OOM_SCORE_ADJ, "w") as f:
                f.write(oom_score)
        try:
            cgroup.enter()                            # as root, before anything of the user's runs
        except OSError as e:
            raise OSError(f"cannot enter the job's cgroup {cgroup.directory}: {e.strerror}") from None
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        keep = (0, 1, 2, err_w)
        if spec.get("setup_fd"):
            # an interactive job's relay (ptyrelay.py) says on this copy of the error pipe why it could not
            # attach, or closes it once attached: "could not start" then names the reason, as an exec's would
            os.dup2(err_w, spec["setup_fd"])
            os.set_inheritable(spec["setup_fd"], True)
            keep += (spec["setup_fd"],)
        # exactly 0, 1 and 2 reach the job (and the relay's setup fd): the error pipe is CLOEXEC, and closes
        # itself at a successful exec
        fds.close_all_but(keep)
        uid, gid = spec["uid"], spec["gid"]
        if os.getuid() == 0:
            os.initgroups(spec["user"], gid)
            os.setgid(gid)
            os.setuid(uid)
        os.umask(0o022)
        try:
            os.chdir(spec["workdir"])                 # as the user: they must be able to enter it
        except OSError as e:
            raise OSError(f"cannot enter workdir {spec['workdir']}: {e.strerror}") from None
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT,
                  signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        argv = spec["argv"]
        try:
            os.execvpe(argv[0], argv, spec["env"])
        except OSError as e:
            raise OSError(f"cannot run {argv[0]}: {e.strerror}") from None
    except BaseException as e:  # noqa: BLE001 - anything here must reach the parent, then exit
        try:
            os.write(err_w, str(e).encode()[:4000])
        finally:
            os._exit(SETUP_FAILED)


class _Output:
    """The job's output, to the log file as it is and to journald line by line."""

    def __init__(self, spec: dict, fields: dict):
        self.fields = fields
        self.lines = output.LineSplitter()
        self.gpu_oom = gpuoom.Matcher()           # the first GPU out-of-memory message in the output
        self.log: joblog.JobLog | None = None
        try:
            fd = os.open(spec["log"], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            # root's, read-only for the job's user (an ACL): a user who owned it could append to it past
            # max_log_size and log_min_free ($GPUSCHED_LOG names it). Without ACLs, the user's (store.py
            # says so in the journal once)
            acl.share(fd, spec["uid"], 0o600)
            self.log = joblog.JobLog(fd, spec.get("max_log_size", 0), spec.get("log_min_free", 0), say=self.say)
        except OSError as e:                          # no log, but the job still runs and is still recorded
            self.say(f"gpusched: can't open the log {spec['log']} ({e.strerror}); output goes to the journal only")

    def say(self, text: str, priority: int = 4) -> None:
        journal.send(text, priority, **self.fields)

    def data(self, data: bytes) -> None:
        if self.log:
            self.log.write(data)
        for line in self.lines.feed(data):
            self.gpu_oom.feed(line)
            journal.send(line, 6, **self.fields)

    def flush(self) -> None:
        """The job's unfinished last line, to the journal (and the matcher)."""
        for line in self.lines.finish():
            self.gpu_oom.feed(line)
            journal.send(line, 6, **self.fields)

    def own(self, text: str, priority: int = 6) -> None:
        """A line of the monitor's own, to both."""
        self.flush()                                  # the job's unfinished last line goes first
        if self.log:
            self.log.line(text)
        journal.send(text, priority, **self.fields)

    def close(self) -> None:
        self.flush()
        if self.log:
            self.log.finish()
            os.close(self.log.fd)
            self.log = None


def run(spec: dict, go: Callable[[], bool] = lambda: True) -> dict:
    """Run the job of `spec` to its end and record the result. `go` blocks until the daemon says the job's
    scope is up and this process is in it (True), or that it gave up (False: nothing runs)."""
    fields = {"GPUSCHED_JOB_ID": spec["id"], "GPUSCHED_JOB_NAME": spec["name"], "GPUSCHED_USER": spec["user"],
              "GPUSCHED_ATTEMPT": spec["attempt"], "SYSLOG_IDENTIFIER": spec["ident"]}
    if spec.get("unit"):
        # `journalctl -u <scope>` finds root's lines that name the unit as their object: journald caches who
        # sent what by pid, and this process spoke (PAM, below) before systemd moved it into the scope
        fields["OBJECT_SYSTEMD_UNIT"] = spec["unit"]
    # --- PAM: a session of the job's own (gpusched/pam.py), opened here so that the job inherits it. The
    # slowest step of a start, so it runs while systemd starts the scope (nothing in it depends on the cgroup)
    refusal = ""
    try:
        session: pam.Session | None = _open_session(spec, fields)
    except pam.SessionError as e:
        session, refusal = None, str(e)
    if not go():
        if session:
            session.close()
        return _not_started(spec, fields)
    out = _Output(spec, fields)
    # The result's blocks are taken now, while there is room: whatever fills the disk later (this job's
    # output, anyone's), the job's end can be recorded and its GPUs freed
    try:
        slot: Reserved | None = Reserved(spec["result"])
    except OSError as e:
        slot = None
        out.say(f"gpusched: job {spec['id']}: can't reserve room for its result ({e.strerror})", 3)
    cgroup = jobcgroup.prepare(spec["unit"])
    if cgroup.mode not in ("kill", "freeze"):
        out.say(f"gpusched: job {spec['id']}: no cgroup to kill its leftovers at once ({cgroup.note}); "
                f"they will be swept")

    if session is None:
        return _refused(spec, fields, out, cgroup, refusal, slot)
    spec = {**spec, "env": pam.merge_env(spec["env"], session.env)}
    places = cgroupusage.locate(spec["unit"], cgroup.directory)
    oom_before = cgroupusage.oom_kills(places)              # the scope's count: a kill during the job raises it

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    wake_r = wakeup.install()
    signal.signal(signal.SIGCHLD, lambda *_: None)    # wakes the select below when the job exits
    oom_score = _oom_shield() if os.getuid() == 0 else None
    started = time.time()
    pid = os.fork()
    if pid == 0:
        _child(spec, out_w, err_w, cgroup, oom_score)           # closes every fd but its 0, 1, 2 (PAM's too)
    session.restore_monitor()                         # PAM: the user's limits were for the job, not the monitor
    os.close(out_w)
    os.close(err_w)
    error = b""
    while chunk := os.read(err_r, 4096):             # EOF at a successful exec (CLOEXEC) or the child's exit
        error += chunk[:4096 - len(error)]
    os.close(err_r)
    fields["SYSLOG_PID"] = pid
    if error:
        out.own("gpusched: " + error.decode("utf-8", "replace"))

    reaped: list[int] = []
    internal = ""
    try:
        _copy_output(pid, out_r, wake_r, out, cgroup, reaped)
    except Exception:  # noqa: BLE001 - a bug here must not lose the job's end: record what can be recorded
        internal = traceback.format_exc(limit=5)[-2000:]
        out.say(f"gpusched: monitor of job {spec['id']} failed while copying output: {internal}", 3)
        if not reaped:                                # its output pipe is closed: it can't block on it
            reaped.append(os.waitpid(pid, 0)[1])
    status = reaped[0]
    killed, left = cgroup.kill_all()
    used = _used(places, oom_before)                  # before the job's cgroup goes, with its counts
    cgroup.remove()
    if killed:
        out.own(f"gpusched: killed {killed} process(es) the job left behind")
    if left:
        out.own(f"gpusched: {left} process(es) of the job could not be killed")
    ended = time.time()
    result: dict = {"pid": pid, "started": started, "ended": ended}
    if error:
        result["exit_code"] = SETUP_FAILED
        result["error"] = error.decode("utf-8", "replace")
        summary = f"could not start: {result['error']}"
    elif os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        result["signal"] = sig.name
        summary = f"killed by {sig.name}"
    else:
        result["exit_code"] = os.WEXITSTATUS(status)
        summary = f"exited with code {result['exit_code']}"
    result.update(used.counts)
    out.flush()                                       # the matcher has seen every line of the job's
    failed = not error and (os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0)
    if failed and used.oom_killed:
        result["outcome"] = "oom"
        summary = f"was killed by the kernel: out of memory ({summary})"
    elif failed and out.gpu_oom.found is not None:
        result["outcome"] = "gpu_oom"
        result["gpu_oom"] = out.gpu_oom.found
        summary = f"ran out of GPU memory ({out.gpu_oom.pattern}) and {summary}"
    if left:
        result["leftovers"] = left
    if internal:
        result["monitor_error"] = internal
    out.own(f"gpusched: job {spec['id']} {summary}")
    out.close()
    _write_result(spec["result"], result, fields, slot)
    session.close()                                   # PAM: after the result, so a slow module can't delay it
    return result


class _Used:
    """What the job used (cpu_seconds, memory_peak: the result's fields) and whether the kernel OOM-killed
    any of its processes."""

    def __init__(self, counts: dict, oom_killed: bool):
        self.counts = counts
        self.oom_killed = oom_killed


def _used(places: cgroupusage.Places, oom_before: int | None) -> _Used:
    """Read just before the job's cgroup is removed. Where the cgroup has no count (a box whose controllers
    are not delegated), the job's own rusage stands in: the CPU time and the largest peak RSS of the job's
    processes that were waited for (its leftovers, killed, are not in it)."""
    counts: dict = {}
    try:
        cpu, peak = cgroupusage.cpu_seconds(places), cgroupusage.memory_peak(places)
        oom_after = cgroupusage.oom_kills(places)
    except Exception:  # noqa: BLE001 - a count is worth less than the job's result
        cpu = peak = oom_after = None
    if cpu is None or peak is None:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)          # the job is this process's only child
        cpu = ru.ru_utime + ru.ru_stime if cpu is None else cpu
        peak = ru.ru_maxrss * 1024 if peak is None and ru.ru_maxrss > 0 else peak
    if cpu is not None:
        counts["cpu_seconds"] = round(cpu, 6)
    if peak is not None:
        counts["memory_peak"] = peak
    return _Used(counts, oom_after is not None and oom_after > (oom_before or 0))


def _open_session(spec: dict, fields: dict) -> pam.Session:
    """The job's PAM session; the journal says which path ran (PAM, or gpusched's own keyring/loginuid)."""
    ids = {k: fields[k] for k in ("GPUSCHED_JOB_ID", "OBJECT_SYSTEMD_UNIT") if k in fields}
    ids["GPUSCHED_USER"] = spec["user"]

    def log(message: str, priority: int) -> None:
        journal.send(f"gpusched: job {spec['id']}: {message}", priority, **ids)

    session = pam.open_session(spec.get("pam_service", pam.SERVICE), spec["user"], spec["uid"], spec["gid"], log)
    journal.send(f"gpusched: job {spec['id']} session for {spec['user']}: {session.describe}", 6,
                 GPUSCHED_EVENT="session", **ids)
    return session


def _refused(spec: dict, fields: dict, out: _Output, cgroup: jobcgroup.JobCgroup, reason: str,
             slot: Reserved | None = None) -> dict:
    """The account or its session was refused (PAM): the job does not start, and its record says why."""
    now = time.time()
    out.own(f"gpusched: job {spec['id']} could not start: {reason}", 4)
    out.close()
    cgroup.remove()
    result = {"pid": 0, "started": now, "ended": now, "exit_code": SETUP_FAILED, "error": reason}
    _write_result(spec["result"], result, fields, slot)
    return result


def _copy_output(pid: int, out_r: int, wake_r: int, out: _Output, cgroup: jobcgroup.JobCgroup,
                 reaped: list[int]) -> None:
    """Copy the job's output until it has exited and the pipe is drained; its wait status goes to `reaped`.

    When the job's main process ends, the job has ended: what it left in its cgroup is killed at once, and
    the pipe is read to its end (or while output keeps coming, for up to a second, if a leftover could not be
    killed and holds it open). Closes out_r, also on an error: the job then gets EPIPE, never a full pipe."""
    try:
        os.set_blocking(out_r, False)
        deadline = 0.0
        while True:
            ready, _, _ = select.select([out_r, wake_r], [], [], 0.1 if reaped else None)
            if wake_r in ready:
                wakeup.drain(wake_r)
            if not reaped:
                done, raw_status = os.waitpid(pid, os.WNOHANG)
                if done:
                    reaped.append(raw_status)
                    deadline = time.monotonic() + 1.0
                    cgroup.kill_all(timeout=1.0)      # its leftovers can't write more output meanwhile
            if out_r in ready:
                try:
                    data = os.read(out_r, 65536)
                except BlockingIOError:
                    data = None
                if data == b"":                       # EOF: every writer is gone
                    if not reaped:
                        reaped.append(os.waitpid(pid, 0)[1])
                    return
                if data:
                    out.data(data)
                    if not reaped or time.monotonic() < deadline:
                        continue
            if reaped and (out_r not in ready or time.monotonic() >= deadline):
                return
    finally:
        os.close(out_r)


def _read_until(fd: int, end: bytes | None, data: bytes = b"") -> tuple[bytes, bytes]:
    """Read fd up to `end` (not included) or EOF; returns that and what was read past it."""
    while end is None or end not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, tail = data.partition(end)
    return head, tail


def _not_started(spec: dict, fields: dict) -> dict:
    """The daemon gave up on this start, or the process never got into the job's scope: nothing runs."""
    result = {"not_started": True}
    _write_result(spec["result"], result, {"GPUSCHED_JOB_ID": spec["id"]})
    return result


def _own_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


def _write_result(path: str, result: dict, fields: dict, slot: Reserved | None = None) -> None:
    """The result must land, or the job's end is lost: into the room reserved at the start, else (no room
    then) keep trying on a full disk, for up to a day."""
    data = json.dumps(result).encode()
    if slot is not None:
        try:
            slot.commit(data)
            return
        except OSError as e:
            journal.send(f"gpusched: the reserved result of job {fields['GPUSCHED_JOB_ID']} failed ({e.strerror})",
                         3, **fields)
            slot.abandon()
    for attempt in range(86400):
        try:
            atomic_write(path, data, mode=0o600)
            return
        except OSError as e:
            if attempt == 0:
                journal.send(f"gpusched: can't write the result of job {fields['GPUSCHED_JOB_ID']} "
                             f"({e.strerror}); retrying every second", 3, **fields)
            time.sleep(1)


def main(result_path: str | None = None) -> int:
    # Started by the zygote or posix_spawn'ed by the daemon: either way it may hold fds that were never meant
    # for it (and through it, for the job). Keep stdin (the spec), stdout and stderr (the daemon's journal
    # stream, for tracebacks).
    fds.close_all_but((0, 1, 2))
    raw, rest = _read_until(0, b"\n")                # fd 0, not sys.stdin: a zygote's child has no fresh one
    if not raw:
        # the daemon gave up on this start (or died first): run nothing, and say so where it will look
        if result_path:
            _write_result(result_path, {"not_started": True}, {"GPUSCHED_JOB_ID": "?"})
        return 0
    spec = json.loads(raw)

    def go() -> bool:
        """The daemon's word after StartTransientUnit: GO, or EOF without it (it gave up, or died); then
        this process must be in the job's scope, so that the job starts inside it."""
        more, _ = _read_until(0, None, rest)
        if more != GO:
            return False
        if _wait_in_unit(spec["unit"]):
            return True
        journal.send(f"gpusched monitor for job {spec['id']} never got into {spec['unit']}; not starting it", 3,
                     GPUSCHED_JOB_ID=spec["id"])
        return False
    # Survive the stop signal long enough to record how the job ended; systemd sends SIGKILL after the grace.
    for s in {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT,
              signal.Signals(spec.get("stop_signal", 15))}:
        signal.signal(s, lambda *_: None)
    return 0 if "not_started" not in run(spec, go) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
