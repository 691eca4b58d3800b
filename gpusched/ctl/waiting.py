"""wait (block until jobs end, exit with how they ended) and why (where a job stands and when it may start).

wait polls the daemon's Outcomes, which answers from the job table for the ids asked (no scan of the queue),
at most once a second once the first few seconds are past: a wait of hours costs the daemon nothing that
matters. If the daemon goes away (a restart, an upgrade), wait says so once and keeps asking until it is
back: jobs keep running meanwhile and the new daemon re-adopts them and records how they ended.
"""

from __future__ import annotations

import argparse
import signal
import time
from datetime import datetime
from typing import Any, Callable

from gpusched.ctl import client as clientmod
from gpusched.ctl.common import (FAILED, TIMED_OUT, UNREACHABLE, CtlError, _field, _shown, job_target,
                                 print_json, printable, warn)
from gpusched.units import format_duration, parse_duration

FIRST_POLL = 0.1           # seconds: a short job is seen ending soon after it does...
POLL = 1.0                 # ...and a long wait asks once a second
MAX_IDS = 1000             # ids per Outcomes call (api.MAX_IDS)


def exit_status(outcome: dict[str, Any]) -> int:
    """How one ended job (or array) ended, as an exit status: a job's own exit code; 128 + the signal's
    number for a job killed by a signal; 1 for a job that ended without either (cancelled before it began,
    dependency_failed, rejected) or failed without a non-zero code; an array: 0 when every job succeeded,
    else 1."""
    if "array" in outcome:
        return 0 if not outcome.get("failed") else FAILED
    if outcome.get("state") == "succeeded":
        return 0
    sig = outcome.get("signal")
    if sig:
        try:
            return 128 + int(signal.Signals[sig] if not str(sig).isdigit() else int(sig))
        except (KeyError, ValueError):
            return FAILED
    code = outcome.get("exit_code")
    if isinstance(code, int) and 0 < code < 256:
        return code
    return FAILED


def overall(outcomes: list[dict[str, Any]]) -> int:
    """wait's exit status: one target's own; several: 0 if every one succeeded, else 1."""
    if len(outcomes) == 1:
        return exit_status(outcomes[0])
    return 0 if all(exit_status(o) == 0 for o in outcomes) else FAILED


def next_poll(previous: float) -> float:
    return min(POLL, previous * 2) if previous else FIRST_POLL


class Waiter:
    """The poll loop, over `connect` (a bus client's factory), `clock` and `sleep`, so it can be tested."""

    def __init__(self, connect: Callable[[], Any], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] = warn):
        self.connect, self.clock, self.sleep, self.say = connect, clock, sleep, say
        self._client: Any = None
        self._away = False

    def _call(self, method: str, *args: Any) -> Any:
        """One call; UNREACHABLE raises (the caller waits and asks again); the client is made again after."""
        try:
            if self._client is None:
                self._client = self.connect()
            answer = self._client.call(method, *args)
        except CtlError as e:
            if e.code == UNREACHABLE:
                self._client = None
                if not self._away:
                    self._away = True
                    self.say(f"gpusched can't be reached ({e}); waiting for it to come back (jobs keep running)")
            raise
        if self._away:
            self._away = False
            self.say("gpusched is back; waiting on")
        return answer

    def run(self, targets: list[tuple[int, int | None]], timeout: float | None) -> list[dict[str, Any]]:
        """Block until every target has ended; their outcomes in the order given. CtlError(TIMED_OUT) when
        `timeout` seconds pass first; a refusal (no such job) is raised at once."""
        deadline = None if timeout is None else self.clock() + timeout
        ids: dict[int, int] = {}                         # target position -> job id
        done: dict[int, dict[str, Any]] = {}             # job id -> its outcome, once final
        last: dict[int, dict[str, Any]] = {}
        delay = 0.0
        while True:
            try:
                for n, (job_id, index) in enumerate(targets):
                    if n not in ids:
                        ids[n] = job_id if index is None else int(self._call("Element", job_id, index))
                pending = sorted({i for i in ids.values() if i not in done})
                for k in range(0, len(pending), MAX_IDS):
                    for o in self._call("Outcomes", pending[k:k + MAX_IDS]):
                        last[o["id"]] = o
                        if o["final"]:
                            done[o["id"]] = o
                if len(done) == len(set(ids.values())) and len(ids) == len(targets):
                    return [done[ids[n]] for n in range(len(targets))]
            except CtlError as e:
                if e.code != UNREACHABLE:
                    raise
            if deadline is not None and self.clock() >= deadline:
                raise CtlError(_timed_out(targets, ids, last, done, timeout or 0.0, self._away), TIMED_OUT)
            delay = next_poll(delay)
            self.sleep(delay if deadline is None else min(delay, max(0.0, deadline - self.clock())))


