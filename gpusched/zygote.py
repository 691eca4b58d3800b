"""The monitor zygote: a single-threaded helper, exec'd once by the daemon, that forks a job monitor on request.

Starting Python for every monitor costs 15-20 ms of CPU, which caps throughput on a small machine; forking
this already-initialised process costs about a millisecond. The daemon itself is threaded and is never forked.

Protocol over a SOCK_SEQPACKET socket on fd 3: the daemon sends b"spawn <result path>" with one fd attached (the read end
of the pipe that will carry the job's launch spec); the zygote forks, the child makes that fd its stdin and
runs monitor.main(); the zygote answers with the child's pid (4 bytes). EOF on the socket: the daemon is
gone, and the zygote exits. Monitors it started run on; whoever inherits them reaps them.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import traceback

from gpusched import fds, monitor, pam


def _reap(*_: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 8192, 1)
        except InterruptedError:
            continue
        if not msg:
            return
        if not msg.startswith(b"spawn ") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            sock.send(struct.pack("i", -1))
            continue
        spec_fd = fds[0]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.close()                          # the daemon's socket is not the monitor's (main() closes
                os.dup2(spec_fd, 0)                   # every other fd too)
                os.close(spec_fd)
                os.setsid()
                for s in (signal.SIGCHLD, signal.SIGPIPE):
                    signal.signal(s, signal.SIG_DFL)
                code = monitor.main(os.fsdecode(msg[6:]))
            except BaseException:  # noqa: BLE001 - report, then leave without running the zygote's cleanup
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(spec_fd)
        sock.send(struct.pack("i", pid))


def main() -> int:
    # posix_spawn passes on every fd the daemon holds without CLOEXEC (a library's inotify fd, NVML's device
    # fds): keep only stdin (/dev/null), stdout and stderr (the daemon's journal stream, for tracebacks) and the
    # socket, so no monitor or job forked from here can inherit them.
    fds.close_all_but((0, 1, 2, 3))
    pam.preload()                                     # libpam loaded once here, not in every monitor
    sock = socket.socket(fileno=3)
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
