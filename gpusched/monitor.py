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
import select
import signal
import sys
import time

from gpusched import journal, pam
from gpusched.atomicfile import atomic_write

SETUP_FAILED = 127


def _wait_in_unit(unit: str, timeout: float = 10.0) -> bool:
    """Block until systemd has moved this process into the job's scope (StartTransientUnit returns before
    the move is certain to be done). False if that doesn't happen in time."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        with open("/proc/self/cgroup") as f:
            if f"/{unit}" in f.read():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def _child(spec: dict, out_fd: int, err_w: int) -> None:
    """In the forked child: become the user, enter the workdir, exec. Never returns."""
    try:
        os.setsid()                                   # own session and process group
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
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


def _cgroup_procs_file() -> str | None:
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        candidates = []
        if hierarchy == "0":
            candidates = [f"/sys/fs/cgroup{path}/cgroup.procs", f"/sys/fs/cgroup/unified{path}/cgroup.procs"]
        elif controllers == "name=systemd":
            candidates = [f"/sys/fs/cgroup/systemd{path}/cgroup.procs"]
        for c in candidates:
            if os.path.exists(c):
                return c
    return None


def _kill_leftovers() -> int:
    """When the job's main process has ended, the job has ended: kill what it left in its scope (background
    children would otherwise keep the scope, and its GPUs, busy). Returns how many were killed."""
    path = _cgroup_procs_file()
    if path is None:
        return 0
    killed: set[int] = set()
    for _ in range(10):
        with open(path) as f:
            pids = {int(p) for p in f.read().split()} - {os.getpid()}
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return len(killed)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run(spec: dict) -> dict:
    fields = {"GPUSCHED_JOB_ID": spec["id"], "GPUSCHED_JOB_NAME": spec["name"], "GPUSCHED_USER": spec["user"],
              "GPUSCHED_ATTEMPT": spec["attempt"], "SYSLOG_IDENTIFIER": spec["ident"]}
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchown(log_fd, spec["uid"], 0)
    os.fchmod(log_fd, 0o600)

    # --- PAM: a session of the job's own (gpusched/pam.py), opened here so that the job inherits it ---
    try:
        session = _open_session(spec, fields)
    except pam.SessionError as e:
        return _refused(spec, fields, log_fd, str(e))
    spec = {**spec, "env": pam.merge_env(spec["env"], session.env)}
    # ---

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)    # wakes the select below when the job exits
    started = time.time()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _child(spec, out_w, err_w)
    session.restore_monitor()                         # PAM: the user's limits were for the job, not the monitor
    os.close(out_w)
    os.close(err_w)
    error = b""
    while chunk := os.read(err_r, 4096):             # EOF at a successful exec (CLOEXEC) or the child's exit
        error += chunk
    os.close(err_r)
    fields["SYSLOG_PID"] = pid

    def emit(line: bytes) -> None:
        try:
            os.write(log_fd, line + b"\n")
        except OSError:
            pass                                      # a full disk loses log lines, never the job
        journal.send(line, 6, **fields)

    if error:
        emit(b"gpusched: " + error)

    # Copy output until the job has exited and the pipe is drained. Background children that keep the pipe
    # open don't hold the monitor for long: once the job itself is reaped, read what comes within a second.
    os.set_blocking(out_r, False)
    buf = b""
    status = None
    deadline = None
    while True:
        ready, _, _ = select.select([out_r, wake_r], [], [], None if status is None else 0.1)
        if wake_r in ready:
            _drain(wake_r)
        if status is None:
            done, raw_status = os.waitpid(pid, os.WNOHANG)
            if done:
                status, deadline = raw_status, time.monotonic() + 1.0
        if out_r in ready:
            try:
                data = os.read(out_r, 65536)
            except BlockingIOError:
                data = None
            if data == b"":                           # EOF: every writer is gone
                if status is None:
                    status = os.waitpid(pid, 0)[1]
                break
            if data:
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    emit(line)
                if deadline is None or time.monotonic() < deadline:
                    continue
        if status is not None and (out_r not in ready or time.monotonic() >= deadline):
            break
    os.close(out_r)
    if buf:
        emit(buf)

    leftovers = _kill_leftovers()
    if leftovers:
        emit(f"gpusched: killed {leftovers} process(es) the job left behind".encode())
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
    emit(f"gpusched: job {spec['id']} {summary}".encode())
    os.close(log_fd)
    _write_result(spec["result"], result, fields)
    session.close()                                   # PAM: after the result, so a slow module can't delay it
    return result


def _open_session(spec: dict, fields: dict) -> pam.Session:
    """The job's PAM session; the journal says which path ran (PAM, or gpusched's own keyring/loginuid)."""
    ids = {"GPUSCHED_JOB_ID": fields["GPUSCHED_JOB_ID"], "GPUSCHED_USER": spec["user"]}

    def log(message: str, priority: int) -> None:
        journal.send(f"gpusched: job {spec['id']}: {message}", priority, **ids)

    session = pam.open_session(spec.get("pam_service", pam.SERVICE), spec["user"], spec["uid"], spec["gid"], log)
    journal.send(f"gpusched: job {spec['id']} session for {spec['user']}: {session.describe}", 6,
                 GPUSCHED_EVENT="session", **ids)
    return session


def _refused(spec: dict, fields: dict, log_fd: int, reason: str) -> dict:
    """The account or its session was refused (PAM): the job does not start, and its record says why."""
    now = time.time()
    line = f"gpusched: job {spec['id']} could not start: {reason}"
    try:
        os.write(log_fd, line.encode() + b"\n")
    except OSError:
        pass
    os.close(log_fd)
    journal.send(line, 4, **fields)
    result = {"pid": 0, "started": now, "ended": now, "exit_code": SETUP_FAILED, "error": reason}
    _write_result(spec["result"], result, fields)
    return result


def _write_result(path: str, result: dict, fields: dict) -> None:
    """The result must land, or the job's end is lost: on a full disk, keep trying (for up to a day)."""
    data = json.dumps(result).encode()
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
    chunks = []
    while chunk := os.read(0, 65536):                 # fd 0, not sys.stdin: a zygote's child has no fresh one
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        # the daemon gave up on this start (or died first): run nothing, and say so where it will look
        if result_path:
            _write_result(result_path, {"not_started": True}, {"GPUSCHED_JOB_ID": "?"})
        return 0
    spec = json.loads(raw)
    if not _wait_in_unit(spec["unit"]):
        journal.send(f"gpusched monitor for job {spec['id']} never got into {spec['unit']}; not starting it", 3,
                     GPUSCHED_JOB_ID=spec["id"])
        _write_result(spec["result"], {"not_started": True}, {"GPUSCHED_JOB_ID": spec["id"]})
        return 1
    # Survive the stop signal long enough to record how the job ended; systemd sends SIGKILL after the grace.
    for s in {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT,
              signal.Signals(spec.get("stop_signal", 15))}:
        signal.signal(s, lambda *_: None)
    run(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
