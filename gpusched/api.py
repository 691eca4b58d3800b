"""The daemon's D-Bus API on the system bus: org.gpusched1 at /org/gpusched1.

Each method returns one JSON string: {"ok": ...} or {"error": "..."}. The caller's uid comes from the bus
(GetConnectionUnixUser of the sender), never from what the caller says. Who sees what of a job and who may
act on it is access.py's rule: everyone sees the queue, as squeue shows it; a job's log path, source file and
history only go to its owner, root and admins; acting on a job needs its owner, root or the admin group.

Every reply is bounded in bytes: the bus disconnects a peer that sends a message over its limit (32 MiB by
default on the system bus), and what a listing holds is written by users. ListPage cuts pages at PAGE_BYTES
(clients follow "last"), a listing entry is at most listing.MAX_ENTRY, and any reply over MAX_REPLY is
replaced by an error that says it was too large. The JSON is ASCII (non-ASCII is escaped), so its length
in characters is its size in bytes.

Two layers: `Manager` holds the verbs, over the engine and the access rule (access.py), in plain Python;
`Api` is the bus object that finds the caller, runs a verb and turns its answer (or its refusal) into JSON.
"""

from __future__ import annotations

import os
import pwd
import traceback
from datetime import datetime, timezone
from typing import Any, Callable

from gpusched import callbudget, intake, jobfile, lifecycle, sweep, topfeed
from gpusched.access import Access, Caller
from gpusched.engine import Engine
from gpusched.errors import Busy, Invalid, NotAllowed, Refused
from gpusched.listing import fold_counts, to_json
from gpusched.model import ACTIVE, State
from gpusched.log import log
from gpusched.webcalls import WebCalls
from gpusched.model import FINAL, usage_out
from gpusched.policy import inputs

BUS_NAME = "org.gpusched1"
OBJECT_PATH = "/org/gpusched1"
PAGE = 5000              # jobs per listing page at most (bounds the time one call takes)
PAGE_BYTES = 4 << 20     # bytes of jobs per listing page at most (then the client asks for the next page)
MAX_REPLY = 8 << 20      # bytes of any one reply; a quarter of dbus-daemon's default max_message_size
MAX_PIDS = 64            # foreign pids listed per GPU
HISTORY = 5000           # finished jobs in one History answer at most (the newest)
FINAL_STATES = frozenset(str(s) for s in FINAL)


