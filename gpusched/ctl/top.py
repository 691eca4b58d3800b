"""top: the live view of the GPUs and the jobs (like htop or nvitop), refreshed in place, with keys to
follow a job's log, cancel it, hold or release it. Not on a terminal (a pipe, a file), or with --once, it
prints one snapshot and exits, as `top -b -n 1` does; --json prints the same snapshot for scripts.

Built on curses from Python's standard library: it handles keys, resizing and redrawing only what changed,
and needs no new dependency (docs/cli.md says why not rich or urwid). What the screen shows and what a key
does are topview.py's pure functions; this module runs the terminal and talks to the daemon: one bounded
`Top` call per refresh (topfeed.py: the running jobs and the first waiting ones, never the whole queue),
`Show` for a job's details, and the same verbs as `gpuschedctl cancel/hold/release`, so the daemon's access
rules decide and a refusal is one line on the status line.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from typing import TYPE_CHECKING, Any

from gpusched.ctl import client as clientmod
from gpusched.ctl.common import UNREACHABLE, CtlError, print_json

if TYPE_CHECKING:                                      # annotations only: the import costs every command
    from gpusched.ctl.topview import Action


CALL_TIMEOUT = 5.0            # seconds a refresh waits for the daemon (the screen stays; it says so, retries)
SNAPSHOT_WAITING = 50         # waiting jobs in a snapshot (--once, a pipe, --json)
MIN_DELAY = 1.0               # seconds between refreshes at least: each costs the daemon a (bounded) answer
MAX_DELAY = 3600.0


class Source:
    """The daemon, asked again after a failure: top keeps running while gpusched restarts."""

    def __init__(self) -> None:
        self._client: Any = None
        self.error = ""

    def client(self) -> Any:
        if self._client is None:
            self._client = clientmod.Client(timeout=CALL_TIMEOUT)
        return self._client

    def fetch(self, limit: int, mine: bool) -> dict[str, Any] | None:
        """Top's answer, or None with self.error saying why."""
        try:
            top = self.client().call("Top", limit, mine)
        except CtlError as e:
            if e.code == UNREACHABLE:
                self._client = None                 # a new connection next time (the bus or daemon restarted)
            self.error = str(e)
            return None
        self.error = ""
        return top

    def act(self, job: dict[str, Any], verb: str) -> tuple[str, bool]:
        """cancel, hold or release one job, as gpuschedctl does (an array's element as ID[i]: that element
        alone, not its array). (what the daemon said, refused?)."""
        from gpusched.ctl import topview
        method = {"cancel": "Cancel", "hold": "Hold", "release": "Release"}[verb]
        try:
            if job.get("array_id"):
                answer = self.client().call("ElementAct", verb, job["array_id"], job.get("array_index", 0))
            else:
                answer = self.client().call(method, job["id"])
        except CtlError as e:
            return str(e), True                       # the refusal names the job
        return f"job {topview.target(job)}: {answer}", False


def cmd_top(args: argparse.Namespace) -> int:
    from gpusched.ctl import topview
    from gpusched.ctl.topview import View
    source = Source()
    live = not (args.once or args.json) and sys.stdin.isatty() and sys.stdout.isatty()
    # the first answer is not retried: a daemon never reached is an error (exit 3 when unreachable)
    top = source.client().call("Top", SNAPSHOT_WAITING, args.mine)
    if args.json:
        print_json("top", top)
        return 0
    if not live:
        width = os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else \
            _env_int("COLUMNS", 160)
        view = View(mine=args.mine, cursor=False)
        for line in topview.draw(top, view, width, None, me=os.getuid()):
            print(topview.text_of(line).rstrip())
        return 0
    return _in_curses(lambda screen: Screen(screen, source, args, top).run())


def _in_curses(fn: Any) -> int:
    """fn(screen) with the terminal in curses mode, put back whatever happens. Not curses.wrapper: it starts
    colours on every colour terminal, and then ncurses writes colour escapes even with NO_COLOR."""
    import curses
    screen = curses.initscr()
    try:
        curses.noecho()
        curses.cbreak()
        screen.keypad(True)
        return fn(screen)
    finally:
        screen.keypad(False)
        curses.nocbreak()
        curses.echo()
        curses.endwin()


