"""Interactive jobs (`gpuschedctl run`, issue 11) in the box, driven through a real pseudo-terminal made by the
test: the client waits its turn, then the job's shell is on the test's terminal (input, output, window size,
Ctrl-C), in its scope with one GPU; its exit code is the client's and the job's; leaving ends the job."""

from __future__ import annotations

import fcntl
import os
import json
import re
import select
import struct
import subprocess
import termios
import time

import pytest

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BLOCKER = 'name = "blocker"\ngpus = 4\ncommand = "sleep 300"\n'
SHELL = "gpuschedctl run --gpus 1 --env 'PS1=JOB$ ' -- bash --norc --noprofile -i"


class Term:
    """A command run as `user` in the box on a pty of the test's own: the test is the person at the terminal.
    In the box `setsid -c` makes the pty the client's controlling terminal, so Ctrl-C, window changes and the
    hangup reach the client as they would from a real terminal (nothing on the host side of nsenter)."""

    def __init__(self, box, cmd: str, user: str = "alice", rows: int = 24, cols: int = 80):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        argv = ["nsenter", "-t", str(box.sd), "-a", "setpriv", f"--reuid={user}", f"--regid={user}",
                "--init-groups", "--reset-env", "--", "/usr/bin/env", f"HOME=/home/{user}", f"USER={user}",
                f"PATH={PATH}", "LANG=C.UTF-8", "TERM=xterm", "/bin/bash", "-c",
                f"cd; echo CLIENT=$$; exec setsid -c {cmd}"]
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     env={"PATH": PATH, "LANG": "C.UTF-8"}, cwd="/")
        os.close(slave)
        self.out = b""
        self.client = int(self.expect(rb"CLIENT=(\d+)").group(1))

    def expect(self, pattern: bytes, timeout: float = 30, since: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.out, since)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen in {timeout}s; the terminal shows:\n"
                                     f"{self.out[-3000:].decode(errors='replace')}")
            r, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if r:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"the terminal closed before {pattern!r}:\n"
                                         f"{self.out[-3000:].decode(errors='replace')}")
                self.out += data

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.2)      # keep the pty drained meanwhile
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.proc.wait(1)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def term(gs):
    made: list[Term] = []

    def make(cmd: str, **kw) -> Term:
        made.append(Term(gs.box, cmd, **kw))
        return made[-1]
    yield make
    for t in made:
        t.close()


def _blocked(gs) -> int:
    blocker = gs.submit("bob", BLOCKER)
    gs.wait(blocker, "running")
    return blocker


def test_run_waits_its_turn_then_runs_attached(gs, term):
    blocker = _blocked(gs)
    t = term(SHELL)
    m = t.expect(rb"gpuschedctl: job (\d+) is queued: [^\r\n]+; waiting \(Ctrl-C to cancel\)")
    job = int(m.group(1))
    time.sleep(1.5)
    assert gs.status(job)["state"] == "queued"
    assert b"JOB$" not in t.out                      # it waits its turn: nothing runs yet
    gs.sh(f"gpuschedctl cancel {blocker}")

    at = t.expect(rb"JOB\$ ", timeout=60).end()
    t.send(b"echo CVD=[$CUDA_VISIBLE_DEVICES]; grep -o 'gpusched-job-[0-9]*.scope' /proc/self/cgroup\r")
    m = t.expect(rb"CVD=\[([^]$\r\n]*)\]", since=at)
    assert re.fullmatch(rb"GPU-[0-9A-Za-z-]+", m.group(1)), m.group(1)      # exactly one GPU, by UUID
    t.expect(f"gpusched-job-{job}.scope".encode(), since=m.end())
    assert gs.status(job)["state"] == "running"

    t.resize(50, 132)                                # the window size reaches the job's terminal
    at = len(t.out)
    t.send(b"stty size\r")
    t.expect(rb"50 132\r\n", since=at)

    at = len(t.out)
    t.send(b"sleep 100\r")
    time.sleep(1.0)
    t.send(b"\x03")                                  # Ctrl-C stops the sleep, not the shell
    t.expect(rb"JOB\$ ", since=at + 10, timeout=10)
    at = len(t.out)
    t.send(b"echo ALIVE-$((20+22))\r")
    t.expect(rb"ALIVE-42", since=at)

    t.send(b"exit 7\r")
    assert t.wait() == 7                             # the client exits with the job's code
    st = gs.wait(job, "failed")
    assert st["exit_code"] == 7
    assert "exited with code 7" in gs.sh(f"gpuschedctl show {job}", user="alice").stdout
    assert "ALIVE-42" in gs.sh(f"gpuschedctl logs {job} --raw", user="alice").stdout   # the session is logged
    assert gs.sh(f"systemctl is-active gpusched-job-{job}.scope", check=False).stdout.strip() != "active"