class Manager:
    """What the bus exports, as plain calls: `caller` is a uid the bus vouched for."""

    def __init__(self, engine: Engine, access: Access, publish_now: Callable[[], None] = lambda: None):
        self.engine = engine
        self.access = access
        self._feed = topfeed.Feed()
        # called before answering a call that changed jobs (an act, a submission's Lookup): the listing
        # files (listfiles.py) are brought up to date first, so the caller's next `list` shows the change
        self.publish_now = publish_now
        self._budget = callbudget.Budget()

    def _costly(self, caller: int, fn: Callable[[], Any]) -> Any:
        """A call whose cost grows with the queue (show, why, check), within the caller's budget of the
        daemon's time (callbudget.py): refused while it is spent, so one user can't keep the others waiting."""
        clock = self.engine.clock
        start = clock.monotonic()
        wait = self._budget.wait(caller, start)
        if wait > 0:
            raise Busy(f"gpusched has spent its share of time on your recent show, why and --dry-run calls "
                       f"({self.engine.queued_count()} jobs are queued, and each of these orders them all); ask "
                       f"again in {max(1, round(wait))} s")
        try:
            return fn()
        finally:
            end = clock.monotonic()
            self._budget.charge(caller, end - start, end)

    def page(self, caller: int, all: bool, after: int, table: bool, fold: bool = False) -> str:
        who = self.access.caller(caller)
        if not table:
            text, last = self.engine.page(all, after, who, table, PAGE_BYTES, PAGE)
            return '{"last": %d, "ok": %s}' % (last or 0, text)
        submitted: list[int] = []                          # each row's submission time, for "3m ago"
        text, last = self.engine.page(all, after, who, table, PAGE_BYTES, PAGE, fold=fold, submitted=submitted)
        return '{"last": %d, "ok": %s, "submitted": %s}' % (last or 0, text, to_json(submitted))

    def show(self, caller: int, job_id: int) -> str:
        return self._costly(caller, lambda: self._show(caller, job_id))

    def _show(self, caller: int, job_id: int) -> str:
        job = self.engine.get(job_id)
        who = self.access.caller(caller)
        d = who.view(job)
        d.update(self.engine.explain(job))                 # a queued job: class, fair share, what is ahead
        if who.sees_private(job) and job.gpus:             # a running job's accounting to the second
            d["usage"] = usage_out(self.engine.usage_now(job)) or {}
        text = to_json({"ok": d})
        if len(text) > MAX_REPLY and "spec" in d:          # the rest is bounded; say why spec is missing
            del d["spec"]
            d["truncated"] = (f"the job file's contents are left out: with them the answer is {len(text)} "
                              f"bytes, over the limit of {MAX_REPLY}")
            text = to_json({"ok": d})
        return text

    def cancel(self, job_id: int, caller: int, now: bool = False) -> str:
        return self.act("cancel-now" if now else "cancel", job_id, caller)

    def act(self, verb: str, job_id: int, caller: int) -> str:
        """cancel, hold, release, requeue or requeue-hold a job: its owner, root or an admin (access.py). An
        array's id (its first element's job id) acts on every element the verb applies to (array_act)."""
        job = self.engine.get(job_id)
        who = self.access.caller(caller)
        elements = self.engine.array(job)
        try:
            if elements is not None:
                return self.array_act(verb, job.id, elements, who)
            return self._one(verb, job, who)
        finally:
            self.publish_now()

    def element_act(self, verb: str, array_id: int, index: int, caller: int) -> str:
        """The verb on one element of an array (`gpuschedctl cancel 12[3]`), as on a job alone."""
        try:
            return self._one(verb, self.engine.element(array_id, index), self.access.caller(caller))
        finally:
            self.publish_now()

    def element(self, array_id: int, index: int) -> int:
        """Element `index` of an array: its job id (the listing shows every job to everyone, so this does)."""
        return self.engine.element(array_id, index).id

    def _one(self, verb: str, job: Any, who: Caller) -> str:
        who.require_act(job, verb)
        if verb in ("cancel", "cancel-now"):
            return self.engine.cancel(job, who, verb == "cancel-now")
        if verb == "hold":
            return self.engine.hold(job, who, who.admin)
        if verb == "release":
            return self.engine.release(job, who, who.admin)
        return self.engine.requeue(job, who, hold=verb == "requeue-hold")

    def array_act(self, verb: str, array_id: int, elements: list[Any], who: Caller) -> str:
        """The verb on each element it applies to (cancel: queued or running; hold: queued; release: held;
        requeue: running); the others are counted as skipped. Refused as a whole when the caller may not act
        on the array, or when it applies to none."""
        for job in elements:
            who.require_act(job, verb)
        done: dict[str, int] = {}
        skipped, refusal = 0, ""
        for job in elements:
            if not _applies(verb, job):
                skipped += 1
                continue
            try:
                outcome = self._one(verb, job, who)
            except Refused as e:                         # an admin's hold the owner can't release, say
                skipped += 1
                refusal = refusal or str(e)
                continue
            done[outcome] = done.get(outcome, 0) + 1
        if not done:
            raise Invalid(f"array {array_id}: {refusal or f'no job of it can be {_PAST.get(verb, verb)} now'} "
                          f"({len(elements)} job(s): {', '.join(f'{n} {s}' for s, n in fold_counts(elements).items())})")
        text = ", ".join(f"{n} {outcome}" for outcome, n in done.items())
        return f"array {array_id}: {text}" + (f" ({skipped} left as they were)" if skipped else "")

    def drain(self, caller: int, on: bool) -> str:
        return self.engine.drain(self._admin(caller, "drain or resume the server"), on)

    def pause(self, caller: int, user: str, on: bool) -> str:
        who = self._admin(caller, "pause or unpause a user's jobs")
        try:
            pwd.getpwnam(user)
        except (KeyError, ValueError):
            if on or user not in self.engine.paused:
                raise Invalid(f"no user {user!r} on this machine") from None
        return self.engine.pause(user, who, on)

    def _admin(self, caller: int, what: str) -> Caller:
        who = self.access.caller(caller)
        if not who.admin:
            raise NotAllowed(f"only root or an admin (the admin_group) may {what}")
        return who

    def gpus(self) -> dict[str, Any]:
        table = self.engine.gpu_table()
        for g in table:
            pids = g.get("foreign_pids") or []
            if len(pids) > MAX_PIDS:
                g["foreign_pids"], g["foreign_pids_more"] = pids[:MAX_PIDS], len(pids) - MAX_PIDS
        inventory = self.engine.inventory
        return {"gpus": table, "simulated": inventory.simulated, "error": inventory.error}

    def top(self, caller: int, limit: int, mine: bool) -> dict[str, Any]:
        """gpuschedctl top: the GPUs, the active jobs and the first `limit` queued ones (the caller's own
        with `mine`), public fields only, bounded (topfeed.py)."""
        e = self.engine
        scan = self._feed.scan(lambda: topfeed.scan(e.active_ids(), e.queued_ids(), e.queued_count()),
                               e.clock.monotonic())
        if mine:
            waiting = topfeed.first(self.engine.queued_ids(caller), limit)
        else:
            waiting = list(scan.queued[:max(0, limit)])
        jobs = self.engine.jobs
        return {"gpus": self.gpus(), "counts": scan.counts, "draining": self.engine.draining or None,
                "running": [topfeed.entry(jobs[i]) for i in scan.active if i in jobs],
                "waiting": [topfeed.entry(jobs[i]) for i in waiting if i in jobs]}

    def status(self) -> str:
        return self.engine.status_line()

    def stats(self) -> dict[str, Any]:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {"status": self.engine.status_line(), "jobs": len(self.engine.jobs), "live": len(self.engine.live),
                "rss_bytes": rss, **self.engine.stats}

    def lookup(self, caller: int, source: str, inode: int) -> int:
        job_id = self.engine.lookup(caller, source, inode)
        if job_id:
            self.publish_now()
        return job_id

    # --- issue 9: accounting (usage.py) -------------------------------------------------------------------

    def _users(self, who: Caller, user: str, what: str) -> set[str] | None:
        """Whose accounting a caller may have: an admin anyone's (no user: everyone's); others only their own."""
        if who.admin:
            return {user} if user else None
        if user and user != who.name:
            raise NotAllowed(f"only root or an admin (the admin_group) may see {user}'s {what}")
        return {who.name}

    def usage(self, caller: int, user: str, since: float) -> list[dict[str, Any]]:
        """gpuschedctl stats: per user, GPU-hours reserved and used, jobs, waits, energy (usage.summarize)."""
        return self.engine.usage_report(self._users(self.access.caller(caller), user, "usage"), since)

    def history(self, caller: int, user: str, name: str, state: str, since: float, limit: int, tag: str = "") -> str:
        """gpuschedctl history: finished jobs with their accounting. Their own (an admin: everyone's, or
        `user`'s); a user may ask for another's, and gets what `list --all` shows of them (no accounting)."""
        who = self.access.caller(caller)
        users = {user} if user else (None if who.admin else {who.name})
        if state and state not in FINAL_STATES:
            raise Invalid(f"{state!r} is not a final state ({', '.join(sorted(FINAL_STATES))})")
        jobs, more = self.engine.finished(users, name, state, since, max(1, min(limit or HISTORY, HISTORY)), tag)
        parts, size = [], 0
        for job in reversed(jobs):                         # the newest first, until the reply's byte budget
            full, public, _ = self.engine.listing.entry(job)
            text = full if who.sees_private(job) else public
            if size + len(text) + 2 > PAGE_BYTES:
                more += 1
                continue
            parts.append(text)
            size += len(text) + 2
        return '{"ok": {"more": %d, "jobs": [%s]}}' % (more, ",".join(reversed(parts)))

    # --- issue 11: wait, why, submit --dry-run, priority (ctl/waiting.py, ctl/jobs.py) ----------------------

    def outcomes(self, ids: list[int]) -> list[dict[str, Any]]:
        """`gpuschedctl wait`'s poll, cheap whatever the queue holds: for each id, whether it has ended and
        how; an array's id stands for all its jobs (ended when all have; failed: how many did not succeed).
        What it says is public (`list` shows every job's state). At most MAX_IDS ids, each answered once
        however often it is named, and at most MAX_ELEMENTS jobs looked at: the ids past that are left out
        of the answer (wait asks again for what it was not told)."""
        out: list[dict[str, Any]] = []
        looked = 0
        for job_id in dict.fromkeys(ids[:MAX_IDS]):
            job = self.engine.get(job_id)
            elements = self.engine.array(job)
            looked += len(elements) if elements is not None else 1
            if looked > MAX_ELEMENTS and out:
                break
            if elements is None:
                out.append({"id": job.id, "state": str(job.state), "final": job.state in FINAL,
                            "exit_code": job.exit_code, "signal": job.signal})
                continue
            failed = sum(1 for j in elements if j.state in FINAL and j.state != State.SUCCEEDED)
            out.append({"id": job.id, "array": len(elements), "final": all(j.state in FINAL for j in elements),
                        "failed": failed, "state": ", ".join(f"{n} {s}" for s, n in fold_counts(elements).items())})
        return out

    def why(self, caller: int, job_id: int) -> dict[str, Any]:
        """`gpuschedctl why`: a job's state and, queued, where it stands (engine.outlook). What it says is what
        `show` gives everyone of a queued job (its place, class, fair share); its dependencies only to those
        who see its private fields. Within the caller's budget (_costly)."""
        return self._costly(caller, lambda: self._why(caller, job_id))

    def _why(self, caller: int, job_id: int) -> dict[str, Any]:
        job = self.engine.get(job_id)
        who = self.access.caller(caller)
        view = who.view(job)
        d = {k: view[k] for k in WHY_FIELDS if k in view}
        if job.state == State.QUEUED and job.spec is not None:
            d.update(self.engine.outlook(job))
            d["expected_start"] = _iso(d.get("expected_start"))
            if not who.sees_private(job):
                d.pop("dependencies", None)
        return d

    def check(self, caller: int, name: str, text: str) -> dict[str, Any]:
        """`gpuschedctl submit --dry-run`: the daemon's verdict on a job file as if the caller had dropped it
        (intake.judge: parsed for them, with the server's limits and their queue), and where and when it would
        start now (engine.outlook). Nothing is recorded, queued or written. Within the caller's budget
        (_costly)."""
        return self._costly(caller, lambda: self._check(caller, name, text))

    def _check(self, caller: int, name: str, text: str) -> dict[str, Any]:
        data = text.encode("utf-8", "surrogateescape")
        if len(data) > jobfile.MAX_BYTES:
            raise Invalid(f"{name}: the file is {len(data)} bytes; a job file may have at most {jobfile.MAX_BYTES}")
        owner, spec, account, problem = intake.judge(self.engine.cfg, self.access, self.engine, data, name, caller)
        if problem is not None or spec is None or account is None:
            raise Invalid(problem or f"{name}: rejected")
        job = lifecycle.accepted(0, spec, account.pw_name, account.pw_uid, account.pw_gid, name, self.engine.clock.time())
        if spec.sweep:
            job.spec = sweep.element(spec, 0, 0)
        job.job_class = inputs.job_class(job, self.engine.cfg.class_map() or None, self.engine.cfg.default_class)
        job.after = self.engine.dependencies_of(spec, account.pw_uid)
        if spec.hold:
            job.held = account.pw_name
        d = {"name": spec.name, "user": account.pw_name, "jobs": sweep.size(spec.sweep) if spec.sweep else 1,
             "gpus_requested": spec.gpus, "priority": spec.priority}
        d.update(self.engine.outlook(job))
        d["expected_start"] = _iso(d.get("expected_start"))
        d["now"] = _iso(self.engine.clock.time())
        return d

    def priority(self, caller: int, job_id: int, index: int, priority: int) -> str:
        """`gpuschedctl priority`: a queued job's priority (engine.reprioritize); an array's id: each of its
        queued jobs; index >= 0: that element alone."""
        who = self.access.caller(caller)
        job = self.engine.get(job_id) if index < 0 else self.engine.element(job_id, index)
        elements = self.engine.array(job) if index < 0 else None
        for j in elements or [job]:
            who.require_act(j, "change the priority of")
        if elements is None:
            return self.engine.reprioritize(job, who, priority, who.admin)
        queued = [j for j in elements if j.state == State.QUEUED]
        if not queued:
            raise Invalid(f"array {job.id}: none of its jobs is queued, so there is no priority to change "
                          f"({', '.join(f'{n} {s}' for s, n in fold_counts(elements).items())})")
        for j in queued:                                   # all or none: a refusal changes nothing
            self.engine.may_reprioritize(j, priority, who.admin)
        done = [self.engine.reprioritize(j, who, priority, who.admin) for j in queued]
        left = len(elements) - len(queued)
        return (f"array {job.id}: {len(done)} queued job(s) at priority {priority}"
                + (f" ({left} not queued, left as they were)" if left else ""))