def delay(text: str) -> float:
    """-d: seconds between refreshes, held between MIN_DELAY and MAX_DELAY (as procps top takes any)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds")
    return min(max(value, MIN_DELAY), MAX_DELAY)


def _env_int(name: str, default: int) -> int:
    try:
        return max(20, int(os.environ.get(name, "")))
    except ValueError:
        return default


def colour_wanted() -> bool:
    """Colours on a terminal, never with NO_COLOR set (no-color.org; whatever its value, as issue 11 asks)."""
    return "NO_COLOR" not in os.environ


class Screen:
    """The curses loop: refresh every `delay` seconds or on a key, redraw on every change and resize."""

    def __init__(self, screen: Any, source: Source, args: argparse.Namespace, top: dict[str, Any]):
        from gpusched.ctl.topview import View
        import curses
        self.curses = curses
        self.screen = screen
        self.source = source
        self.args = args
        self.top = top
        self.view = View(mine=args.mine)
        self.delay = args.delay
        self.fetched = time.monotonic()
        self.attrs = self._attrs()
        self.utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"

    def _attrs(self) -> dict[str, int]:
        c = self.curses
        attrs = {"title": c.A_BOLD, "header": c.A_BOLD, "section": c.A_BOLD, "selected": c.A_REVERSE,
                 "error": c.A_BOLD, "prompt": c.A_BOLD, "dim": c.A_DIM, "mine": c.A_BOLD}
        try:
            c.curs_set(0)
        except c.error:
            pass                                      # a terminal that can't hide the cursor
        if not colour_wanted() or not c.has_colors():
            return attrs
        c.start_color()
        c.use_default_colors()
        colours = {"running": c.COLOR_GREEN, "waiting": c.COLOR_YELLOW, "held": c.COLOR_MAGENTA,
                   "stopping": c.COLOR_CYAN, "free": c.COLOR_GREEN, "busy": c.COLOR_CYAN,
                   "foreign": c.COLOR_RED, "error": c.COLOR_RED, "prompt": c.COLOR_YELLOW, "title": c.COLOR_CYAN}
        for n, (name, colour) in enumerate(colours.items(), start=1):
            c.init_pair(n, colour, -1)
            attrs[name] = attrs.get(name, 0) | c.color_pair(n)
        return attrs

    def run(self) -> int:
        from gpusched.ctl import topview
        c = self.curses
        while True:
            self.paint()
            wait = self.delay - (time.monotonic() - self.fetched)
            self.screen.timeout(max(0, int(wait * 1000)))
            try:
                key = self.screen.get_wch()
            except c.error:                           # the timeout: time to refresh
                self.refresh()
                continue
            except KeyboardInterrupt:
                return 0
            name = self._key(key)
            if name is None:
                continue
            action = topview.handle(self.view, name, self.top)
            if action is not None and self.do(action):
                return 0

    def paint(self) -> None:
        """The screen as topview draws it; curses sends only what changed since the last paint."""
        from gpusched.ctl import topview
        height, width = self.screen.getmaxyx()
        lines = topview.draw(self.top, self.view, width, height, me=os.getuid(), error=self.source.error)
        self.screen.erase()
        for y, line in enumerate(lines):
            x = 0
            for text, attr in line:
                if not self.utf8:                     # a terminal that can't show UTF-8: never garbage
                    text = text.encode("ascii", "replace").decode("ascii")
                try:
                    self.screen.addstr(y, x, text, self.attrs.get(attr, 0))
                except self.curses.error:
                    pass                              # the bottom-right cell: curses can't move past it
                x += topview.cells(text)
        self.screen.refresh()

    def _key(self, key: Any) -> str | None:
        c = self.curses
        if isinstance(key, str):
            return {"\n": "enter", "\r": "enter", "\x1b": "esc", "\x03": "q"}.get(key, key)
        if key == c.KEY_RESIZE:
            return None                               # the next paint uses the new size
        return {c.KEY_UP: "up", c.KEY_DOWN: "down", c.KEY_PPAGE: "pgup", c.KEY_NPAGE: "pgdn", c.KEY_HOME: "home",
                c.KEY_END: "end", c.KEY_ENTER: "enter"}.get(key)

    def refresh(self) -> None:
        height, _ = self.screen.getmaxyx()
        top = self.source.fetch(max(20, min(height, 200)), self.view.mine)
        if top is not None:
            self.top = top
        self.fetched = time.monotonic()

    def do(self, action: Action) -> bool:
        """Carry out a key's action; True: quit."""
        from gpusched.ctl import topview
        if action.kind == "quit":
            return True
        if action.kind == "act" and action.job is not None:
            message, refused = self.source.act(action.job, action.verb)
            self.view.say(message, error=refused)
        elif action.kind == "log" and action.job is not None:
            self.follow(action.job)
        elif action.kind == "show" and action.job is not None:
            try:
                self.view.detail = topview.detail_lines(self.source.client().call("Show", action.job["id"]))
            except CtlError as e:
                self.view.say(str(e), error=True)
        self.refresh()
        return False

    def follow(self, job: dict[str, Any]) -> None:
        """`gpuschedctl logs -f` of the job, outside curses, until it ends, q or Ctrl-C; then back. A log
        the caller may not read is refused on the status line, without leaving the screen."""
        from gpusched.ctl import topview
        try:
            shown = self.source.client().call("Show", job["id"])
        except CtlError as e:
            self.view.say(str(e), error=True)
            return
        if "source" not in shown:                     # the daemon hides a job's private fields from others
            self.view.say(f"job {topview.target(job)} belongs to {shown.get('user')}; its log is readable "
                          f"only by {shown.get('user')}, root and admins", error=True)
            return
        self.curses.def_prog_mode()
        self.curses.endwin()
        try:
            _follow_outside(job, self.args)
        finally:
            self.curses.reset_prog_mode()
            self.screen.clear()


