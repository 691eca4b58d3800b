"""run: an interactive job (Slurm's `srun --pty` for one server). `gpuschedctl run --gpus 1 -- CMD` queues
an ordinary job, waits its turn, then runs CMD attached to this terminal; leaving ends the job.

The job is a job file like any other (jobopts, spoolfile), so it queues and gets its scope, limits, GPUs,
accounting and history like any job. Its file carries one more key, `attach`: the path of a Unix socket this
client listens on, in a fresh directory only the caller can enter. When the job starts, its command is
gpusched/ptyrelay.py, run as the caller inside the job's scope: it connects, and this client checks from the
kernel that the peer is the caller's (or root's) process in that job's scope before anything is relayed.
The bytes then go both ways over gpusched/ptywire.py's frames, with the terminal in raw mode (so Ctrl-C,
Ctrl-Z and the rest are the job's) and window size changes passed on. docs/cli.md says what happens when.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import tempfile
import termios
import time
import tty
from typing import Any, Iterator

from gpusched import ptywire
from gpusched.ctl import client as clientmod
from gpusched.ctl import jobopts
from gpusched.ctl.common import USAGE, CtlError, warn

HELLO_TIMEOUT = 10.0       # seconds for a connected relay to say hello
POLL = 1.0                 # seconds between looks at a queued job's state
LIMIT = 1 << 20            # bytes of input waiting for the relay: then stdin is not read until it takes them
READ = 65536
SETTLE = 10.0              # seconds to wait for gpusched to record an attempt's end after the relay's goodbye
SUN_PATH = 107             # bytes of a Unix socket's path (sun_path less its NUL)


class Leave(Exception):
    """SIGTERM or SIGHUP at the client: leave (and, while the job is queued, cancel it)."""

    def __init__(self, sig: int):
        super().__init__(signal.Signals(sig).name)
        self.sig = sig


@contextlib.contextmanager
def _leaving_on(*sigs: int) -> Iterator[None]:
    def leave(sig: int, _frame: Any) -> None:
        raise Leave(sig)
    old = {s: signal.signal(s, leave) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Listener:
    """The socket the job's relay connects to, in a new directory of mode 0700 (tempfile.mkdtemp): under
    $XDG_RUNTIME_DIR when it is the caller's own, else under /tmp. Removed on close."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="gpuschedctl-run-", dir=_runtime_dir())
        self.path = os.path.join(self.dir, "socket")
        if len(os.fsencode(self.path)) > SUN_PATH:         # a long $XDG_RUNTIME_DIR or $TMPDIR
            os.rmdir(self.dir)
            self.dir = tempfile.mkdtemp(prefix="gpuschedctl-run-", dir="/tmp")
            self.path = os.path.join(self.dir, "socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(self.path)
            self.sock.listen(4)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _runtime_dir() -> str | None:
    d = os.environ.get("XDG_RUNTIME_DIR", "")
    try:
        st = os.stat(d) if os.path.isabs(d) else None
    except OSError:
        return None
    if st is None or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return d


def peer_ok(pid: int, uid: int, job_id: int, own_uid: int, cgroup_text: str) -> str | None:
    """Why a connection must be refused (None: it is the job's relay): its process must be the caller's (or
    root's) and inside job `job_id`'s scope, as the kernel says (SO_PEERCRED, /proc/PID/cgroup)."""
    from gpusched import launch
    if uid not in (own_uid, 0):
        return f"a process of uid {uid} connected"
    if f"/{launch.unit_name(job_id)}/" not in cgroup_text and not cgroup_text.rstrip().endswith(
            f"/{launch.unit_name(job_id)}"):
        return f"process {pid} connected from outside job {job_id}'s scope"
    return None


Early = list[tuple[bytes, bytes]]       # frames that came with the relay's hello


def _accept(listener: Listener, job_id: int) -> tuple[socket.socket, Early] | None:
    """A connection, if it comes from job_id's relay and says hello: (socket, frames after the hello);
    else None."""
    conn, _ = listener.sock.accept()
    try:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cgroup_text = f.read(65536)
        except OSError:
            cgroup_text = ""
        why = peer_ok(pid, uid, job_id, os.getuid(), cgroup_text)
        if why:
            warn(f"refused a connection to {listener.path}: {why}")
            conn.close()
            return None
        conn.settimeout(HELLO_TIMEOUT)
        decoder = ptywire.Decoder()
        while True:
            data = conn.recv(READ)
            if not data:
                raise ptywire.ProtocolError("it hung up")
            got = decoder.feed(data)
            if got:
                kind, payload = got[0]
                if kind != ptywire.HELLO or ptywire.parse_relay_hello(payload) != str(job_id):
                    raise ptywire.ProtocolError("not the hello of this job's relay")
                return conn, got[1:]
            if decoder.pending > ptywire.MAX_HELLO + ptywire.HEADER.size:
                raise ptywire.ProtocolError("a hello that is too long")
    except (OSError, ptywire.ProtocolError) as e:
        warn(f"refused a connection to {listener.path}: {e}")
        conn.close()
        return None


def _wait_turn(client: clientmod.Client, job: dict, listener: Listener) -> tuple[socket.socket, Early]:
    """Until the job's relay connects; says once why the job waits. A job that ends first (cancelled by
    someone, rejected, its dependency failed) raises CtlError."""
    from gpusched.model import FINAL, State
    job_id = int(job["id"])
    said = False
    next_look = 0.0
    while True:
        if time.monotonic() >= next_look:
            state, reason = job["state"], job.get("reason", "")
            if state in FINAL:
                raise CtlError(f"job {job_id} {state} before it started" + (f": {reason}" if reason else ""))
            if state == State.QUEUED and not said:
                warn(f"job {job_id} is queued: {reason or 'waiting'}; waiting (Ctrl-C to cancel)")
                said = True
            next_look = time.monotonic() + POLL
        ready, _, _ = select.select([listener.sock], [], [], max(0.0, next_look - time.monotonic()))
        if ready and (conn := _accept(listener, job_id)) is not None:
            return conn
        if time.monotonic() >= next_look:
            job = client.call("Show", job_id)


def _size(fd: int) -> tuple[int, int]:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols
    except OSError:
        return 0, 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Session:
    """This terminal (or stdin and stdout) relayed to the job until it sends its exit status."""

    def __init__(self, conn: socket.socket, early: list[tuple[bytes, bytes]]):
        self.conn = conn
        self.pty = os.isatty(0)
        self.decoder = ptywire.Decoder()
        self.early = early
        self.out = bytearray()                  # frames for the relay
        self.code: int | None = None
        self.signals: list[int] = []
        self.stdin_open = True

    def run(self) -> int | None:
        """The command's exit code; None if the relay went away without one."""
        rows, cols = _size(0) if self.pty else (0, 0)
        self.conn.setblocking(True)
        self.conn.sendall(ptywire.client_hello(self.pty, rows, cols, os.environ.get("TERM")))
        self.conn.setblocking(False)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {signal.SIGWINCH: signal.signal(signal.SIGWINCH, self._note)}
        if not self.pty:                        # Ctrl-C reaches this process, not the job: pass it on
            for s in (signal.SIGINT, signal.SIGQUIT):
                handlers[s] = signal.signal(s, self._note)
        saved = termios.tcgetattr(0) if self.pty else None
        try:
            if saved is not None:
                tty.setraw(0, termios.TCSADRAIN)
            for kind, payload in self.early:
                self._message(kind, payload)
            while self.code is None:
                if not self._step(wake_r):
                    return self.code
            return self.code
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            for s, h in handlers.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _note(self, sig: int, _frame: Any) -> None:
        self.signals.append(sig)

    def _step(self, wake_r: int) -> bool:
        """One round of the loop; False when the relay is gone."""
        readers: list[Any] = [self.conn, wake_r]
        if self.stdin_open and len(self.out) < LIMIT:
            readers.append(0)
        r, w, _ = select.select(readers, [self.conn] if self.out else [], [])
        if wake_r in r:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            for sig in self.signals:
                if sig == signal.SIGWINCH and self.pty:
                    self.out += ptywire.winsize(*_size(0))
                elif sig != signal.SIGWINCH:
                    self.out += ptywire.signal_frame(sig)
            self.signals.clear()
        if 0 in r:
            try:
                data = os.read(0, READ)
            except OSError:
                data = b""
            if data:
                self.out += ptywire.frames(ptywire.DATA, data)
            elif self.pty:
                return False                    # the terminal itself is gone (hung up): leave
            else:
                self.stdin_open = False
                self.out += ptywire.frame(ptywire.EOF)
        if self.conn in w or self.out:
            try:
                del self.out[:self.conn.send(self.out)]
            except BlockingIOError:
                pass
            except OSError:
                return False
        if self.conn in r:
            try:
                data = self.conn.recv(READ)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                return False
            try:
                for kind, payload in self.decoder.feed(data):
                    self._message(kind, payload)
            except ptywire.ProtocolError as e:
                warn(f"the job's side broke the protocol ({e}); leaving")
                return False
        return True

    def _message(self, kind: bytes, payload: bytes) -> None:
        if kind == ptywire.DATA:
            _write_all(1, payload)
        elif kind == ptywire.STDERR:
            _write_all(2, payload)
        elif kind == ptywire.EXIT:
            self.code = ptywire.parse_exit(payload)
        else:
            raise ptywire.ProtocolError(f"a {kind!r} frame the client does not take")


def _settled(client: clientmod.Client, job_id: int, ended: int, timeout: float = SETTLE) -> dict:
    """The job once gpusched has recorded the end of the attempt that was attached (the relay says goodbye a
    moment before), or as it stands after `timeout`. `ended`: how many attempts had ended before it. A job
    that is not final then was queued again (preempted, requeued, retried), and may have started again."""
    from gpusched.model import FINAL
    deadline = time.monotonic() + timeout
    while True:
        job = client.call("Show", job_id)
        if job["state"] in FINAL or len(job.get("history") or []) > ended or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def _cancel(client: clientmod.Client, job_id: int | None, name: str, ino: int) -> None:
    """Cancel the job this client submitted, once its id is known (or can be found in a moment)."""
    with contextlib.suppress(CtlError):
        if job_id is None:
            for _ in range(50):
                job_id = int(client.call("Lookup", name, ino)) or None
                if job_id:
                    break
                time.sleep(0.02)
        if job_id is not None:
            client.call("Cancel", job_id)
            warn(f"job {job_id} cancelled")


def cmd_run(args: argparse.Namespace) -> int:
    from gpusched.ctl import spoolfile
    from gpusched.model import FINAL
    try:
        doc = jobopts.job_doc(args, args.job_command)           # main: what follows `--`
    except jobopts.OptionError as e:
        raise CtlError(str(e), USAGE) from None
    with Listener() as listener:
        doc["attach"] = listener.path
        data = jobopts.job_toml(doc)
        stem = "run-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in doc["name"])[:60]
        spoolfile.check(data, stem + ".toml", args)
        client = clientmod.Client()
        job_id: int | None = None
        name, ino = "", 0
        attached = False
        try:
            with _leaving_on(signal.SIGTERM, signal.SIGHUP):
                name, ino = spoolfile.drop(data, stem, args)
                job = spoolfile.taken(client, name, ino, args.timeout)
                job_id = int(job["id"])
                while True:
                    conn, early = _wait_turn(client, job, listener)
                    attached = True
                    ended = len(client.call("Show", job_id).get("history") or [])   # attempts ended so far
                    with conn:
                        code = _Session(conn, early).run()
                    attached = False
                    job = _settled(client, job_id, ended)
                    if job["state"] in FINAL or len(job.get("history") or []) <= ended:   # the session is over
                        if code is not None:
                            return code
                        raise CtlError(f"job {job_id}: the connection to it was lost ({job['state']}"
                                       + (f": {job['reason']}" if job.get("reason") else "") + ")")
                    warn(f"job {job_id} was stopped and queued again: {job.get('reason', '')}")
        except (KeyboardInterrupt, Leave) as e:
            # before the session: the job is not wanted any more; in it: leaving hangs the job up (the relay
            # sees the connection close), which ends it
            if not attached and name:
                _cancel(client, job_id, name, ino)
            return 128 + (e.sig if isinstance(e, Leave) else signal.SIGINT)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", usage="%(prog)s [-h] [OPTIONS] -- CMD [ARGS...]", help="run a command as a job attached to this terminal (like srun --pty): it waits its "
                    "turn, then runs with its GPUs; leaving ends it",
        description="Queue CMD as a job, wait for its turn, then run it attached to this terminal (a "
                    "pseudo-terminal on the job's side: keys, Ctrl-C and window size changes reach it). Ctrl-C "
                    "while it waits cancels it; closing the terminal ends it. Exits with CMD's exit code.")
    jobopts.add_options(p)
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for gpusched to take the job (default 30)")
    p.set_defaults(fn=cmd_run, takes_command=True)

