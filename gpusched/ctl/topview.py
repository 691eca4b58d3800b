"""gpuschedctl top's screen and keys, pure: what the daemon's Top answer looks like at a given terminal size
and selection, and what a key does to the view. No curses and no bus here, so unit tests can check both
(tests/test_top.py); ctl/top.py runs the terminal and the calls.

A screen is a list of lines, each a list of (text, attribute) segments; an attribute is a name ("title",
"running", "selected", ...) that top.py turns into a curses attribute, or into nothing without colour.
Everything shown that comes from the daemon (job names, users, reasons, GPU names, foreign processes'
commands: other people wrote them) passes through listing.printable, and every line is cut to the
terminal's width in cells (a wide character takes two), so nothing wraps or writes on the terminal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gpusched.listing import printable
from gpusched.ctl.render import fit
from gpusched.ctl.render import width_of as cells
from gpusched.units import format_size

Segment = tuple[str, str]              # (text, attribute name; "" for plain)
Line = list[Segment]

KEYS = "↑↓/jk select  l log  c cancel  h hold/release  Enter details  m mine  ? help  q quit"
HELP = (
    "gpuschedctl top: the GPUs and the jobs, refreshed every few seconds (-d).",
    "",
    "  up/down, j/k     select a job (PgUp/PgDn, Home/End: further)",
    "  l                follow the selected job's log (yours; root and admins: anyone's);",
    "                   q or Ctrl-C goes back to top",
    "  c                cancel the selected job (asks first; a running job gets its grace)",
    "  h                hold the selected queued job, or release it if it is held",
    "  Enter, i         everything about the selected job (gpuschedctl show)",
    "  m                waiting jobs: everyone's, or only yours",
    "  r                refresh now",
    "  ?                this help",
    "  q, Ctrl-C        quit",
    "",
    "Who may act on a job is gpusched's rule, as for gpuschedctl cancel/hold/release:",
    "its owner, root and the admin group. A refusal is shown on the status line.",
    "",
    "Press any key to go back.",
)
MAX_FOREIGN = 3                       # foreign processes listed under a GPU (then "and N more")
STATE_ATTR = {"running": "running", "starting": "running", "stopping": "stopping", "queued": "waiting"}


# --- cells: what fits a terminal's width -----------------------------------------------------------------

def pad(text: str, width: int) -> str:
    """`text` fitted and padded to exactly `width` cells."""
    text = fit(text, width)
    return text + " " * (width - cells(text))


def fit_line(line: Line, width: int) -> Line:
    """A line's segments cut so that the whole takes at most `width` cells."""
    out: Line = []
    left = width
    for text, attr in line:
        if left <= 0:
            break
        text = fit(text, left)
        out.append((text, attr))
        left -= cells(text)
    return out


def text_of(line: Line) -> str:
    return "".join(t for t, _ in line)


# --- figures -------------------------------------------------------------------------------------------

def elapsed(seconds: float) -> str:
    """A time span as top shows it: 5:07, 1:02:03, 3d04h."""
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _size(n: Any) -> str:
    return format_size(int(n)) if isinstance(n, int) and n >= 0 else "-"


def _bar(percent: float, width: int) -> str:
    full = round(max(0.0, min(percent, 100.0)) / 100 * width)
    return "[" + "|" * full + " " * (width - full) + "]"


def target(job: dict[str, Any]) -> str:
    """How people name a job: its id, or an array's element as ID[i] (the array's id and the index)."""
    if job.get("array_id"):
        return f"{job['array_id']}[{job.get('array_index', 0)}]"
    return str(job["id"])


def _gpus(job: dict[str, Any]) -> str:
    if job.get("gpus"):
        return ",".join(str(i) for i in job["gpus"])
    n = job.get("gpus_requested") or 0
    return f"({n})" if n else "-"


# --- the view: what the person chose ------------------------------------------------------------------

@dataclass
class View:
    selected: int | None = None            # the selected job's id
    index: int = 0                          # and its row, to land near it when it leaves the list
    mine: bool = False                      # waiting jobs: only the caller's
    message: str = ""                       # the status line: an action's outcome, a refusal
    error: bool = False                     # ... which is an error
    confirm: dict[str, Any] | None = None   # the job a cancel waits on y/n for
    help: bool = False
    detail: list[str] | None = None         # gpuschedctl show's lines of a job, while shown
    page: int = 10                          # rows PgUp/PgDn move (set from the screen's height)
    cursor: bool = True                     # a selected row is marked (not in a printed snapshot)

    def say(self, message: str, error: bool = False) -> None:
        self.message, self.error = message, error