def _timed_out(targets: list[tuple[int, int | None]], ids: dict[int, int], last: dict[int, dict[str, Any]],
               done: dict[int, dict[str, Any]], timeout: float, away: bool) -> str:
    waiting = [(t, last.get(ids.get(n, -1))) for n, t in enumerate(targets) if ids.get(n) not in done]
    shown = ", ".join(f"job {_shown(t)} " + (o["state"] if o else "unknown") for t, o in waiting[:5])
    more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
    why = "; gpusched is still unreachable" if away else ""
    return (f"--timeout {format_duration(timeout)} passed: still waiting for {shown}{more}{why}; "
            f"run `gpuschedctl wait` again to keep waiting")


def cmd_wait(args: argparse.Namespace) -> int:
    timeout = None
    if args.timeout is not None:
        try:
            timeout = parse_duration(args.timeout)
        except ValueError as e:
            raise CtlError(f"--timeout {args.timeout!r}: {e} (a duration: \"90s\", \"5m\", \"2h\")", 2) from None
    outcomes = Waiter(clientmod.Client).run(args.ids, timeout)
    if args.json:
        print_json("jobs", outcomes, exit_status=overall(outcomes))
    elif not args.quiet:
        for target, o in zip(args.ids, outcomes):
            print(f"job {_shown(target)}: {printable(o['state'])}" + _how(o))
    return overall(outcomes)


def _how(o: dict[str, Any]) -> str:
    if "array" in o:
        return f" ({o['array']} jobs, {o['failed']} did not succeed)" if o.get("failed") else f" ({o['array']} jobs)"
    if o.get("signal"):
        return f" (signal {printable(str(o['signal']))})"
    if o.get("exit_code") is not None:
        return f" (exit code {o['exit_code']})"
    return ""


# --- why --------------------------------------------------------------------------------------------------

def when_text(iso: str | None, now: float) -> str:
    """An expected start for people: "now", or the local time and how far away it is."""
    if iso is None:
        return "unknown"
    t = datetime.fromisoformat(iso).timestamp()
    if t <= now + 1:
        return "now"
    local = datetime.fromtimestamp(t).astimezone()
    day = "" if t - now < 20 * 3600 else local.strftime("%Y-%m-%d ")
    return f"{day}{local:%H:%M} {local.tzname() or ''}".rstrip() + f" (in {format_duration(round(t - now))})"


def expected_text(d: dict[str, Any], now: float) -> str:
    """The expected start line of why and submit --dry-run."""
    if d.get("expected_start") is None:
        return d.get("expected_why") or "unknown"
    text = when_text(d["expected_start"], now)
    gpus = d.get("expected_gpus")
    if gpus and text != "now":
        text += f", on GPU(s) {','.join(map(str, gpus))}"
    if d.get("expected_source") == "policy":
        return text + " (the scheduler's reservation: backfill plan)"
    if text == "now":
        return text
    return text + " (an estimate: running jobs and those ahead end at their time limits)"


