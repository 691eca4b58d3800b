"""gpuschedctl top in the real service (the systemd box), as alice on a terminal: `gpuschedctl top` runs on a
pty (TERM=xterm, 120x40) and pyte (Debian's python3-pyte) turns what it writes into the screen a person
would see; the test reads that screen and presses keys. The daemon's access rules decide what the keys may
do; `gpuschedctl show` and the status files say what really happened."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import termios
import time

import pytest

pyte = pytest.importorskip("pyte", reason="python3-pyte is needed to read top's screen (scripts/setup-deps "
                                          "installs it)")

COLS, ROWS = 120, 40
HOOK = "/run/gpusched/simulate-gpu-usage"
# a colour SGR: a foreground/background colour (30-39, 40-49, 90-97, 100-107), 256 or RGB colours (38;..)
COLOUR = re.compile(rb"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


class Term:
    """A command in the box on a pseudo-terminal of COLS x ROWS, and the screen it draws."""

    def __init__(self, gs, cmd: str, user: str):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        argv, env = gs.box.command(cmd, user)
        # its own session with the pty as its controlling terminal, as in a terminal emulator: a resize
        # then sends it SIGWINCH
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd="/",
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.fd = master
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.fd], [], [], min(left, 0.1))[0]:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:                              # the command has exited (EIO)
                return
            self.raw += data
            self.stream.feed(data)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def until(self, predicate, timeout: float = 30, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if predicate(self.text()):
                return self.text()
        raise AssertionError(f"not on the screen within {timeout}s: {what}\n{self.text()}")

    def resize(self, cols: int, rows: int) -> None:
        """What a terminal emulator does when its window changes: the new size on the pty (the kernel sends
        SIGWINCH), and a screen of that size."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.screen.resize(rows, cols)

    def keys(self, keys: str) -> None:
        os.write(self.fd, keys.encode())
        self.pump(0.3)

    def selected(self) -> str:
        return next((line for line in self.lines() if line.startswith(">")), "")

    def select(self, job_id: int) -> None:
        """Move the selection to job_id's row (Home, then down)."""
        self.keys("g")
        for _ in range(ROWS):
            if self.selected()[2:].startswith(f"{job_id} "):
                return
            self.keys("j")
        raise AssertionError(f"job {job_id} can't be selected\n{self.text()}")

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            os.close(self.fd)


@pytest.fixture
def term(gs):
    started: list[Term] = []

    def start(cmd: str = "gpuschedctl top -d 1", user: str = "alice", env: str = "TERM=xterm") -> Term:
        t = Term(gs, f"{env} {cmd}", user)
        started.append(t)
        return t
    yield start
    for t in started:
        if t.proc.poll() is None:
            t.proc.kill()
            t.close()
    gs.sh(f"rm -f {HOOK}", check=False)


def _row(text: str, job_id: int) -> str:
    return next((line for line in text.splitlines() if line[2:].startswith(f"{job_id} ")), "")


def _show(gs, job_id: int, user: str = "alice") -> str:
    out = gs.sh(f"gpuschedctl show {job_id}", user=user).stdout
    return re.search(r"^\s*state: (\S+)", out, re.M).group(1)


def test_top_shows_gpus_and_jobs_and_acts_only_where_the_daemon_allows(gs, term):
    gs.sh(f"mkdir -p /run/gpusched && printf '0 45 12G\\n1 45 12G\\n2 45 12G\\n3 45 12G\\n' "
          f"> {HOOK}.new && chmod 644 {HOOK}.new "
          f"&& mv {HOOK}.new {HOOK}")
    mine = gs.submit("alice", 'name = "mytrain"\ncommand = "sleep 300"\ngpus = 1\ngrace = "1s"\n')
    theirs = gs.submit("bob", 'name = "bobtrain"\ncommand = "sleep 300"\ngpus = 1\ngrace = "1s"\n')
    gs.wait(mine, "running")
    gs.wait(theirs, "running")
    waiting = gs.submit("alice", 'name = "bigone"\ncommand = "true"\ngpus = 4\n')
    reason = gs.status(waiting)["reason"]
    assert reason, gs.status(waiting)

    t = term()
    text = t.until(lambda s: _row(s, mine) and _row(s, theirs) and _row(s, waiting), what="the three jobs")
    assert text.splitlines()[0].startswith("gpusched top") and "2 running, 1 queued" in text
    gpu_lines = [line for line in t.lines() if re.match(r"\d   ", line)]
    assert len(gpu_lines) == 4, text
    holders = {line.split()[0]: line for line in gpu_lines}
    mine_gpu = str(gs.status(mine)["gpus"][0]["index"])
    assert f"job {mine}: alice mytrain" in holders[mine_gpu], text
    t.until(lambda s: "45%" in s and "12G/80G" in s, what="GPU 0's utilisation and memory from the sampler")
    assert "mytrain" in _row(text, mine) and "running" in _row(text, mine) and _row(text, mine)[1] == "*"
    assert "bob" in _row(text, theirs) and _row(text, theirs)[1] == " "
    assert reason[:30] in _row(text, waiting), (reason, text)

    # cancel alice's own job: asked first, then done, as `gpuschedctl cancel` does
    t.select(mine)
    t.keys("c")
    t.until(lambda s: f"Cancel job {mine} (alice, mytrain)? y/n" in s, what="the question")
    t.keys("y")
    gs.wait(mine, "cancelled", timeout=30)
    assert _show(gs, mine) == "cancelled"
    t.until(lambda s: not _row(s, mine), what="the cancelled job leaving the list")

    # bob's job: the daemon refuses, top says so and goes on; the job keeps running
    t.select(theirs)
    t.keys("c")
    t.keys("y")
    t.until(lambda s: f"job {theirs} belongs to bob" in s, what="the refusal on the status line")
    t.keys("l")
    t.until(lambda s: "its log is readable only by bob" in s, what="the log's refusal")
    assert _show(gs, theirs) == "running" and gs.status(theirs)["state"] == "running"

    # hold and release alice's waiting job with h
    t.select(waiting)
    t.keys("h")
    t.until(lambda s: "held by alice" in _row(s, waiting), what="the job held")
    assert gs.status(waiting)["held"] == "alice"
    t.keys("h")
    t.until(lambda s: "held by" not in _row(s, waiting), what="the job released")
    assert not gs.status(waiting).get("held")

    t.keys("q")
    assert t.close() == 0
    gs.sh(f"gpuschedctl cancel {theirs} {waiting}")


