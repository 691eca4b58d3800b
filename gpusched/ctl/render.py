"""How gpuschedctl's tables look to people: fitted to the terminal's width, times as "3m ago", states in
colour; and, piped or redirected, exactly the plain text scripts read (no cut, no colour, dates).

`Terminal` is the one place that looks at the environment (is stdout a terminal, its width, NO_COLOR,
TERM, --color); everything else here is pure, on text that listing.printable has already escaped (these
functions add only their own colour codes, never a user's).

Colour: only on a terminal, never when NO_COLOR is set (to anything, the empty string too: the issue's
"never with NO_COLOR", stricter than no-color.org's non-empty rule, and what `top` does), never for
TERM=dumb; --color=always and --color=never overrule that (always: even piped).
"""

from __future__ import annotations

import os
import sys
import unicodedata
from typing import Iterable, Mapping, NamedTuple, TextIO

CUT = "…"
MIN_COLUMN = 4                     # a column is never cut narrower than this (3 characters and the "…")
RESET = "\x1b[0m"
# SGR codes per job state; states not named here (queued) stay plain
STATE_COLOURS = {"running": "32", "starting": "36", "stopping": "36", "held": "33", "succeeded": "2",
                 "failed": "31", "rejected": "31", "dependency_failed": "31", "cancelled": "2"}


class Terminal(NamedTuple):
    """Where the output goes: width None means don't cut (not a terminal). (A NamedTuple, not a dataclass:
    importing dataclasses costs a read command more than its listing.)"""
    width: int | None = None
    colour: bool = False

    @property
    def tty(self) -> bool:
        return self.width is not None


def colour_wanted(tty: bool, choice: str, environ: Mapping[str, str]) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return tty and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"


def terminal(stream: TextIO | None = None, choice: str = "auto", environ: Mapping[str, str] | None = None) -> Terminal:
    """The Terminal that `stream` (stdout) is: its width where it is a terminal, colour as the module says."""
    stream = stream or sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        import shutil                                  # here: only a terminal has a width
        width: int | None = shutil.get_terminal_size().columns
    else:
        width = None
    return Terminal(width, colour_wanted(tty, choice, os.environ if environ is None else environ))


def relative(then: float, now: float) -> str:
    """A time as people say it: "just now", "40s ago", "3m ago", "5h ago", "12d ago" (a clock that is
    ahead: "in 3m")."""
    delta = now - then
    ahead = delta < 0
    delta = abs(delta)
    if delta < 1:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if delta >= size:
            n = f"{int(delta // size)}{unit}"
            return f"in {n}" if ahead else f"{n} ago"
    return "just now"


def char_width(c: str) -> int:
    """Columns a printable character takes on a terminal: 2 for East Asian wide ones, 0 for combining
    marks, else 1."""
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def width_of(text: str) -> int:
    return len(text) if text.isascii() else sum(char_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """text cut to `width` terminal columns, its end shown by "…" where it was cut."""
    if width_of(text) <= width:
        return text
    if width <= 0:
        return ""
    out, used = [], 0
    for c in text:
        w = char_width(c)
        if used + w > width - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + CUT


def paint(text: str, sgr: str | None, on: bool) -> str:
    return f"\x1b[{sgr}m{text}{RESET}" if on and sgr else text


def fit_table(rows: list[tuple[str, ...]], width: int | None) -> list[str]:
    """Rows of cells (already escaped) as aligned lines, two spaces apart. Within `width` (None: no limit)
    the widest column is narrowed first, a character at a time, its cells cut with "…"; a line that still
    doesn't fit (every column at MIN_COLUMN) is cut at the width."""
    if not rows:
        return []
    widths = [max(width_of(r[i]) for r in rows) for i in range(len(rows[0]))]
    if width is not None:
        while sum(widths) + 2 * (len(widths) - 1) > width:
            i = max(range(len(widths)), key=lambda k: widths[k])
            if widths[i] <= MIN_COLUMN:
                break
            widths[i] -= 1
    lines = []
    for r in rows:
        cells = [fit(c, w) for c, w in zip(r, widths)]
        line = "  ".join(c + " " * (w - width_of(c)) for c, w in zip(cells, widths)).rstrip()
        lines.append(fit(line, width) if width is not None else line)
    return lines


# --- the queue's table (listing.row's columns) -------------------------------------------------------------

def queue_columns(row: str) -> tuple[int, int, int]:
    """Where STATE and SUBMITTED are in a row of listing.row or fold_row: (state start, submitted start,
    submitted end). Every column but the first has its fixed width; the first (ID) is 7 wide, or wider for an
    array's span ("12[0-99]"), which is never cut and is followed by one space."""
    from gpusched.listing import COLUMNS                 # here: listing's import is only for this table
    first = row.split(" ", 1)[0]
    start = max(COLUMNS[0][1], len(first) + 1)
    widths = [w for _, w in COLUMNS[1:]]
    submitted = start + sum(widths[:-1])
    return start, submitted, submitted + widths[-1]


def queue_row(row: str, submitted: int | None, now: float, term: Terminal) -> str:
    """One row of `gpuschedctl list` for a terminal: SUBMITTED as "3m ago" (when its time is known), STATE
    in its colour, the whole cut to the width."""
    state_at, sub_at, sub_end = queue_columns(row)
    if submitted is not None and len(row) >= sub_end:
        row = row[:sub_at] + relative(submitted, now).ljust(sub_end - sub_at) + row[sub_end:]
    line = fit(row.rstrip(), term.width) if term.width is not None else row
    if not term.colour or len(line) <= state_at:
        return line
    state = line[state_at:state_at + 10].rstrip()
    sgr = STATE_COLOURS.get(state.rstrip(CUT)) or next(
        (c for s, c in STATE_COLOURS.items() if state.endswith(CUT) and s.startswith(state[:-1])), None)
    return line[:state_at] + paint(state, sgr, True) + line[state_at + len(state):]


def queue_table(header: str, rows: Iterable[str], submitted: list[int] | None, now: float,
                term: Terminal) -> Iterable[str]:
    """The header and rows of `gpuschedctl list` for a terminal (queue_row), the header's SUBMITTED kept."""
    yield fit(header, term.width) if term.width is not None else header
    for i, row in enumerate(rows):
        yield queue_row(row, submitted[i] if submitted and i < len(submitted) else None, now, term)