def test_ctrl_c_while_queued_cancels_the_job(gs, term):
    _blocked(gs)
    t = term(SHELL)
    job = int(t.expect(rb"job (\d+) is queued").group(1))
    t.send(b"\x03")
    assert t.wait() == 130
    assert gs.wait(job, "cancelled", timeout=10)["state"] == "cancelled"


def test_closing_the_terminal_ends_the_job(gs, term):
    t = term(SHELL)
    t.expect(rb"JOB\$ ", timeout=60)
    job = gs.list()[0]["id"]
    # what runs in the foreground when the terminal goes is told so (SIGHUP), as on a local terminal
    at = len(t.out)
    # (a Python program, not a bash trap: bash runs a trap only once its foreground child has gone, which under
    # load can come after the relay's kill)
    t.send(b"python3 -c 'import os, signal, time; signal.signal(signal.SIGHUP, lambda *_: (os.write(os.open("
           b"os.path.expanduser(\"~/hup-seen\"), os.O_WRONLY | os.O_CREAT, 0o600), b\"got-hup\\n\"), "
           b"os._exit(1))); print(\"READY-%d\" % (1 + 1), flush=True); time.sleep(60)'\r")
    t.expect(rb"READY-2", since=at)
    start = time.monotonic()
    os.close(t.master)                               # the terminal window is closed
    t.master = -1
    st = gs.wait(job, {"failed", "succeeded"}, timeout=20)
    assert time.monotonic() - start < 15
    log = gs.sh(f"gpuschedctl logs {job}", user="alice").stdout
    assert st["state"] == "failed" and st.get("signal") == "SIGHUP", (st, log)   # the shell too
    assert "went away; hanging up" in log
    assert gs.sh("cat ~/hup-seen", user="alice").stdout == "got-hup\n"
    gs.sh("rm -f ~/hup-seen", user="alice")


def test_killing_the_client_ends_the_job(gs, term):
    t = term(SHELL)
    t.expect(rb"JOB\$ ", timeout=60)
    job = gs.list()[0]["id"]
    assert "gpuschedctl" in gs.sh(f"tr '\\0' ' ' < /proc/{t.client}/cmdline").stdout
    gs.sh(f"kill -9 {t.client}")
    st = gs.wait(job, {"failed", "succeeded"}, timeout=20)
    assert st["state"] == "failed" and st.get("signal") == "SIGHUP", st


def test_a_client_gone_before_the_start_fails_the_job_fast(gs, term):
    blocker = _blocked(gs)
    t = term(SHELL)
    job = int(t.expect(rb"job (\d+) is queued").group(1))
    gs.sh(f"kill -9 {t.client}")                     # it can't cancel: the job starts with nobody there
    gs.sh(f"gpuschedctl cancel {blocker}")
    st = gs.wait(job, {"failed", "succeeded"}, timeout=30)
    assert st["state"] == "failed" and st["exit_code"] == 127
    assert "could not start: cannot attach to a terminal: nothing listens at" in st["reason"]
    held = json.loads(gs.sh("gpuschedctl gpus --json").stdout)["gpus"]
    assert not any(g.get("job") == job for g in held), held     # its GPU is free again


def test_an_attach_key_written_by_hand_is_harmless(gs):
    # a path to nothing, and a socket that is not gpuschedctl's (the system bus): each job fails quickly,
    # its command never runs
    jobs = {}
    for target in ("/tmp/nothing-here/socket", "/run/dbus/system_bus_socket"):
        jobs[target] = gs.submit("alice", f'gpus = 0\ncommand = "touch ~/ran"\nattach = "{target}"\n')
    for target, job in jobs.items():
        st = gs.wait(job, {"failed", "succeeded"}, timeout=30)
        assert st["state"] == "failed" and st["exit_code"] == 127, st
        assert "cannot attach to a terminal" in st["reason"]
    assert gs.sh("test -e ~/ran", user="alice", check=False).returncode != 0


def test_run_without_a_terminal_uses_pipes(gs):
    p = gs.sh("printf 'echo out-$((40+2)); echo err >&2; exit 3\\n' | gpuschedctl run --gpus 0 -- bash",
              user="alice", check=False, timeout=60)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "out-42\n" and p.stderr == "err\n"


def test_a_requeued_job_is_attached_again(gs, term):
    t = term("gpuschedctl run --gpus 1 -- bash -c 'echo ATTEMPT=$GPUSCHED_ATTEMPT; read x; echo got-$x; exit 5'")
    t.expect(rb"ATTEMPT=1")
    job = gs.list()[0]["id"]
    gs.sh(f"gpuschedctl requeue {job}", user="alice")    # stop signal, then queued again with the same id
    t.expect(rb"job \d+ was stopped and queued again")
    t.expect(rb"ATTEMPT=2", timeout=60)                    # the same client, attached to the new attempt
    t.send(b"second\r")
    t.expect(rb"got-second")
    assert t.wait() == 5
    assert gs.wait(job, "failed")["exit_code"] == 5
