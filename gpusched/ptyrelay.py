"""The job side of `gpuschedctl run`: a relay between the job's command and the caller's terminal.

An interactive job is an ordinary job whose file says `attach = "/path/to/socket"`; its monitor runs
`python3 -I -m gpusched.ptyrelay --setup-fd 3 SOCKET -- CMD...` (launch.argv_for) as the job's user, inside
the job's scope, with the job's environment. The relay:

1. connects to SOCKET (the Unix socket `gpuschedctl run` listens on) and exchanges hellos (gpusched/ptywire);
   if that fails (the client is gone, or what answers is not gpuschedctl) it writes why to the setup fd, which
   the monitor records as the job's "could not start" reason, and CMD never runs;
2. starts CMD on a new pseudo-terminal as its session leader (or, when the caller's stdin is not a terminal,
   on pipes), so that the keys the client passes in raw mode (Ctrl-C, Ctrl-Z) become signals for CMD's
   foreground process group as on a local terminal, and window sizes are set with TIOCSWINSZ;
3. copies bytes both ways (never blocking on either side), and CMD's output also to its own stdout, the job's
   log, so the session is recorded like any job's output (what is typed is not, beyond the terminal's echo);
4. when CMD ends: sends its exit status and ends the same way (its exit code, or killed by the same signal),
   so the job's record is CMD's; when the client goes away first: hangs up the terminal (SIGHUP, as a closed
   terminal does), waits HANGUP_WAIT, kills what is left of CMD's process group and ends; the scope's end
   kills the rest.

It runs as the job's user, with no privilege: a path in a job file reaches only sockets its owner could reach
anyway. It survives the job's stop signal (systemd sends it to every process of the scope, CMD included), so
a stop gives CMD its grace; the warning signal (warn_signal), sent to the job's main process alone, is passed
on to CMD's foreground process group.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

from gpusched import fds, ptywire, wakeup

SETUP_FAILED = 127
CONNECT_TIMEOUT = 10.0     # seconds for the client's hello: a socket that answers nothing is not gpuschedctl
HANGUP_WAIT = 3.0          # seconds CMD has after a hangup before its process group is killed
DRAIN_AFTER_EXIT = 1.0     # seconds to read output still coming (from CMD's leftovers) once CMD has exited
FLUSH_TIMEOUT = 5.0        # seconds to hand the client the last output and the exit status
LIMIT = 1 << 20            # bytes waiting for a side that is slow to take them: then the other side waits
READ = 65536
# Signals the relay outlives: a stop signal reaches every process of the scope, and CMD is the one that must
# decide what it means. Faults (SIGSEGV, ...) and the job-control ones keep their default.
_UNTOUCHED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGCONT, signal.SIGTSTP, signal.SIGTTIN,
              signal.SIGTTOU, signal.SIGWINCH, signal.SIGURG, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
              signal.SIGILL, signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT}


class AttachError(Exception):
    """No gpuschedctl run to attach to: why, in words (it becomes the job's reason)."""


class Attached:
    """The connection to the client: its hello, and what it sent right after (a pipe's input comes at once)."""

    def __init__(self, sock: socket.socket, hello: dict, decoder: ptywire.Decoder,
                 early: list[tuple[bytes, bytes]]):
        self.sock, self.hello, self.decoder, self.early = sock, hello, decoder, early


def attach(path: str, job_id: str, timeout: float = CONNECT_TIMEOUT) -> Attached:
    """Connect to the client's socket and exchange hellos."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    gone = "the `gpuschedctl run` that submitted this job is gone"
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise AttachError(f"nothing listens at {path} ({e.strerror}): {gone}") from None
        except OSError as e:
            raise AttachError(f"can't connect to {path} ({e.strerror or e}): {gone}") from None
        try:
            sock.sendall(ptywire.relay_hello(job_id))
            decoder = ptywire.Decoder()
            deadline = time.monotonic() + timeout
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(READ)
                if not data:
                    raise AttachError(f"what listens at {path} hung up before saying hello: {gone}")
                got = decoder.feed(data)
                if got:
                    kind, payload = got[0]
                    if kind != ptywire.HELLO:
                        raise ptywire.ProtocolError("the first message is not a hello")
                    hello = ptywire.parse_client_hello(payload)
                    early = got[1:]
                    break
                if decoder.pending > ptywire.MAX_HELLO + ptywire.HEADER.size:
                    raise ptywire.ProtocolError("a hello that is too long")
        except TimeoutError:
            raise AttachError(f"what listens at {path} said nothing in {timeout:.0f}s: not gpuschedctl run") from None
        except ptywire.ProtocolError as e:
            raise AttachError(f"what listens at {path} is not gpuschedctl run ({e})") from None
        except OSError as e:
            raise AttachError(f"the connection to {path} failed ({e.strerror or e}): {gone}") from None
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return Attached(sock, hello, decoder, early)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


class Session:
    """CMD on a terminal (or pipes), relayed to the client until one of them is done."""

    def __init__(self, attached: Attached, command: list[str], forward: int | None, log_fd: int = 1):
        self.sock = attached.sock
        hello = attached.hello
        self.pty = hello["pty"]
        self.forward = forward
        self.log_fd = log_fd
        self.to_client = bytearray()
        self.to_cmd = bytearray()
        self.decoder = attached.decoder
        self.early = attached.early
        self.client_gone = False
        self.master = -1
        env = dict(os.environ)
        if self.pty:
            self.master, slave = os.openpty()
            if hello["rows"] and hello["cols"]:
                _set_size(slave, hello["rows"], hello["cols"])
            if hello["term"] and "TERM" not in env:
                env["TERM"] = hello["term"]
            # a new session on the terminal, which becomes its controlling terminal (preexec_fn runs after
            # setsid and the dup2s): job control, and Ctrl-C as SIGINT for its foreground process group
            try:
                self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env,
                                             start_new_session=True,
                                             preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
            finally:
                os.close(slave)
            self.outputs = {self.master: ptywire.DATA}
            self.cmd_in = self.master
        else:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, start_new_session=True)
            assert self.proc.stdin and self.proc.stdout and self.proc.stderr
            self.outputs = {self.proc.stdout.fileno(): ptywire.DATA, self.proc.stderr.fileno(): ptywire.STDERR}
            self.cmd_in = self.proc.stdin.fileno()
        for fd in (*self.outputs, self.cmd_in):
            os.set_blocking(fd, False)
        self.sock.setblocking(False)

    # --- the loop --------------------------------------------------------------------------------------------

    def run(self, wake: int) -> int:
        """Relay until CMD has ended and its output is read (or the client is gone). CMD's wait status."""
        exited_at: float | None = None
        try:
            for kind, payload in self.early:
                self._message(kind, payload)
        except ptywire.ProtocolError as e:
            self._log(f"gpusched: the client broke the protocol ({e}); hanging up")
            self.client_gone = True
        while True:
            status = self.proc.poll()
            if status is not None and exited_at is None:
                exited_at = time.monotonic()
            if self.client_gone:
                return self._hang_up()
            if exited_at is not None and (not self.outputs or time.monotonic() - exited_at > DRAIN_AFTER_EXIT):
                return self._finish()
            readers = [wake]
            if len(self.to_cmd) < LIMIT:
                readers.append(self.sock)
            if len(self.to_client) < LIMIT:
                readers += list(self.outputs)
            writers: list = []
            if self.to_client:
                writers.append(self.sock)
            if self.to_cmd and self.cmd_in >= 0:
                writers.append(self.cmd_in)
            r, w, _ = select.select(readers, writers, [], 0.2 if exited_at is not None else 5.0)
            if wake in r:
                wakeup.drain(wake)
            if self.sock in w:
                self._send()
            if self.cmd_in in w:
                self._to_cmd()
            if self.sock in r:
                self._from_client()
            for fd in [fd for fd in r if fd in self.outputs]:
                self._from_cmd(fd)

    def _send(self) -> None:
        try:
            n = self.sock.send(self.to_client)
        except BlockingIOError:
            return
        except OSError:
            self.client_gone = True
            return
        del self.to_client[:n]

    def _to_cmd(self) -> None:
        try:
            n = os.write(self.cmd_in, self.to_cmd)
        except BlockingIOError:
            return
        except OSError:                               # CMD closed its input (or the terminal is gone)
            self.to_cmd.clear()
            return
        del self.to_cmd[:n]

    def _from_client(self) -> None:
        try:
            data = self.sock.recv(READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.client_gone = True
            return
        try:
            for kind, payload in self.decoder.feed(data):
                self._message(kind, payload)
        except ptywire.ProtocolError as e:
            self._log(f"gpusched: the client broke the protocol ({e}); hanging up")
            self.client_gone = True

    def _message(self, kind: bytes, payload: bytes) -> None:
        if kind == ptywire.DATA:
            self.to_cmd += payload
        elif kind == ptywire.WINSIZE:
            rows, cols = ptywire.parse_winsize(payload)
            if self.pty and rows and cols:
                _set_size(self.master, rows, cols)        # the kernel sends SIGWINCH to the foreground group
        elif kind == ptywire.EOF and not self.pty:
            self._close_input()
        elif kind == ptywire.SIGNAL and not self.pty:
            self._signal_group(ptywire.parse_signal(payload))
        else:
            raise ptywire.ProtocolError(f"a {kind!r} frame the relay does not take here")

    def _close_input(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            if self.to_cmd:                           # what was typed before the end still goes in
                os.set_blocking(self.cmd_in, True)
                try:
                    _write_all(self.cmd_in, bytes(self.to_cmd))
                except OSError:
                    pass
                self.to_cmd.clear()
            self.proc.stdin.close()
            self.cmd_in = -1

    def _from_cmd(self, fd: int) -> None:
        try:
            data = os.read(fd, READ)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:                  # EIO: every holder of the terminal's other side is gone
                raise
            data = b""
        if not data:
            del self.outputs[fd]
            return
        self.to_client += ptywire.frames(self.outputs[fd], data)
        _write_all(self.log_fd, data)                 # the job's log: recorded like any job's output

    # --- endings ---------------------------------------------------------------------------------------------

    def _finish(self) -> int:
        """CMD has ended: its last output and its status to the client, then close."""
        status = self.proc.wait()
        self.to_client += ptywire.exit_frame(ptywire.exit_status(status))
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while self.to_client and not self.client_gone and time.monotonic() < deadline:
            select.select([], [self.sock], [], max(0.0, deadline - time.monotonic()))
            self._send()
        self._close()
        return status

    def _hang_up(self) -> int:
        """The client is gone: as when a terminal closes, CMD gets SIGHUP (and SIGCONT, should it be
        stopped); what of its process group is still there after HANGUP_WAIT is killed."""
        if self.proc.poll() is None:
            self._log("gpusched: the terminal of `gpuschedctl run` went away; hanging up")
            self._signal_group(signal.SIGHUP)
            self._signal_group(signal.SIGCONT)
        # the terminal stays open (its output read into the log) while CMD handles the hangup: a shell that
        # reads an end of input first would exit 0 as if the person had typed `exit`
        deadline = time.monotonic() + HANGUP_WAIT
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select(list(self.outputs), [], [], min(0.05, max(0.0, deadline - time.monotonic())))
            for fd in r:
                try:
                    data = os.read(fd, READ)
                except OSError:
                    data = b""
                if data:
                    _write_all(self.log_fd, data)
                else:
                    del self.outputs[fd]
        self._close()                                 # the terminal's master: the kernel hangs it up too
        try:
            status = self.proc.wait(0.5)
        except subprocess.TimeoutExpired:
            _killpg(self.proc.pid, signal.SIGKILL)
            status = self.proc.wait()
        return status

    def _signal_group(self, sig: int) -> None:
        """To the terminal's foreground process group (what the person was running), and CMD's own."""
        groups = {self.proc.pid}
        if self.pty and self.master >= 0:
            try:
                groups.add(os.tcgetpgrp(self.master))
            except OSError:
                pass
        for pgid in groups:
            _killpg(pgid, sig)

    def forward_signal(self, sig: int) -> None:
        if sig == self.forward and self.proc.poll() is None:
            self._signal_group(sig)

    def _close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.master >= 0:
                os.close(self.master)
                self.master = -1
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()

    def _log(self, text: str) -> None:
        try:
            _write_all(self.log_fd, b"\r\n" + text.encode() + b"\r\n")
        except OSError:
            pass


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _end_like(status: int) -> int:
    """End this process as CMD ended: the same exit code, or killed by the same signal (no core dump), so
    the job's record says what CMD did."""
    if status >= 0:
        return status
    sig = -status
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        time.sleep(0.5)
    except (OSError, ValueError):
        pass
    return 128 + sig


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpusched.ptyrelay", description="the job side of gpuschedctl run")
    ap.add_argument("--setup-fd", type=int, help="where to say why the command could not start")
    ap.add_argument("--forward", type=int, help="a signal to pass on to the command (the job's warn_signal)")
    ap.add_argument("socket")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        ap.error("no command")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    job_id = os.environ.get("GPUSCHED_JOB_ID", "0")
    keep = (0, 1, 2) + ((args.setup_fd,) if args.setup_fd is not None else ())
    fds.close_all_but(keep)
    try:
        attached = attach(args.socket, job_id)
    except AttachError as e:
        message = f"cannot attach to a terminal: {e}"
        if args.setup_fd is None:
            print(f"gpusched: {message}", file=sys.stderr)
        else:
            _write_all(args.setup_fd, message.encode()[:4000])
        return SETUP_FAILED
    if args.setup_fd is not None:
        os.close(args.setup_fd)                       # the monitor now goes on to copy the output

    wake_r = wakeup.install()
    session: list[Session] = []

    def on_signal(sig: int, _frame: object) -> None:
        if session:
            session[0].forward_signal(sig)
    for sig in signal.valid_signals():
        if sig not in _UNTOUCHED:
            try:
                signal.signal(sig, on_signal)
            except (OSError, ValueError):
                pass
    signal.signal(signal.SIGCHLD, lambda *_: None)   # wakes the loop when CMD ends
    try:
        session.append(Session(attached, args.command, args.forward))
    except OSError as e:
        text = f"gpusched: cannot run {args.command[0]}: {e.strerror or e}\r\n".encode()
        try:
            attached.sock.sendall(ptywire.frames(ptywire.DATA if attached.hello["pty"] else ptywire.STDERR, text)
                         + ptywire.exit_frame({"exit_code": SETUP_FAILED}))
        except OSError:
            pass
        _write_all(1, text)
        return SETUP_FAILED
    return _end_like(session[0].run(wake_r))


if __name__ == "__main__":
    sys.exit(main())
