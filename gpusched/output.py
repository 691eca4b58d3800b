"""Splits a job's output into journal lines, in linear time and bounded memory whatever the job prints. Pure.

A line ends at "\\n", "\\r\\n" or a bare "\\r" (progress bars redraw their line with "\\r"). A line longer than
`max_line` is sent in pieces of `max_line` bytes as it comes, so memory is bounded by `max_line` however long
a line gets (journald's own line limit is 48 KiB). A "\\r" redraw that is overwritten by another line end in
the same chunk (a burst of redraws) is skipped, as a terminal would never show it either: a job printing
megabytes of progress updates makes a few journal entries per chunk read, not hundreds of thousands. The log
file is not made from these lines: it gets the output's bytes as they are.

Every byte is looked at once; nothing is re-scanned (the old `buf += data; buf.split(b"\\n")` was quadratic in
the length of a line without "\\n").
"""

from __future__ import annotations

import re

MAX_LINE = 16 * 1024
_END = re.compile(rb"\r\n|\r|\n")


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE):
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._partial = bytearray()          # the start of a line whose end hasn't come yet (<= max_line)
        self._after_cr = False               # the last chunk ended in "\r": a "\n" opening the next one is its end

    def feed(self, data: bytes) -> list[bytes]:
        """The lines (without their ends) that `data` completes, and pieces of overlong lines."""
        out: list[bytes] = []
        if not data:
            return out
        pos = 0
        if self._after_cr and data[0] == 0x0A:
            pos = 1
        self._after_cr = data[-1] == 0x0D
        redraw: bytes | None = None          # a line ended by a bare "\r", shown unless another line end follows
        for m in _END.finditer(data, pos):
            line = self._line(data, pos, m.start(), out)
            pos = m.end()
            if pos - m.start() == 1 and data[m.start()] == 0x0D:
                redraw = line                # the redraw before it, if any, was overwritten: skipped
            else:
                redraw = None
                out.append(line)
        if redraw is not None:
            out.append(redraw)
        self._append(data, pos, len(data), out)
        return out

    def finish(self) -> list[bytes]:
        """At the end of the output: the last line, if it had no end."""
        if not self._partial:
            return []
        line = bytes(self._partial)
        self._partial.clear()
        return [line]

    def _line(self, data: bytes, start: int, end: int, out: list[bytes]) -> bytes:
        if self._partial:
            self._append(data, start, end, out)
            line = bytes(self._partial)
            self._partial.clear()
            return line
        while end - start > self.max_line:
            out.append(data[start:start + self.max_line])
            start += self.max_line
        return data[start:end]

    def _append(self, data: bytes, start: int, end: int, out: list[bytes]) -> None:
        room = self.max_line - len(self._partial)
        while end - start > room:
            self._partial += data[start:start + room]
            out.append(bytes(self._partial))
            self._partial.clear()
            start += room
            room = self.max_line
        self._partial += data[start:end]
