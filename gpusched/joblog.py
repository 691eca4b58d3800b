"""A job's log file with a size cap and a free-space floor, so that one job's output can't fill the state
filesystem and stop other jobs' results from being recorded.

The cap (config `max_log_size`) keeps the head (its first half) and the tail (its second half) and says in the
log how many bytes of the middle were dropped. The tail is kept in the file, not in memory: once the part after
the head has grown half a tail past the tail's size, its last `keep` bytes are copied down (1 MiB at a time)
to just after the marker line and the file is truncated; at the end it is cut to exactly `keep`. So memory
stays at one copy buffer whatever the cap (the default cap is 1 GiB: a ring of half of it in memory would
not do), the file is in order at every moment (`gpuschedctl logs -f` and a crash both see a sensible log),
every byte past the cap is copied about twice, and the file is at most 1.25 x the cap between compactions.

The floor (config `log_min_free`): while statvfs of the log's filesystem shows less free than that, nothing is
written (said once in the log and the journal) and writing resumes, saying how much was not logged, when
there is room again. It is checked at least once per MiB written and once per second, and a write that
fails for lack of space counts as the same. The log is a best effort: no error here ever reaches the caller,
because the job's result, written after it, must always be recorded.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Callable

from gpusched.units import format_size

COPY_CHUNK = 1 << 20
CHECK_BYTES = 1 << 20
CHECK_SECONDS = 1.0
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


class JobLog:
    def __init__(self, fd: int, max_size: int = 0, min_free: int = 0, *,
                 say: Callable[[str], None] = lambda _text: None,
                 clock: Callable[[], float] = time.monotonic,
                 free: Callable[[int], int] | None = None):
        self.fd = fd
        self.say = say                                   # to the journal
        self._clock = clock
        self._free = free or _free_bytes
        self.size = os.fstat(fd).st_size                 # an earlier attempt's output stays
        self.cap = max(0, max_size)
        self.head = self.cap // 2
        self.keep = self.cap - self.head
        self.slack = max(self.keep // 2, 4096)           # > any marker line, so a compaction copies downwards
        self.tail_start = self.head                      # bytes from here on may be dropped
        self.dropped = 0
        self.min_free = max(0, min_free)
        self.low = False                                 # not writing: the filesystem is low on space
        self._told = False                               # ... and that was said
        self.unlogged = 0
        self.broken = False
        self._since_check = CHECK_BYTES                  # check at the first write
        self._last_check = float("-inf")
        self._ends_line = self._last_byte_is_newline()

    # --- what the monitor calls ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """The job's output, as it came."""
        if self.broken or not data:
            return
        if not self._room(len(data)):
            self.unlogged += len(data)
            return
        self._put(data)

    def line(self, text: str) -> None:
        """A line of the monitor's own ("gpusched: ..."), on a line of its own."""
        data = self._own_line(text)
        if self.broken:
            return
        if not self._room(len(data)):
            self.unlogged += len(data)
            return
        self._put(data)

    def finish(self) -> None:
        """At the end: cut the tail to exactly its size."""
        if self.cap and not self.broken and self.size - self.tail_start > self.keep:
            self._guard(self._compact)

    # --- inside ---------------------------------------------------------------------------------------

    def _own_line(self, text: str) -> bytes:
        return (b"" if self._ends_line else b"\n") + text.encode("utf-8", "replace") + b"\n"

    def _room(self, n: int) -> bool:
        if not self.min_free and not self.low:
            return True
        self._since_check += n
        now = self._clock()
        if self._since_check < CHECK_BYTES and now - self._last_check < CHECK_SECONDS:
            return not self.low
        self._since_check, self._last_check = 0, now
        if self.min_free:
            try:
                free = self._free(self.fd)
            except OSError:
                return not self.low
            if free < self.min_free:
                self._pause(f"the log's filesystem has {format_size(free)} free, under log_min_free "
                            f"({format_size(self.min_free)}): output is not logged until there is room again")
                return False
        if self.low and self._put(self._own_line(f"gpusched: {self.unlogged} bytes of output were not logged "
                                                 f"while the filesystem was low on space"), quiet=True):
            self.low, self.unlogged, self._told = False, 0, False      # room again (or a full disk is no more)
        return not self.low

    def _pause(self, why: str) -> None:
        """Stop writing; say so once (not again until writing has resumed)."""
        self.low = True
        self._since_check, self._last_check = 0, self._clock()
        if not self._told:
            self._told = True
            self.say(f"gpusched: {why}")
            self._put(self._own_line(f"gpusched: {why}"), quiet=True)  # small: the floor leaves room for it

    def _put(self, data: bytes, quiet: bool = False) -> bool:
        """Write at the end; True if all of it was written. quiet: a lack of space is not news."""
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, self.size)
                self.size += n
                view = view[n:]
        except OSError as e:
            if e.errno in _NO_ROOM and not quiet:
                self.unlogged += len(view)
                self._pause(f"the log's filesystem is full ({e.strerror}): output is not logged until there "
                            f"is room again")
            elif e.errno not in _NO_ROOM:
                self.broken = True
                self.say(f"gpusched: can't write the log any more ({e.strerror}); output goes to the journal only")
        if len(view) < len(data):
            self._ends_line = data[len(data) - len(view) - 1] == 0x0A
        if self.cap and self.size - self.tail_start > self.keep + self.slack:
            self._guard(self._compact)
        return not view

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except OSError as e:
            self.broken = True
            self.say(f"gpusched: can't cap the log ({e.strerror}); not writing it any more")

    def _compact(self) -> None:
        """Keep the last `keep` bytes after the head, behind a line that says how much was dropped."""
        src = self.size - self.keep
        first = self.dropped == 0
        self.dropped += src - self.tail_start
        marker = (f"\ngpusched: {self.dropped} bytes of output dropped here (max_log_size "
                  f"{format_size(self.cap)} keeps the first {format_size(self.head)} and the last "
                  f"{format_size(self.keep)})\n").encode()
        dst = self.head + len(marker)
        assert dst <= src, (dst, src)
        os.pwrite(self.fd, marker, self.head)
        done = 0
        while done < self.keep:                         # forwards: dst < src, so nothing is overwritten unread
            chunk = os.pread(self.fd, min(COPY_CHUNK, self.keep - done), src + done)
            if not chunk:
                break
            os.pwrite(self.fd, chunk, dst + done)
            done += len(chunk)
        os.ftruncate(self.fd, dst + done)
        self.size, self.tail_start = dst + done, dst
        if first:
            self.say(f"gpusched: the log reached max_log_size ({format_size(self.cap)}); keeping its first "
                     f"{format_size(self.head)} and its last {format_size(self.keep)}")

    def _last_byte_is_newline(self) -> bool:
        if self.size == 0:
            return True
        try:
            return os.pread(self.fd, 1, self.size - 1) == b"\n"
        except OSError:
            return True


def _free_bytes(fd: int) -> int:
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize                    # what users may still use: the root reserve is not counted
