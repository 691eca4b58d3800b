"""Starts job monitors: forked by the zygote (fast), or exec'd fresh when the zygote can't be had.

Either way the monitor is a new process whose stdin is the read end of the spec pipe; the daemon watches it
through a pidfd, since a zygote's child is not the daemon's own. posix_spawn can't close "every other fd"
(Python has no closefrom action), so the zygote and the monitor each close all but what they need at their
start: stdin, stdout and stderr (the daemon's journal stream, kept for tracebacks), and the zygote's socket.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from gpusched.launch import CLEAN_PATH

_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}


class Spawner:
    def __init__(self, use_zygote: bool = True):
        self._use_zygote = use_zygote
        self._sock: socket.socket | None = None
        self._zygote_pid: int | None = None
        self._exited: list[int] = []          # zygotes given up on, still to be reaped

    def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._zygote_pid = os.posix_spawn(
                sys.executable, [sys.executable, "-m", "gpusched.zygote"], _ENV,
                file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                              (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)])
        finally:
            theirs.close()
        self._sock = ours

    def _via_zygote(self, spec_fd: int, result_path: str) -> int:
        if self._sock is None:
            self._start_zygote()
        assert self._sock is not None
        socket.send_fds(self._sock, [b"spawn " + os.fsencode(result_path)], [spec_fd])
        reply = self._sock.recv(4)
        if len(reply) != 4:
            raise OSError("the zygote closed its socket")
        pid = struct.unpack("i", reply)[0]
        if pid <= 0:
            raise OSError("the zygote refused")
        return pid

    def spawn(self, spec_fd: int, result_path: str) -> int:
        """Start a monitor reading its spec from spec_fd; if it gets none, it writes {"not_started": true}
        to result_path. Returns its pid. The caller closes spec_fd."""
        if self._use_zygote:
            try:
                return self._via_zygote(spec_fd, result_path)
            except OSError:
                self.close()                  # a dead zygote: one fresh one, then plain exec
                try:
                    return self._via_zygote(spec_fd, result_path)
                except OSError:
                    self.close()
        return os.posix_spawn(sys.executable, [sys.executable, "-m", "gpusched.monitor", result_path], _ENV,
                              file_actions=[(os.POSIX_SPAWN_DUP2, spec_fd, 0)], setsid=True)

    def reap(self) -> None:
        """Collect zygotes that were given up on (they exit at EOF on their socket)."""
        for pid in list(self._exited):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            except ChildProcessError:
                pass
            self._exited.remove(pid)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._zygote_pid:
            self._exited.append(self._zygote_pid)
            self._zygote_pid = None
        self.reap()