WHY_FIELDS = ("id", "name", "user", "state", "reason", "class", "priority", "gpus_requested", "submitted",
              "started", "ended", "gpus", "unit", "exit_code", "signal", "held", "array_id", "array_index")
MAX_IDS = 1000               # ids in one Outcomes call
MAX_ELEMENTS = 100000        # jobs one Outcomes call looks at (an array's id is all its jobs): ~40 ms


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


class Api:
    """
    <node>
      <interface name="org.gpusched1.Manager">
        <method name="List"><arg type="b" name="all" direction="in"/><arg type="s" direction="out"/></method>
        <method name="ListPage">
          <arg type="b" name="all" direction="in"/><arg type="t" name="after" direction="in"/>
          <arg type="b" name="table" direction="in"/><arg type="s" direction="out"/>
        </method>
        <method name="Show"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Cancel"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="CancelNow"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Hold"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Release"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Requeue"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="RequeueHeld"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="ElementAct">
          <arg type="s" name="verb" direction="in"/><arg type="t" name="id" direction="in"/>
          <arg type="u" name="index" direction="in"/><arg type="s" direction="out"/>
        </method>
        <method name="Element">
          <arg type="t" name="id" direction="in"/><arg type="u" name="index" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="ListFolded">
          <arg type="b" name="all" direction="in"/><arg type="t" name="after" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="Drain"><arg type="b" name="on" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Pause">
          <arg type="s" name="user" direction="in"/><arg type="b" name="on" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="Gpus"><arg type="s" direction="out"/></method>
        <method name="Top">
          <arg type="u" name="limit" direction="in"/><arg type="b" name="mine" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="Status"><arg type="s" direction="out"/></method>
        <method name="Stats"><arg type="s" direction="out"/></method>
        <method name="Usage">
          <arg type="s" name="user" direction="in"/><arg type="d" name="since" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="History">
          <arg type="s" name="user" direction="in"/><arg type="s" name="name" direction="in"/>
          <arg type="s" name="state" direction="in"/><arg type="d" name="since" direction="in"/>
          <arg type="u" name="limit" direction="in"/><arg type="s" direction="out"/>
        </method>
        <method name="HistoryTagged">
          <arg type="s" name="user" direction="in"/><arg type="s" name="name" direction="in"/>
          <arg type="s" name="state" direction="in"/><arg type="s" name="tag" direction="in"/>
          <arg type="d" name="since" direction="in"/><arg type="u" name="limit" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="Outcomes"><arg type="at" name="ids" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Why"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Check">
          <arg type="s" name="name" direction="in"/><arg type="s" name="text" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
        <method name="Priority">
          <arg type="t" name="id" direction="in"/><arg type="i" name="index" direction="in"/>
          <arg type="i" name="priority" direction="in"/><arg type="s" direction="out"/>
        </method>
        <method name="Lookup">
          <arg type="s" name="source" direction="in"/><arg type="t" name="inode" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
      </interface>
      <interface name="org.gpusched1.Web">
        <method name="WebCall">
          <arg type="u" name="uid" direction="in"/><arg type="s" name="verb" direction="in"/>
          <arg type="s" name="args" direction="in"/><arg type="s" direction="out"/>
        </method>
      </interface>
    </node>
    """

    def __init__(self, manager: Manager, bus: Any):
        self._m = manager
        self._web = WebCalls(manager)
        self._dbus = bus.get("org.freedesktop.DBus", "/org/freedesktop/DBus")

    def _caller(self, ctx: Any) -> int:
        return int(self._dbus.GetConnectionUnixUser(ctx.sender))

    def _answer(self, method: str, fn: Callable[[], str]) -> str:
        """Run one request: its own errors become {"error": ...}; a bug is logged and answered as one, never
        as the caller's mistake; a reply over MAX_REPLY becomes an error instead of a dropped connection."""
        try:
            text = fn()
        except Exception as e:  # noqa: BLE001 - the daemon answers every call
            if _refusal(e):
                text = to_json({"error": str(e.args[0] if e.args else e)})
            else:
                log(f"internal error in {method}: {traceback.format_exc()}", 3, multiline=True)
                text = to_json({"error": f"internal error in gpusched while answering {method}; "
                                         f"its journal (journalctl -u gpusched) says more"})
        if len(text) > MAX_REPLY:
            text = to_json({"error": f"the answer to {method} is too large to send ({len(text)} bytes; the "
                                     f"limit is {MAX_REPLY})"})
        return text

    def _call(self, method: str, fn: Callable[[], Any]) -> str:
        return self._answer(method, lambda: to_json({"ok": fn()}))

    def List(self, all: bool, dbus_context: Any = None) -> str:
        """{"last": ..., "ok": [job, ...]}: queued and running jobs (all: finished ones too), each as its status
        file: ListPage's first page (a bus message has a size limit)."""
        return self.ListPage(all, 0, False, dbus_context=dbus_context)

    def ListPage(self, all: bool, after: int, table: bool, dbus_context: Any = None) -> str:
        """Jobs with ids above `after`, at most PAGE of them and PAGE_BYTES of text, as a JSON array or as
        table rows (rendered for the page asked for; listing.py keeps a small bounded cache). {"last": id of
        the last job given, 0 when no more; "ok": ...}."""
        return self._answer("ListPage", lambda: self._m.page(self._caller(dbus_context), all, after, table))

    def Show(self, id: int, dbus_context: Any = None) -> str:
        return self._answer("Show", lambda: self._m.show(self._caller(dbus_context), id))

    def Cancel(self, id: int, dbus_context: Any = None) -> str:
        return self._call("Cancel", lambda: self._m.cancel(id, self._caller(dbus_context)))

    def CancelNow(self, id: int, dbus_context: Any = None) -> str:
        """Cancel without the grace: every process of the job gets SIGKILL at once (owner, root or admin)."""
        return self._call("CancelNow", lambda: self._m.cancel(id, self._caller(dbus_context), now=True))

    def Hold(self, id: int, dbus_context: Any = None) -> str:
        return self._call("Hold", lambda: self._m.act("hold", id, self._caller(dbus_context)))

    def Release(self, id: int, dbus_context: Any = None) -> str:
        return self._call("Release", lambda: self._m.act("release", id, self._caller(dbus_context)))

    def Requeue(self, id: int, dbus_context: Any = None) -> str:
        return self._call("Requeue", lambda: self._m.act("requeue", id, self._caller(dbus_context)))

    def RequeueHeld(self, id: int, dbus_context: Any = None) -> str:
        """Requeue, then hold it in the queue until released."""
        return self._call("RequeueHeld", lambda: self._m.act("requeue-hold", id, self._caller(dbus_context)))

    def ElementAct(self, verb: str, id: int, index: int, dbus_context: Any = None) -> str:
        """cancel, cancel-now, hold, release or requeue one element of an array (`12[3]`)."""
        if verb not in _PAST:
            return to_json({"error": f"no such verb {verb[:32]!r}"})
        return self._call("ElementAct", lambda: self._m.element_act(verb, id, index, self._caller(dbus_context)))

    def Element(self, id: int, index: int, dbus_context: Any = None) -> str:
        """The job id of element `index` of array `id`."""
        return self._call("Element", lambda: self._m.element(id, index))

    def ListFolded(self, all: bool, after: int, dbus_context: Any = None) -> str:
        """ListPage's table, with each array as one row (gpuschedctl list without --expand)."""
        return self._answer("ListFolded", lambda: self._m.page(self._caller(dbus_context), all, after, True,
                                                                fold=True))

    def Drain(self, on: bool, dbus_context: Any = None) -> str:
        return self._call("Drain", lambda: self._m.drain(self._caller(dbus_context), on))

    def Pause(self, user: str, on: bool, dbus_context: Any = None) -> str:
        return self._call("Pause", lambda: self._m.pause(self._caller(dbus_context), user[:256], on))

    def Gpus(self, dbus_context: Any = None) -> str:
        return self._call("Gpus", self._m.gpus)

    def Top(self, limit: int, mine: bool, dbus_context: Any = None) -> str:
        """gpuschedctl top's view: {"gpus": Gpus's answer, "counts", "draining", "running": [job], "waiting":
        [job]}: the active jobs and the first `limit` queued ones (the caller's own with `mine`), bounded."""
        return self._call("Top", lambda: self._m.top(self._caller(dbus_context), limit, mine))

    def Status(self, dbus_context: Any = None) -> str:
        return self._call("Status", self._m.status)

    def Stats(self, dbus_context: Any = None) -> str:
        return self._call("Stats", self._m.stats)

    def Usage(self, user: str, since: float, dbus_context: Any = None) -> str:
        """Per-user accounting (gpuschedctl stats): the caller's own line, or an admin's choice."""
        return self._call("Usage", lambda: self._m.usage(self._caller(dbus_context), user[:256], since))

    def History(self, user: str, name: str, state: str, since: float, limit: int, dbus_context: Any = None) -> str:
        """Finished jobs with their accounting (gpuschedctl history): {"ok": {"more": n, "jobs": [...]}}."""
        return self._answer("History", lambda: self._m.history(self._caller(dbus_context), user[:256], name[:256],
                                                               state[:64], since, limit))

    def HistoryTagged(self, user: str, name: str, state: str, tag: str, since: float, limit: int,
                      dbus_context: Any = None) -> str:
        """History, with only the jobs whose file has `tag` among its tags ("": any)."""
        return self._answer("HistoryTagged", lambda: self._m.history(self._caller(dbus_context), user[:256],
                                                                     name[:256], state[:64], since, limit, tag[:256]))

    def Outcomes(self, ids: list[int], dbus_context: Any = None) -> str:
        """gpuschedctl wait: [{"id", "state", "final", "exit_code", "signal"} or, for an array's id, {"id",
        "array": jobs, "final", "failed", "state"}, ...]."""
        return self._call("Outcomes", lambda: self._m.outcomes(list(ids)))

    def Why(self, id: int, dbus_context: Any = None) -> str:
        """gpuschedctl why: the job's state; queued: its place, what keeps it waiting, its expected start."""
        return self._call("Why", lambda: self._m.why(self._caller(dbus_context), id))

    def Check(self, name: str, text: str, dbus_context: Any = None) -> str:
        """gpuschedctl submit --dry-run: the verdict on a job file as the caller's, and where and when it would
        start; nothing is queued."""
        return self._call("Check", lambda: self._m.check(self._caller(dbus_context), name[:255], text))

    def Priority(self, id: int, index: int, priority: int, dbus_context: Any = None) -> str:
        """gpuschedctl priority: a queued job's priority (its owner: only less urgent; an admin: any)."""
        return self._call("Priority", lambda: self._m.priority(self._caller(dbus_context), id, index, priority))

    def Lookup(self, source: str, inode: int, dbus_context: Any = None) -> str:
        return self._call("Lookup", lambda: self._m.lookup(self._caller(dbus_context), source, inode))

    def WebCall(self, uid: int, verb: str, args: str, dbus_context: Any = None) -> str:
        """For the web dashboard's user only (webcalls.py): `verb` as the user `uid` would do it."""
        return self._call("WebCall", lambda: self._web.call(self._caller(dbus_context), uid, verb[:32], args))


_PAST = {"cancel": "cancelled", "cancel-now": "cancelled", "hold": "held", "release": "released",
         "requeue": "requeued", "requeue-hold": "requeued and held"}


def _applies(verb: str, job: Any) -> bool:
    """Whether an array-wide verb is for this element (the others are left as they are, not refused)."""
    if verb in ("cancel", "cancel-now"):
        return job.state == State.QUEUED or job.state in ACTIVE
    if verb == "hold":
        return job.state == State.QUEUED and not job.held
    if verb == "release":
        return job.state == State.QUEUED and bool(job.held)
    return job.state in (State.STARTING, State.RUNNING)


def _refusal(e: Exception) -> bool:
    """An answer for the caller: errors.Refused only (the manager and the engine raise nothing else for a
    caller); any other exception, a ValueError or KeyError included, is a bug's."""
    return isinstance(e, Refused)


def publish(bus: Any, manager: Manager) -> Any:
    """Register the API object, then take the bus name (not replaceable: only the daemon may hold it).
    Returns the publication: its __exit__ undoes both."""
    from pydbus.publication import Publication
    return Publication(bus, BUS_NAME, (OBJECT_PATH, Api(manager, bus)), allow_replacement=False)
