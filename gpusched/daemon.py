"""gpuschedd's main loop (GLib): when scheduling passes run, the one-second tick, the watchdog, STATUS=.

Everything runs on this one thread (the spool watcher's thread only posts names to it), so the job table
needs no locks. The loop decides nothing about jobs: it runs the engine's passes and ticks, the intake's
drain, the recorder's and the engine's batches at idle priority, and tells the runner when a monitor exits.
app.py builds the parts and hands them to it.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any, Callable

from gi.repository import GLib

from gpusched import journal
from gpusched.clock import Clock, SystemClock
from gpusched.log import guarded, log


class Loop:
    def __init__(self, clock: Clock | None = None):
        self.clock = clock or SystemClock()
        self.engine: Any = None                        # set by attach(): the parts are built with our callbacks
        self.intake: Any = None
        self.runner: Any = None
        self._pass_pending = False
        self._last_pass_end = 0.0
        self._last_status = ""

    def attach(self, engine: Any, intake: Any, runner: Any) -> None:
        self.engine, self.intake, self.runner = engine, intake, runner

    # --- what the parts are given ----------------------------------------------------------------------

    def idle(self, fn: Callable[[], bool]) -> None:
        """Run fn at idle priority, again while it returns True (batches that let timers and bus calls in).
        Callable from any thread."""
        GLib.idle_add(fn, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def later(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Call fn once, `seconds` from now (at default priority, on this thread)."""
        call = guarded(fn)
        GLib.timeout_add(max(1, int(seconds * 1000)), lambda: call() and False)

    def watch_exit(self, pid: int, fn: Callable[[], None]) -> None:
        """Call fn once process `pid` has exited: a pidfd works for the zygote's children as for our own."""
        call = guarded(fn)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:                      # already gone (and reaped by the zygote)
            GLib.idle_add(lambda: call() and False)
            return

        def exited(fd: int, _cond: Any) -> bool:
            os.close(fd)
            call()
            return False
        GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, pidfd, GLib.IOCondition.IN, exited)

    def request_pass(self) -> None:
        """The engine's wake-up. At idle priority: the pass runs once the pending events (a burst of files,
        many jobs ending) are handled, so a burst costs one pass and a lone event no delay. Passes over a huge
        queue are spaced out so that they take at most a fifth of the daemon's time (a 100 ms pass waits
        400 ms after the last one)."""
        if self._pass_pending:
            return
        self._pass_pending = True
        wait = self._last_pass_end + 4 * self.engine.stats["last_policy_seconds"] - self.clock.monotonic()
        if wait > 0.001:
            GLib.timeout_add(int(wait * 1000) + 1, self._idle_pass)
        else:
            GLib.idle_add(self._scheduling_pass, priority=GLib.PRIORITY_DEFAULT_IDLE)

    # --- the loop's own work ---------------------------------------------------------------------------

    def _idle_pass(self) -> bool:
        GLib.idle_add(self._scheduling_pass, priority=GLib.PRIORITY_DEFAULT_IDLE)
        return False

    def _scheduling_pass(self) -> bool:
        self._pass_pending = False
        self.engine.schedule()
        self._last_pass_end = self.clock.monotonic()
        self.update_status()
        return False

    def tick(self) -> bool:
        try:
            self.engine.tick()
            self.runner.reap()
            self.intake.tick()
            self.update_status()
        except Exception:  # noqa: BLE001
            log(f"internal error in tick: {traceback.format_exc()}", 3, multiline=True)
        return True

    def update_status(self) -> None:
        line = self.engine.status_line()
        if line != self._last_status:
            self._last_status = line
            journal.notify(f"STATUS={line}")

    def run(self) -> None:
        """Until SIGTERM or SIGINT: READY=1 first (recovery is done by then), WATCHDOG=1 pings, the tick."""
        loop = GLib.MainLoop()
        GLib.timeout_add(1000, self.tick)
        interval = journal.watchdog_interval()
        if interval:
            GLib.timeout_add(int(interval * 1000), lambda: journal.notify("WATCHDOG=1") or True,
                             priority=GLib.PRIORITY_HIGH)

        def quit_loop() -> bool:
            journal.notify("STOPPING=1")
            log("gpusched stopping; running jobs keep running")
            loop.quit()
            return False

        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_loop)
        status = self.engine.status_line()
        journal.notify(f"READY=1\nSTATUS={status}")
        log(f"gpusched ready: {status}")
        loop.run()


def main(argv: list[str] | None = None) -> int:
    """The old entry point (`python3 -m gpusched.daemon`, `gpusched.daemon:main`), kept so that a unit file
    from before the split still starts the daemon during an upgrade; the daemon is gpusched.app now."""
    from gpusched.app import main as app_main          # not at the top: app imports this module
    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