def test_l_follows_the_log_of_ones_own_job_and_q_goes_back(gs, term):
    job = gs.submit("alice", 'command = "echo hello-from-the-job; sleep 300"\ngpus = 0\ngrace = "1s"\n')
    gs.wait(job, "running")
    t = term()
    t.until(lambda s: _row(s, job), what="the job")
    t.select(job)
    t.keys("l")
    t.until(lambda s: "hello-from-the-job" in s and f"job {job}: its log" in s, what="the job's log")
    t.keys("q")
    t.until(lambda s: _row(s, job) and "RUNNING" in s, what="top again after q")
    t.keys("q")
    assert t.close() == 0
    gs.sh(f"gpuschedctl cancel {job}")


def test_top_keeps_running_while_the_daemon_is_away_and_exits_3_if_it_never_was(gs, term):
    t = term()
    t.until(lambda s: "RUNNING" in s, what="the first screen")
    gs.sh("systemctl stop gpusched")
    try:
        t.until(lambda s: "gpusched unreachable, retrying" in s, what="the daemon's absence on the status line")
        never = gs.sh("gpuschedctl top", user="alice", check=False)
        assert never.returncode == 3 and "can't reach gpusched" in never.stderr, never
    finally:
        gs.sh("systemctl start gpusched")
    t.until(lambda s: "unreachable" not in s, timeout=30, what="top recovering")
    assert t.proc.poll() is None
    t.keys("q")
    assert t.close() == 0


def test_top_on_a_non_tty_prints_one_snapshot(gs):
    job = gs.submit("alice", 'name = "snap"\ncommand = "sleep 300"\ngpus = 0\ngrace = "1s"\n')
    gs.wait(job, "running")
    deadline = time.monotonic() + 10                 # the daemon's Top answer is reused for a second
    while True:
        p = gs.sh("gpuschedctl top | cat", user="alice")
        if _row(p.stdout, job) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "RUNNING" in p.stdout and "WAITING" in p.stdout and "\x1b" not in p.stdout
    assert _row(p.stdout, job) and "snap" in _row(p.stdout, job)
    assert "select" not in p.stdout                            # no key line: nothing to press
    gs.sh(f"gpuschedctl cancel {job}")


@pytest.mark.parametrize("no_color", ["1", ""])
def test_no_color_means_no_colour_escapes(gs, term, no_color):
    t = term(env=f"TERM=xterm NO_COLOR={shlex.quote(no_color)}")
    t.until(lambda s: "RUNNING" in s, what="the first screen")
    t.keys("q")
    assert t.close() == 0
    assert not COLOUR.search(t.raw), COLOUR.search(t.raw)
    colour = term(env="TERM=xterm")                             # the same without NO_COLOR has colours
    colour.until(lambda s: "RUNNING" in s, what="the first screen")
    colour.keys("q")
    assert colour.close() == 0 and COLOUR.search(colour.raw)


def test_a_resize_redraws_at_the_new_size(gs, term):
    job = gs.submit("alice", 'name = "resized"\ncommand = "sleep 300"\ngpus = 0\ngrace = "1s"\n')
    gs.wait(job, "running")
    t = term()
    t.until(lambda s: _row(s, job) and "q quit" in s, what="the first screen, keys line whole at 120 columns")
    t.resize(60, 20)
    t.until(lambda s: "q quit" not in s and "Enter detail…" in s, what="the keys line cut at 60 columns")
    lines = t.lines()
    assert len(lines) == 20 and _row("\n".join(lines), job)
    t.keys("q")
    assert t.close() == 0
    gs.sh(f"gpuschedctl cancel {job}")
