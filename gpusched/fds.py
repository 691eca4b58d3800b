"""File descriptors no job may inherit: a job must start with exactly fds 0, 1 and 2.

Two halves. The daemon marks every fd it holds close-on-exec (cloexec_all): Python's own files, sockets and
pidfds are close-on-exec already (PEP 446), but C libraries are not bound by that: NVML opens /dev/nvidiactl
and /dev/nvidia<N> lazily, and an inherited device fd would let a job use a GPU that DevicePolicy (checked
only at open()) denies it; a spool watch would show other users' job file names. And whatever still slips
through is closed where processes start (close_all_but): the zygote, the monitor and the job's child each
close everything they did not open for themselves.
"""

from __future__ import annotations

import fcntl
import os
from typing import Iterable


def cloexec_all(first: int = 3) -> int:
    """Set FD_CLOEXEC on every open fd >= first (0, 1 and 2 are meant to be inherited). Returns how many
    lacked it. Cheap: one listdir of /proc/self/fd and two fcntl calls per fd."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    fixed = 0
    for n in names:
        fd = int(n)
        if fd < first:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            if not flags & fcntl.FD_CLOEXEC:
                fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
                fixed += 1
        except OSError:
            continue              # the fd listdir itself used, or one closed meanwhile by another thread
    return fixed


def inheritable_fds(first: int = 3) -> list[int]:
    """The fds >= first that a child would inherit (for tests and diagnostics)."""
    out = []
    for n in os.listdir("/proc/self/fd"):
        fd = int(n)
        if fd < first:
            continue
        try:
            if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                out.append(fd)
        except OSError:
            continue
    return sorted(out)


def _highest_fd() -> int:
    """The highest fd open now (-1 if none can be seen): an fd above the current RLIMIT_NOFILE can exist
    (opened before the limit was lowered), so the limit alone is not a bound."""
    try:
        return max((int(n) for n in os.listdir("/proc/self/fd")), default=-1)
    except OSError:
        return -1


def close_all_but(keep: Iterable[int] = (0, 1, 2)) -> None:
    """Close every fd except those in `keep`. os.closerange uses close_range(2) where the kernel has it."""
    end = max(os.sysconf("SC_OPEN_MAX"), _highest_fd() + 1)
    low = 0
    for fd in sorted(set(keep)) + [end]:
        # never an empty range: CPython turns closerange(n, n) into close_range(n, n - 1), and
        # closerange(0, 0) into close_range(0, UINT_MAX), which closes everything
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