def _follow_outside(job: dict[str, Any], args: argparse.Namespace) -> None:
    """Run `gpuschedctl logs -f ID` (the same code, its own process: no fork of a client with the bus's
    threads) while reading keys: q ends it; Ctrl-C ends it (the terminal sends SIGINT to both of us: we
    only note it). When it ends by itself (the job ended, or it can't read the log and says why), a key
    goes back."""
    from gpusched.ctl import topview
    out = sys.stdout
    out.write(f"--- job {topview.target(job)}: its log (q or Ctrl-C: back to top) ---\n")
    out.flush()
    interrupted: list[int] = []
    old_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(1))
    fd = sys.stdin.fileno()
    old_mode = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        argv = [sys.executable, "-m", "gpusched.ctl", "--config", args.config, "logs", "-f", str(job["id"])]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready and os.read(fd, 64).strip().lower().startswith(b"q"):
                proc.terminate()
                break
        proc.wait()
        if not interrupted and proc.returncode != -signal.SIGTERM:
            out.write("--- press a key to go back to top ---")
            out.flush()
            while not interrupted and not select.select([fd], [], [], 0.2)[0]:
                pass
            if not interrupted:
                os.read(fd, 64)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old_mode)
        signal.signal(signal.SIGINT, old_handler)


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="the live view: GPUs, running and waiting jobs, refreshed in place; keys to "
                                   "follow a log, cancel, hold or release (not on a terminal: one snapshot)")
    p.add_argument("-d", "--delay", type=delay, default=2.0, metavar="SECONDS",
                   help=f"seconds between refreshes (default 2, at least {MIN_DELAY:g})")
    p.add_argument("--mine", action="store_true", help="waiting jobs: only yours (the m key toggles it)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit (as on a pipe)")
    p.add_argument("--json", action="store_true", help="one snapshot as JSON: {\"version\": 1, \"top\": ...}")
    p.set_defaults(fn=cmd_top)