def dry_run_text(d: dict[str, Any], now: float) -> str:
    """submit --dry-run's verdict on where and when a job would start, from Check's answer."""
    at = d.get("expected_start")
    gpus = d.get("expected_gpus") or []
    if at is not None and when_text(at, now) == "now":
        return "would start now " + (f"on GPU(s) {','.join(map(str, gpus))}" if gpus else "(it needs no GPU)")
    if at is None:
        return f"would wait: {(d.get('expected_why') or 'unknown').removeprefix('unknown: ')}; expected start unknown"
    n = d.get("ahead_count", 0)
    why = f"{n} job(s) ahead of it and " if n else ""
    return f"would wait: {why}not enough free GPUs for it now; expected start {expected_text(d, now)}"


def why_lines(d: dict[str, Any], now: float) -> list[tuple[str, str]]:
    """why's answer for people, as (label, text) lines."""
    state = d.get("state", "")
    head = f"{d.get('name', '')} of {d.get('user', '')}: {state}"
    out = [("job " + str(d["id"]), head)]
    gpus = ",".join(str(g["index"]) for g in d.get("gpus") or ())
    if state in ("starting", "running", "stopping"):
        out.append(("started", _local(d.get("started")) + (f" on GPU(s) {gpus}" if gpus else " (no GPU)")
                    + (f" in {d['unit']}" if d.get("unit") else "")))
        if state == "stopping" and d.get("reason"):
            out.append(("stopping", d["reason"]))
        return out
    if state != "queued":
        out.append(("ended", _local(d.get("ended")) + _how(d)))
        if d.get("reason"):
            out.append(("reason", d["reason"]))
        return out
    out.append(("waiting", d.get("reason") or "for the next scheduling pass"))
    ahead = d.get("ahead") or []
    count = d.get("ahead_count", 0)
    listed = ", ".join(map(str, ahead)) + (f" and {count - len(ahead)} more" if count > len(ahead) else "")
    out.append(("position", f"{d.get('position', count + 1)} in the queue" + (f" (after {listed})" if count else
                                                                               " (first in line)")))
    if d.get("class"):
        out.append(("class", d["class"]))
    out.append(("priority", str(d.get("priority", ""))))
    if d.get("fair_share"):
        out.append(("fair share", d["fair_share"]))
    for dep in d.get("dependencies") or ():
        what = f"job {dep['id']}" if dep.get("id") else f"{dep['label']!r} (no such job)"
        out.append(("depends on", f"{dep['kind']} {what}" + (f": {dep['state']}" if dep.get("state") else "")))
    out.append(("expected start", expected_text(d, now)))
    return out


def _local(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cmd_why(args: argparse.Namespace) -> int:
    client = clientmod.Client()
    job_id, index = args.id
    d = client.call("Why", job_id if index is None else int(client.call("Element", job_id, index)))
    if args.json:
        print_json("why", d)
        return 0
    for label, text in why_lines(d, time.time()):
        _field(label, text)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("wait", help="block until jobs end; exit with the job's exit code (one job), or 1 if "
                                    "any of several failed; an array's id: all its jobs",
                       description="Block until the jobs end. One job: exit with its exit code (128 + the "
                                   "signal's number if a signal killed it; 1 if it ended without running: "
                                   "cancelled while queued, dependency_failed, rejected). Several, or an array: "
                                   "0 if every one succeeded, else 1. --timeout passing: 124.")
    p.add_argument("ids", type=job_target, nargs="+", metavar="ID",
                   help="a job id, an array's id (all its jobs), or ID[i] / ID_i (element i of array ID)")
    p.add_argument("--timeout", metavar="D", help='give up after this long ("90s", "5m", "2h"): exit 124')
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing; only the exit status says")
    p.add_argument("--json", action="store_true", help="how each ended, as JSON")
    p.set_defaults(fn=cmd_wait)

    p = sub.add_parser("why", help="why a job waits: its place in the queue, class, fair share, "
                                   "dependencies, what blocks it, its expected start")
    p.add_argument("id", type=job_target, help="a job id, or ID[i] / ID_i (element i of array ID)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_why)