@dataclass(frozen=True)
class Action:
    """What the loop must do after a key: quit, refresh, act (verb on job), log (follow job), show (job)."""
    kind: str
    job: dict[str, Any] | None = None
    verb: str = ""


def rows(top: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The jobs one can select, in screen order: the running ones, then the waiting ones."""
    if not top:
        return []
    return list(top.get("running") or ()) + list(top.get("waiting") or ())


def selection(view: View, jobs: list[dict[str, Any]]) -> int | None:
    """The selected row: the selected job's, or the row nearest where it was when it left (None: no jobs).
    Keeps view.selected and view.index up to date."""
    if not jobs:
        view.selected = None
        return None
    ids = [j["id"] for j in jobs]
    if view.selected in ids:
        i = ids.index(view.selected)
    else:
        i = max(0, min(view.index, len(jobs) - 1))
    view.selected, view.index = ids[i], i
    return i


_MOVES = {"up": -1, "k": -1, "down": 1, "j": 1}


def handle(view: View, key: str, top: dict[str, Any] | None) -> Action | None:
    """What `key` does (a character, or "up", "down", "pgup", "pgdn", "home", "end", "enter", "esc"):
    the view is changed here; what needs the daemon or the terminal comes back as an Action."""
    if view.help or view.detail is not None:            # any key closes the overlay
        view.help, view.detail = False, None
        return None
    jobs = rows(top)
    i = selection(view, jobs)
    job = jobs[i] if i is not None else None
    if view.confirm is not None:
        pending, view.confirm = view.confirm, None
        if key in ("y", "Y"):
            return Action("act", pending, "cancel")
        view.say(f"job {target(pending)} not cancelled")
        return None
    if key in ("q", "Q"):
        return Action("quit")
    if key == "?":
        view.help = True
        return None
    if key in ("r", "R"):
        return Action("refresh")
    if key == "m":
        view.mine = not view.mine
        view.say("waiting jobs: only yours" if view.mine else "waiting jobs: everyone's")
        return Action("refresh")
    moves = {**_MOVES, "pgup": -view.page, "pgdn": view.page, "home": -len(jobs), "g": -len(jobs),
             "end": len(jobs), "G": len(jobs)}
    if key in moves:
        if i is not None:
            view.index = max(0, min(i + moves[key], len(jobs) - 1))
            view.selected = jobs[view.index]["id"]
        return None
    if key == "esc":
        view.say("")
        return None
    if key not in ("c", "h", "l", "enter", "i", "\n"):
        return None
    if job is None:
        view.say("no job selected", error=True)
        return None
    if key == "c":
        view.confirm = job
        return None
    if key == "h":
        if job.get("state") != "queued":
            view.say(f"job {target(job)} is {job.get('state')}: only a queued job can be held (c cancels it)",
                     error=True)
            return None
        return Action("act", job, "release" if job.get("held") else "hold")
    if key == "l":
        return Action("log", job)
    return Action("show", job)


# --- the screen -------------------------------------------------------------------------------------------

def draw(top: dict[str, Any] | None, view: View, width: int, height: int | None, *, me: int,
         error: str = "", now: float | None = None) -> list[Line]:
    """The screen: `top` (the daemon's Top answer; None before the first), `view`, a terminal of
    width x height cells (height None: every line, no status or key lines, for a snapshot on a pipe),
    `me` the caller's uid (their jobs are marked), `error` why the last refresh failed."""
    now = time.time() if now is None else now
    width = max(width, 1)
    if view.help and height is not None:
        return _final([[(line, "")] for line in HELP], width, height)
    if view.detail is not None and height is not None:
        return _final([[(line, "")] for line in view.detail] + [[("", "")], [("Press any key to go back.", "dim")]],
                      width, height)
    head = _summary(top, view, now)
    head += _gpu_lines(top, width)
    body, sel = _job_lines(top, view, width, now, me)
    if height is None:
        lines = head + body
        if error:
            lines.append([(f"gpusched: {printable(error)}", "error")])
        return [fit_line(line, width) for line in lines]
    foot = [_status(view, error), [(KEYS, "dim")]]
    room = max(0, height - len(head) - len(foot))
    if len(head) + len(foot) > height:                 # a tiny terminal: the status line matters most
        return _final(head[:max(0, height - len(foot))] + foot, width, height)
    view.page = max(1, room - 4)
    if sel is not None and len(body) > room:           # scroll so that the selected job is on the screen
        start = min(max(0, sel - room // 2), len(body) - room)
        body = body[start:start + room]
    else:
        body = body[:room]
    body += [[("", "")]] * (room - len(body))
    return _final(head + body + foot, width, height)


def _final(lines: list[Line], width: int, height: int) -> list[Line]:
    return [fit_line(line, width) for line in lines[:height]]


def _summary(top: dict[str, Any] | None, view: View, now: float) -> list[Line]:
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    if top is None:
        return [[(f"gpusched top  {clock}", "title")], [("", "")]]
    c = top.get("counts") or {}
    gpus = (top.get("gpus") or {}).get("gpus") or []
    free = sum(1 for g in gpus if g.get("state") == "free")
    text = (f"gpusched top  {clock}  {c.get('running', 0)} running, {c.get('queued', 0)} queued, "
            f"GPUs {free}/{len(gpus)} free")
    line: Line = [(text, "title")]
    if (top.get("gpus") or {}).get("simulated"):
        line.append((" (simulated)", "dim"))
    if top.get("draining"):
        line.append((f"  draining (by {printable(str(top['draining']))}): no job starts", "error"))
    return [line, [("", "")]]


def _gpu_lines(top: dict[str, Any] | None, width: int) -> list[Line]:
    if top is None:
        return []
    info = top.get("gpus") or {}
    out: list[Line] = []
    if info.get("error"):
        out.append([(f"GPU probe failing: {printable(str(info['error']))}", "error")])
    gpus = info.get("gpus") or []
    if not gpus:
        return out + [[("no GPUs", "dim")], [("", "")]]
    holders = {j["id"]: j for j in top.get("running") or ()}
    name_w = 22 if width >= 100 else 14
    bar = width >= 110
    out.append([(f"{'GPU':<4}{'NAME':<{name_w + 1}}{'UTIL':<{18 if bar else 6}}{'MEMORY':<16}HOLDER", "header")])
    for g in gpus:
        util = g.get("utilization")
        util_text = "-" if util is None else f"{util:.0f}%"
        if bar:
            util_text = (_bar(util, 10) if util is not None else " " * 12) + f" {util_text:>4}"
        used, total = g.get("memory_used"), g.get("memory_total")
        memory = f"{_size(used)}/{_size(total)}"
        state = printable(str(g.get("state", "")))
        job = holders.get(g.get("job"))
        holder = state
        if job is not None:
            holder = f"{state}: {printable(job['user'])} {printable(job['name'])}"
        attr = "free" if state == "free" else "foreign" if "foreign" in state or g.get("contested") else "busy"
        out.append([(f"{g.get('index', '?'):<4}{pad(printable(str(g.get('name', ''))), name_w)} "
                     f"{pad(util_text, 17 if bar else 5)} {pad(memory, 15)} ", ""), (holder, attr)])
        foreign = g.get("foreign") or []
        for p in foreign[:MAX_FOREIGN]:
            command = p.get("cmdline") or p.get("name") or ""
            memory = _size(p.get("gpu_memory")) if p.get("gpu_memory") is not None else "-"
            out.append([(f"    pid {p.get('pid')}  {printable(str(p.get('user', '?')))}  {memory}  "
                         f"{printable(str(command))}", "foreign")])
        more = len(g.get("foreign_pids") or ()) + (g.get("foreign_pids_more") or 0) - min(len(foreign), MAX_FOREIGN)
        if more > 0:
            out.append([(f"    and {more} more process(es) gpusched did not start", "foreign")])
    return out + [[("", "")]]


def _job_lines(top: dict[str, Any] | None, view: View, width: int, now: float,
               me: int) -> tuple[list[Line], int | None]:
    """The running and waiting sections, and the line of the selected job in them (None: no job)."""
    if top is None:
        return [[("waiting for gpusched…", "dim")]], None
    jobs = rows(top)
    sel_row = selection(view, jobs) if view.cursor else None
    name_w = 24 if width >= 120 else 16
    lines: list[Line] = []
    sel_line = None
    running, waiting = top.get("running") or [], top.get("waiting") or []
    c = top.get("counts") or {}
    title = f"RUNNING  {c.get('running', len(running))}"
    if c.get("running", 0) > len(running):
        title += f" (the first {len(running)} shown)"
    lines.append([(title, "section")])
    lines.append([("  " + _cols(("ID", 8), ("USER", 11), ("NAME", name_w + 1), ("GPUS", 8), ("STATE", 10),
                                ("TIME", 10)) + "INFO", "header")])
    n = 0
    for job in running:
        started = job.get("started")
        cells_ = (target(job), job["user"], job["name"], _gpus(job), job["state"],
                  elapsed(now - started) if started else "-")
        if n == sel_row:
            sel_line = len(lines)
        lines.append(_row(job, cells_, (8, 11, name_w + 1, 8, 10, 10), 4, n == sel_row, me))
        n += 1
    if not running:
        lines.append([("  none", "dim")])
    lines.append([("", "")])
    queued = c.get("queued", len(waiting))
    if view.mine:
        title = f"WAITING  yours: {len(waiting)}" + (" shown" if len(waiting) else "") + f" of {queued} queued"
    else:
        title = f"WAITING  {queued}" + (f" (the first {len(waiting)} shown)" if queued > len(waiting) else "")
    lines.append([(title, "section")])
    lines.append([("  " + _cols(("ID", 8), ("USER", 11), ("NAME", name_w + 1), ("GPUS", 8), ("PRIO", 6),
                                ("WAIT", 10)) + "REASON", "header")])
    for job in waiting:
        cells_ = (target(job), job["user"], job["name"], _gpus(job), str(job.get("priority", "-")),
                  elapsed(now - job.get("submitted", now)))
        if n == sel_row:
            sel_line = len(lines)
        lines.append(_row(job, cells_, (8, 11, name_w + 1, 8, 6, 10), 4, n == sel_row, me))
        n += 1
    if not waiting:
        lines.append([("  none", "dim")])
    return lines, sel_line


def _cols(*cols: tuple[str, int]) -> str:
    return "".join(pad(text, w - 1) + " " for text, w in cols)


def _row(job: dict[str, Any], values: tuple[str, ...], widths: tuple[int, ...], state_col: int, selected: bool,
         me: int) -> Line:
    """One job's line: a marker (> selected, * yours), its cells (escaped, cut), the state in its colour,
    then its reason (a held job: who held it)."""
    mark = (">" if selected else " ") + ("*" if job.get("uid") == me else " ")
    texts = [pad(printable(str(v)), w - 1) + " " for v, w in zip(values, widths)]
    state = str(job.get("state", ""))
    attr = "held" if job.get("held") else STATE_ATTR.get(state, "")
    info = printable(str(job.get("reason") or "")).replace("\n", " ")
    if job.get("held") and not info:
        info = f"held by {printable(str(job['held']))}"
    line: Line = [(mark + "".join(texts[:state_col]), "mine" if job.get("uid") == me else ""),
                  (texts[state_col], attr), ("".join(texts[state_col + 1:]) + info, "")]
    if selected:
        line = [(t, "selected") for t, _ in line]
    return line


def _status(view: View, error: str) -> Line:
    if view.confirm is not None:
        j = view.confirm
        return [(f"Cancel job {target(j)} ({printable(j['user'])}, {printable(j['name'])})? y/n", "prompt")]
    if error:
        return [(f"gpusched unreachable, retrying: {printable(error)}", "error")]
    if view.message:
        return [(printable(view.message), "error" if view.error else "status")]
    return [("", "")]


def detail_lines(job: dict[str, Any]) -> list[str]:
    """gpuschedctl show's answer as lines for the details screen: `key: value`, every value escaped, a
    value's own line breaks kept as separate lines."""
    out: list[str] = []
    spec = job.get("spec") if isinstance(job.get("spec"), dict) else {}
    for key, value in [(k, v) for k, v in job.items() if k != "spec"] + list(spec.items()):
        if key == "gpus" and isinstance(value, list):
            value = ", ".join(str(g.get("index")) if isinstance(g, dict) else str(g) for g in value) or "-"
        parts = str(value).split("\n")
        out.append(f"{printable(str(key)):>16}: {printable(parts[0])}")
        out += [" " * 18 + printable(p) for p in parts[1:]]
    return out
