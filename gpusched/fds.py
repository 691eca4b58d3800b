"""Closing inherited file descriptors: a job must start with exactly fds 0, 1 and 2.

Whatever the daemon holds without O_CLOEXEC (a library's inotify fd on the spool, NVML's /dev/nvidia* fds)
is inherited by everything it posix_spawns, and from there by every process forked after it. An fd a job
inherits is a way around the checks made at open(): a spool watch would show other users' job file names,
an open /dev/nvidia* node bypasses the scope's DevicePolicy. So the zygote, the monitor and the job's child
each close everything they did not open for themselves, at their start.
"""

from __future__ import annotations

import os
from typing import Iterable


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
