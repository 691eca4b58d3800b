"""Close-on-exec for every fd the daemon holds, so no process it starts inherits one.

Python's own files, sockets and pidfds are close-on-exec already (PEP 446), but C libraries are not bound
by that: NVML opens /dev/nvidiactl and /dev/nvidia<N> lazily, on whatever call first needs them, and an
inherited device fd would let a job use a GPU that DevicePolicy (checked only at open()) denies it. The daemon
calls cloexec_all() once it has started, and the GPU probe after NVML's init and after each probe.
"""

from __future__ import annotations

import fcntl
import os


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
