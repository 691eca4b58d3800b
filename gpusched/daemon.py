"""gpuschedd: wires the spool, the store, the policy, systemd, the GPU probe and the bus API together.

Everything runs on one GLib main loop thread (the spool watcher thread only posts names to it), so the job
table needs no locks. Side effects live in the adapters; the decisions in policy.py and lifecycle.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import heapq
import json
import os
import pwd
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from typing import Any, Callable

from gi.repository import GLib

from gpusched import cgroups, fds, journal, launch, lifecycle, policy
from gpusched import config as configmod
from gpusched.gpus import GpuProbeError, Probe, device_nodes, make_probe
from gpusched.jobfile import JobFileError, parse as parse_jobfile
from gpusched.fairqueue import FairQueue
from gpusched.listing import Listing, printable
from gpusched.model import ACTIVE, FINAL, Gpu, Job, State
from gpusched.spawner import Spawner
from gpusched.spool import Spool, SpoolWatcher, Taken, ignored
from gpusched.store import Store
from gpusched.systemd import SystemdError, SystemdUnavailable, UnitExists, Units
from gpusched.units import format_size

RESCAN_EVERY = 10.0        # seconds: a safety net for inotify overflows; entries are normally seen at once
INGEST_BATCH = 64          # spool entries taken per main-loop turn, at most
INGEST_BUDGET = 0.05       # seconds of main-loop time per ingest turn: a flood never starves the watchdog or bus
EXPIRE_EVERY = 3600.0      # seconds between sweeps of finished jobs older than keep_finished
EXPIRE_BATCH = 500         # finished jobs removed per main-loop turn


def log(message: str, priority: int = 6, job: Job | None = None, multiline: bool = False, **fields: Any) -> None:
    """A line in the journal. Messages carry users' strings (file names, reasons): control characters are
    escaped, so `journalctl -o cat` on an admin's terminal can't be steered; only a traceback keeps its newlines.
    Structured fields keep the exact values."""
    message = printable(message, keep="\n" if multiline else "")
    if job is not None:
        fields.setdefault("GPUSCHED_JOB_ID", job.id)
        fields.setdefault("GPUSCHED_USER", job.user)
        fields.setdefault("GPUSCHED_JOB_NAME", job.name)
    journal.send(message, priority, SYSLOG_IDENTIFIER="gpusched", **fields)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A main-loop callback that logs its exception instead of dying; returns False (one-shot) on error."""
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - the daemon must outlive any one bad event
            log(f"internal error in {fn.__name__}: {traceback.format_exc()}", 3, multiline=True)
            return False
    wrapper.__name__ = fn.__name__
    return wrapper


class Daemon:
    def __init__(self, cfg: configmod.Config, store: Store, spool: Spool, units: Units, probe: Probe,
                 spawner: Spawner | None = None):
        self.cfg = cfg
        self.spawner = spawner or Spawner()
        self.listing = Listing()
        self.store = store
        self.spool = spool
        self.units = units
        self.probe = probe
        self.jobs: dict[int, Job] = {}
        self.live: dict[int, Job] = {}                 # jobs not yet final
        self.gpus: list[Gpu] | None = []
        self.gpu_error: str | None = None
        self.monitors: dict[int, int] = {}             # monitor pid -> job id (our own children)
        self.submissions: OrderedDict[tuple[int, str, int], int] = OrderedDict()   # (uid, name, ino) -> id
        self._pass_pending = False
        self._last_pass_end = 0.0
        self._last_probe = 0.0
        self._last_rescan = time.monotonic()
        self._last_status = ""
        self._retry = False                            # a start must be tried again on the next tick
        self.dirty: set[int] = set()                   # jobs whose status write failed
        self._pending: set[str] = set()                # spool names announced, not yet ingested
        self._copies_due: set[int] = set()             # status copies to rewrite (a new waiting reason)
        self._copies_flushing = False
        self._incoming: deque[str] = deque()
        self._incoming_lock = threading.Lock()
        self._draining = False
        self._rescan_backlog: list[str] = []
        self._queued_by_uid: dict[int, set[int]] = {}  # for max_queued_per_user, kept by _track
        self._rejected_by_uid: dict[int, set[int]] = {}  # for max_rejected_per_user, kept by _track
        self._unrecorded: dict[int, tuple[float, int]] = {}  # uid -> (last journal line, rejections since)
        self._fair = FairQueue()                       # spool names to take, round-robin by owner
        self._deferred: dict[str, float] = {}          # spool name -> not offered again before (monotonic)
        self._room, self._room_checked, self._room_said = True, 0.0, 0.0
        # the first sweep a minute after start (or sooner with a short keep_finished), then every interval
        self._last_expire = time.monotonic() - self._expire_interval() + min(60.0, self._expire_interval())
        self._expiring: list[int] = []
        self._killing: set[int] = set()                # jobs whose leftover processes are being killed
        self._restop: set[int] = set()                 # stops to send again (the bus was down)
        # last_policy_seconds: gathering the queue plus the policy itself, without starting anything
        self.stats: dict[str, float] = {"passes": 0, "last_pass_seconds": 0.0, "last_policy_seconds": 0.0}

    # --- bookkeeping -----------------------------------------------------------------------------------

    def _save(self, job: Job) -> bool:
        """Record the job in memory and on disk. False if the disk write failed (full, read-only): the job
        is then retried every tick until it lands."""
        self._track(job)
        try:
            self.store.save_status(job)
        except OSError as e:
            if job.id not in self.dirty:
                log(f"can't write the status of job {job.id}: {e.strerror}; retrying", 3, job=job)
            self.dirty.add(job.id)
            return False
        self.dirty.discard(job.id)
        return True

    def _track(self, job: Job) -> None:
        """The in-memory side of _save."""
        self.jobs[job.id] = job
        self.listing.invalidate(job.id)
        if job.state in FINAL:
            self.live.pop(job.id, None)
        else:
            self.live[job.id] = job
        for by_uid, state in ((self._queued_by_uid, State.QUEUED), (self._rejected_by_uid, State.REJECTED)):
            ids = by_uid.setdefault(job.uid, set())
            if job.state == state:
                ids.add(job.id)
            else:
                ids.discard(job.id)

    def _retry_dirty(self) -> None:
        for job_id in sorted(self.dirty):
            if not self._save(self.jobs[job_id]):
                return
            log(f"status of job {job_id} written after an earlier failure", job=self.jobs[job_id])

    def request_pass(self) -> None:
        # At idle priority: runs once the pending events (a burst of files, many jobs ending) are handled, so
        # a burst costs one pass and a lone event no delay. Passes over a huge queue are spaced out so that
        # they take at most a fifth of the daemon's time (a 100 ms pass waits 400 ms after the last one).
        if self._pass_pending:
            return
        self._pass_pending = True
        wait = self._last_pass_end + 4 * self.stats["last_policy_seconds"] - time.monotonic()
        if wait > 0.001:
            GLib.timeout_add(int(wait * 1000) + 1, self._idle_pass)
        else:
            GLib.idle_add(self._scheduling_pass, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def _idle_pass(self) -> bool:
        GLib.idle_add(self._scheduling_pass, priority=GLib.PRIORITY_DEFAULT_IDLE)
        return False

    # --- recovery --------------------------------------------------------------------------------------

    def recover(self) -> None:
        self.store.init()
        self.spool.init()
        for job in self.store.load_jobs_safely(lambda name, e: log(f"status file {name} unreadable: {e}", 3)):
            self._track(job)
        for job_id, name in self.spool.work_entries():          # entries taken when the daemon died
            job = self.jobs.get(job_id)
            if job is None:
                taken = self.spool.read_taken(job_id, name)
                if taken:
                    self._process(job_id, taken)
            elif job.state == State.REJECTED:
                self.spool.finish_rejected(job_id, name)
            else:
                self.spool.finish_accepted(job_id, name)
        # people's copies a crash left older than their record: rewritten in batches after READY=1
        self._copies_due |= {i for i in self.store.stale_copies if i in self.jobs}
        self._probe_gpus()
        for job in [j for j in self.live.values() if j.state in ACTIVE]:
            self._reconcile(job, recovering=True)
        # what waits in the spool is taken after READY=1, in batches, in the order of its names
        self._rescan_backlog = list(reversed(self.spool.entries()))
        if self._rescan_backlog:
            self._kick()
        n_active = sum(1 for j in self.live.values() if j.state in ACTIVE)
        log(f"recovered {len(self.jobs)} job(s): {n_active} active, {len(self.live) - n_active} queued")

    def write_snapshot(self) -> None:
        """At a clean stop: every record in one file, so the next start reads one file, not two per job."""
        t0 = time.monotonic()
        try:
            n = self.store.write_snapshot(self.dirty)
        except OSError as e:
            log(f"can't write the snapshot of the job records ({e.strerror}); the next start reads every record", 4)
            return
        log(f"snapshot of {n} job record(s) written in {time.monotonic() - t0:.2f}s")

    def _reconcile(self, job: Job, recovering: bool = False) -> None:
        """Bring an active job's record in line with reality: its scope and its monitor's result."""
        result = self.store.read_result(job.id, job.attempt, job.start_token)
        if result is not None:
            if not self._scope_busy(job):                 # its GPUs stay held until the scope is empty
                self._finish(job, result)
            return
        alive = self.units.alive(job.unit)
        if not alive:
            # it may have ended between the two looks: its result lands before its scope goes
            result = self.store.read_result(job.id, job.attempt, job.start_token)
            if result is not None:
                if not self._scope_busy(job):
                    self._finish(job, result)
                return
        if alive:
            if job.state == State.STARTING:
                lifecycle.running(job)
                self._save(job)
                log(f"job {job.id} re-adopted: running in {job.unit}", job=job)
            elif job.state == State.STOPPING and recovering:
                self.units.stop(job.unit)                        # in case the daemon died before asking
            elif recovering:
                log(f"job {job.id} re-adopted: running in {job.unit}", job=job)
        elif job.state == State.STARTING:
            lifecycle.never_started(job, "requeued: the daemon stopped before the job began")
            self._save(job)
            log(f"job {job.id} never started; requeued", job=job)
        else:
            self._finish(job, None)

    # --- spool -----------------------------------------------------------------------------------------

    def on_spool_entry(self, name: str) -> None:
        """From the watcher thread: queue the name; one main-loop source drains the queue in batches, so a
        flood of files interleaves with timers (the watchdog), bus calls and job ends."""
        with self._incoming_lock:
            self._pending.add(name)
            self._incoming.append(name)
            if self._draining:
                return
            self._draining = True
        GLib.idle_add(self._drain_incoming, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def _kick(self) -> None:
        """From the main loop: make sure the drain runs (for names that came from a rescan)."""
        with self._incoming_lock:
            if self._draining:
                return
            self._draining = True
        GLib.idle_add(self._drain_incoming, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def _drain_incoming(self) -> bool:
        """Sort new names by owner (one lstat each), then take them round-robin by owner (fairqueue.py), all
        within INGEST_BUDGET per main-loop turn. At the scheduling pass's own (idle) priority, so the two
        alternate: a flood of files never holds back the start of jobs already accepted."""
        deadline = time.monotonic() + INGEST_BUDGET
        while time.monotonic() <= deadline:
            with self._incoming_lock:
                name = self._incoming.popleft() if self._incoming else None
                if name is not None:
                    self._pending.discard(name)
            if name is None:
                if not self._rescan_backlog:
                    break
                name = self._rescan_backlog.pop()
            self._classify(name)
        for _ in range(INGEST_BATCH):
            if time.monotonic() > deadline:
                return True                            # the rest on the next turn, after timers and bus calls
            name = self._fair.pop()
            if name is None:
                break
            guarded(self.ingest)(name)
        with self._incoming_lock:
            if self._incoming or self._rescan_backlog or len(self._fair):
                return True
            self._draining = False
            return False

    def _classify(self, name: str) -> None:
        if ignored(name) or name in self._fair:
            return
        try:
            st = os.lstat(os.path.join(self.spool.root, name))
        except OSError:
            return                                     # gone already (or not a name we can look at)
        self._fair.push(st.st_uid, name)

    def _intake_room(self) -> bool:
        """Is there room to record new entries? Intake stops at half the log floor, so that a flood of files
        (rejected ones are small, but each has a record) can't take the last space from running jobs' records.
        Looked up at most every 100 ms."""
        now = time.monotonic()
        if now - self._room_checked > 0.1:
            self._room_checked = now
            try:
                st = os.statvfs(self.store.root)
                free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            except OSError:
                free, size = 1, 0
            floor = configmod.log_floor(self.cfg, size) // 2
            self._room = free > floor
            if not self._room and now - self._room_said > 60:
                self._room_said = now
                log(f"the state filesystem {self.store.root} has {format_size(free)} free, under the intake floor "
                    f"({format_size(floor)}, half of log_min_free): new spool entries wait there until there is "
                    f"room", 3, GPUSCHED_EVENT="defer")
        return self._room

    def ingest(self, name: str) -> bool:
        if ignored(name):
            return False
        retry_at = self._deferred.get(name)
        if retry_at is not None:
            if time.monotonic() < retry_at:
                return False                           # put back a moment ago: the rescan offers it again
            del self._deferred[name]
        try:
            os.lstat(os.path.join(self.spool.root, name))
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not self._intake_room():
            self._defer(name)
            return False
        try:
            job_id = self.store.allocate_id()
        except OSError as e:                            # next-id can't be written: the entry waits
            log(f"can't accept {printable(name)} now: {e.strerror} in {self.store.root}; it stays in the spool, "
                f"to be retried", 3, GPUSCHED_EVENT="defer")
            self._defer(name)
            return False
        taken = self.spool.take(name, job_id)
        if taken is not None:
            self._process(job_id, taken)
        return False

    def _defer(self, name: str) -> None:
        self._deferred[name] = time.monotonic() + RESCAN_EVERY
        while len(self._deferred) > 100000:            # bounded: the oldest are simply offered again sooner
            del self._deferred[next(iter(self._deferred))]

    def _process(self, job_id: int, taken: Taken) -> None:
        uid = taken.st.st_uid
        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            owner = str(uid)
        problem = f"{taken.name}: {taken.problem}" if taken.problem else None
        spec = None
        if problem is None:
            try:
                spec = parse_jobfile(taken.data or b"", taken.name, owner_is_root=uid == 0,
                                     limits=self.cfg.job_limits(), privileged=uid == 0 or self.is_admin(uid))
            except JobFileError as e:
                problem = str(e)
        account = None
        if spec is not None:
            try:
                account = pwd.getpwnam(spec.user) if spec.user else pwd.getpwuid(uid)
            except KeyError:
                problem = f"{taken.name}: " + (f"user: no such user {spec.user!r}" if spec.user
                                               else f"the file's owner (uid {uid}) has no account")
        cap = self.cfg.max_queued_per_user
        if account is not None and problem is None and cap and uid != 0:
            waiting = len(self._queued_by_uid.get(account.pw_uid, ()))
            if waiting >= cap:
                problem = (f"{taken.name}: {account.pw_name} already has {waiting} jobs waiting, the most this "
                           f"server allows (max_queued_per_user = {cap}); submit it again when some have started")
        try:
            self._record_entry(job_id, taken, uid, owner, problem, spec, account)
        except OSError as e:
            # the state directory can't take it (full?): the entry goes back to the spool, untouched, and
            # the periodic rescan offers it again
            dropped = self.jobs.pop(job_id, None)
            self.live.pop(job_id, None)
            self.dirty.discard(job_id)
            if dropped is not None:
                self._queued_by_uid.get(dropped.uid, set()).discard(job_id)
            self.submissions.pop((uid, taken.name, taken.st.st_ino), None)   # Lookup must not name it
            where = self.spool.put_back(job_id, taken.name)
            self._defer(os.path.basename(where))
            log(f"can't accept {taken.name} from {owner} now: {e.strerror} in {self.store.root}; "
                f"left in the spool as {where}, to be retried", 3, GPUSCHED_EVENT="defer")

    def _record_entry(self, job_id: int, taken: Taken, uid: int, owner: str, problem: str | None,
                      spec: Any, account: Any) -> None:
        now = time.time()
        self.submissions[(uid, taken.name, taken.st.st_ino)] = job_id
        while len(self.submissions) > 10000:
            self.submissions.popitem(last=False)
        if problem is not None or spec is None or account is None:
            cap = self.cfg.max_rejected_per_user
            mine = self._rejected_by_uid.get(uid, set())
            over = bool(cap) and uid != 0 and len(mine) >= cap
            if over and not self._evict_rejected(uid, len(mine) - cap + 1):
                self._reject_unrecorded(job_id, taken, uid, owner, problem or "rejected")
                return
            job = lifecycle.rejected(job_id, owner, uid, taken.name, problem or "rejected", now)
            self.store.save_status(job)                 # raises when the disk is full: put back, below
            self._track(job)
            kept = self.spool.finish_rejected(job_id, taken.name)
            text = f"rejected job {job_id} from {owner}: {problem} (kept as {kept})"
            if over:
                self._say_rejected(uid, owner, text + f"; only the newest {cap} rejections of {owner} keep a "
                                   f"record (max_rejected_per_user)")
            else:
                log(text, 4, job=job, GPUSCHED_EVENT="reject")
            return
        job = lifecycle.accepted(job_id, spec, account.pw_name, account.pw_uid, account.pw_gid, taken.name, now)
        self.store.save_source(job_id, taken.data or b"", account.pw_uid)
        self.store.save_status(job)                     # raises when the disk is full: nothing accepted yet
        self._track(job)
        self.spool.finish_accepted(job_id, taken.name)
        gpus = f"{spec.gpus} GPU(s)" if spec.gpus else "no GPU"
        log(f"accepted job {job_id} {spec.name!r} from {account.pw_name}: {gpus}, priority {spec.priority}",
            job=job, GPUSCHED_EVENT="accept")
        self.request_pass()

    def _evict_rejected(self, uid: int, n: int) -> bool:
        """Make room under max_rejected_per_user: remove the user's n oldest rejection records (a rejected
        entry has no log and no result; its kept copy in .rejected/ stays until keep_rejected). The newest
        mistakes are the ones a user looks for. False if they can't be removed now."""
        mine = self._rejected_by_uid.get(uid, set())
        oldest = heapq.nsmallest(n, mine)
        try:
            self.store.remove_jobs(oldest, results=False)
        except (OSError, ValueError) as e:
            log(f"can't remove old rejection records of uid {uid}: {e}", 3)
            return False
        for job_id in oldest:
            self.jobs.pop(job_id, None)
            self.listing.invalidate(job_id)
            mine.discard(job_id)
        return True

    def _reject_unrecorded(self, job_id: int, taken: Taken, uid: int, owner: str, problem: str) -> None:
        """Over max_rejected_per_user with old records that can't be removed now: the entry is kept byte for
        byte in .rejected/, but gets no record."""
        self.submissions.pop((uid, taken.name, taken.st.st_ino), None)
        kept = self.spool.finish_rejected(job_id, taken.name)
        self._say_rejected(uid, owner, f"rejected {taken.name} from {owner} without a record: {owner} has "
                           f"{self.cfg.max_rejected_per_user} rejected entries kept (max_rejected_per_user); "
                           f"kept as {kept}: {problem}")

    def _say_rejected(self, uid: int, owner: str, text: str) -> None:
        """A rejection of a user over max_rejected_per_user: in the journal once a minute per user (with how
        many meanwhile), so a flood of bad files can't flood the journal too."""
        said, quiet = self._unrecorded.get(uid, (0.0, 0))
        now = time.monotonic()
        if now - said < 60:
            self._unrecorded[uid] = (said, quiet + 1)
            return
        self._unrecorded[uid] = (now, 0)
        more = f" ({quiet} more rejections of {owner} since the last such line)" if quiet else ""
        log(text + more, 4, GPUSCHED_EVENT="reject", GPUSCHED_USER=owner)

    def _rescan(self) -> None:
        """Offer entries no event announced (an inotify overflow, a file put back): in batches, so a huge
        backlog never blocks the main loop (or the watchdog)."""
        if self._rescan_backlog or len(self._fair):
            return                                    # the last rescan is still being worked through
        now = time.time()
        for name in self.spool.entries():
            if name in self._pending:
                continue
            try:
                st = os.lstat(os.path.join(self.spool.root, name))
            except FileNotFoundError:
                continue
            if now - st.st_mtime > 2:                 # a missed event, not a file still being written
                self._rescan_backlog.append(name)
        if self._rescan_backlog:
            self._kick()

    # --- scheduling ------------------------------------------------------------------------------------

    def _probe_gpus(self) -> None:
        self._last_probe = time.monotonic()
        try:
            gpus = self.probe.probe(frozenset(j.unit for j in self.live.values() if j.state in ACTIVE and j.unit))
        except GpuProbeError as e:
            if self.gpu_error is None:
                log(f"GPU probe failed: {e}; no new GPU jobs start until it recovers", 3)
            self.gpu_error, self.gpus = str(e), None
            return
        if self.gpu_error is not None:
            log("GPU probe recovered")
            self.gpu_error = None
        if self.gpus is None or _gpu_key(gpus) != _gpu_key(self.gpus):
            self.request_pass()                          # only what can change a decision wakes the policy
        self.gpus = gpus

    def _scheduling_pass(self) -> bool:
        self._pass_pending = False
        t0 = time.perf_counter()
        try:
            self._schedule()
        except Exception:  # noqa: BLE001
            log(f"internal error in scheduling pass: {traceback.format_exc()}", 3, multiline=True)
        self.stats["last_pass_seconds"] = time.perf_counter() - t0
        self.stats["passes"] += 1
        self._last_pass_end = time.monotonic()
        self._update_status()
        return False

    def _schedule(self) -> None:
        t0 = time.perf_counter()
        queued, holders = [], []
        for job in self.live.values():
            spec = job.spec
            assert spec is not None
            if job.state == State.QUEUED:
                queued.append(policy.Request(job.id, spec.priority, spec.gpus, spec.gpu_memory, spec.gpu_type,
                                             spec.gpu_ids, uid=job.uid))
            elif job.state in ACTIVE:
                holders.append(policy.Holder(job.id, spec.priority, tuple(g.index for g in job.gpus),
                                             spec.preemptible, job.state == State.STOPPING, uid=job.uid,
                                             cpu_only=spec.gpus == 0))
        if not queued:
            return
        d = policy.schedule(queued, holders, self.gpus, max_running=self.cfg.max_running,
                            preempt_margin=self.cfg.preempt_margin,
                            max_running_per_user=self.cfg.max_running_per_user,
                            max_cpu_jobs_per_user=configmod.cpu_job_cap(self.cfg))
        self.stats["last_policy_seconds"] = time.perf_counter() - t0
        self.stats["last_pass_queued"] = len(queued)
        # Errors are contained per job: one job whose start fails (every pass, perhaps) never blocks the others
        for victim, for_job in d.preempts:
            self._contained(self._stop, self.jobs[victim], "preempt",
                            f"preempted by job {for_job} (priority {self.jobs[for_job].spec.priority})")  # type: ignore
        by_index = {g.index: g for g in self.gpus or ()}
        for job_id, indices in d.starts:
            self._contained(self._start, self.jobs[job_id], [by_index[i] for i in indices])
        for job_id, reason in d.waiting.items():
            job = self.jobs[job_id]
            if lifecycle.waiting(job, reason):
                # informational, recomputed every pass: only the people's copy shows it, written soon, in
                # batches (a first pass over 100,000 new jobs must not stall the loop), never fsync'd
                self.listing.invalidate(job.id)
                self._copies_due.add(job.id)
        if self._copies_due and not self._copies_flushing:
            self._copies_flushing = True
            GLib.idle_add(self._flush_copies, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def _log_floor(self) -> int:
        try:
            st = os.statvfs(self.store.logs_dir)
        except OSError:
            return 0
        return configmod.log_floor(self.cfg, st.f_blocks * st.f_frsize)

    def _contained(self, action: Callable[..., None], job: Job, *args: Any) -> None:
        try:
            action(job, *args)
        except Exception:  # noqa: BLE001 - a bug or an odd failure with one job must not stop the pass
            log(f"internal error in {action.__name__} for job {job.id}: {traceback.format_exc()}", 3, job=job,
                multiline=True)
            if job.state == State.STARTING:
                # nothing of it can be running yet (the monitor got no spec): back to the queue, retried later
                lifecycle.never_started(job, "waiting: an internal error stopped its start; retrying")
                self._save(job)
                if job.unit:
                    self.units.stop(job.unit)

    def _flush_copies(self) -> bool:
        for _ in range(256):
            if not self._copies_due:
                self._copies_flushing = False
                return False
            job = self.jobs.get(self._copies_due.pop())
            if job is not None:
                try:
                    self.store.refresh_copy(job)
                except OSError:
                    pass
        return True

    # --- starting and stopping -------------------------------------------------------------------------

    def _start(self, job: Job, gpus: list[Gpu]) -> None:
        spec = job.spec
        assert spec is not None
        try:
            pw = pwd.getpwuid(job.uid)
        except KeyError:
            lifecycle.start_failed(job, f"user {job.user} (uid {job.uid}) no longer exists", time.time())
            self._save(job)
            return
        account = launch.Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)
        unit = launch.unit_name(job.id)
        lifecycle.starting(job, gpus, unit, self.store.log_path(job.id), time.time(), os.urandom(4).hex())
        if not self._save(job):                          # on disk before the scope exists, or no start
            lifecycle.never_started(job, "waiting: the state directory can't be written")
            self._retry = True
            return
        result_path = self.store.result_path(job.id, job.attempt, job.start_token)
        plan = launch.plan(job.id, job.attempt, spec, account, gpus, device_nodes(gpus), job.log, result_path,
                           max_log_size=self.cfg.max_log_size, log_min_free=self._log_floor())
        r, w = os.pipe()
        try:
            pid = self.spawner.spawn(r, result_path)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        try:                                             # w is closed on every path: at EOF without a spec,
            self._watch_monitor(pid, job.id)             # the monitor exits without running anything
            try:
                self.units.start_scope(unit, pid, plan.properties)
            except SystemdError as e:
                if isinstance(e, UnitExists):
                    # a scope left by a start that was given up on (this job is queued, so nothing of it can
                    # be running there): stop it and try again on the next tick
                    lifecycle.never_started(job, f"waiting for the previous {unit} to go away")
                    self.units.stop(unit)
                    self._retry = True
                elif isinstance(e, SystemdUnavailable):
                    lifecycle.never_started(job, "waiting: the system bus is being reconnected")
                    self._retry = True
                else:
                    lifecycle.start_failed(job, f"could not create {unit}: {e}", time.time())
                self._save(job)
                log(f"job {job.id} not started: {e}", 3, job=job)
                return
            try:
                data = memoryview(json.dumps(plan.monitor).encode())
                while data:
                    data = data[os.write(w, data):]
            except OSError as e:
                # the monitor died before reading its spec (killed, out of memory): nothing runs; stop the
                # empty scope and requeue; the monitor's exit is handled as usual
                lifecycle.never_started(job, f"waiting: its monitor died before the job began ({e.strerror})")
                self._save(job)
                self.units.stop(unit)
                self._retry = True
                log(f"job {job.id} not started: its monitor died early", 3, job=job)
                return
        finally:
            os.close(w)
        lifecycle.running(job)
        self._save(job)
        where = "GPU " + ",".join(str(g.index) for g in gpus) if gpus else "no GPU"
        log(f"started job {job.id} {spec.name!r} of {job.user} in {unit} on {where} (attempt {job.attempt})",
            job=job, GPUSCHED_EVENT="start", GPUSCHED_UNIT=unit)

    def _stop(self, job: Job, intent: str, reason: str) -> None:
        lifecycle.stopping(job, intent, reason, time.time())
        self._save(job)
        log(f"stopping job {job.id}: {reason}", job=job, GPUSCHED_EVENT="preempt" if intent == "preempt" else "stop")
        self._send_stop(job)

    def _send_stop(self, job: Job) -> None:
        try:
            gone = not self.units.stop(job.unit)
        except SystemdUnavailable:
            self._restop.add(job.id)                    # asked again once the bus is back (tick)
            return
        self._restop.discard(job.id)
        if gone:
            self._reconcile(job)

    def _scope_busy(self, job: Job) -> bool:
        """True while the job's scope still holds a process after its monitor is done: then kill them all
        (KillUnit SIGKILL) and keep the job's GPUs until the kernel says the scope is empty; tick() looks again
        every second."""
        left = cgroups.pids(cgroups.unit_dir(launch.SLICE, job.unit))
        if not left:
            return False
        if job.id not in self._killing:
            self._killing.add(job.id)
            log(f"job {job.id} ended but {len(left)} process(es) remain in {job.unit}; killing them before its "
                f"GPUs are freed", 4, job=job)
        self._kill(job, cgroups.unit_dir(launch.SLICE, job.unit))
        return True

    def _kill(self, job: Job, cgroup: str | None) -> None:
        """SIGKILL what runs in `cgroup` (the job's own part of its scope, or all of it) straight through
        cgroupfs; systemd's KillUnit when there is no such cgroup here. KillUnit fails on a scope with a
        delegated subtree under systemd 252 ("Input/output error"), and cgroup.kill is atomic besides."""
        if cgroups.kill(cgroup):
            return
        try:
            self.units.kill(job.unit, signal.SIGKILL)
        except SystemdError as e:
            log(f"can't kill the processes of job {job.id}: {e}", 3, job=job)

    def _watch_monitor(self, pid: int, job_id: int) -> None:
        """Call _monitor_exited when it exits: a pidfd works for the zygote's children as for our own."""
        self.monitors[pid] = job_id
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:                      # already gone (and reaped by the zygote)
            GLib.idle_add(lambda: guarded(self._monitor_exited)(pid) and False)
            return

        def exited(fd: int, _cond: Any) -> bool:
            os.close(fd)
            guarded(self._monitor_exited)(pid)
            return False
        GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, pidfd, GLib.IOCondition.IN, exited)

    def _monitor_exited(self, pid: int) -> None:
        job_id = self.monitors.pop(pid, None)
        job = self.live.get(job_id) if job_id is not None else None
        if job is None or job.state not in ACTIVE:
            return
        self._reconcile(job)

    def _finish(self, job: Job, result: dict[str, Any] | None) -> None:
        if result is not None and result.get("not_started") and job.state in (State.STARTING, State.RUNNING):
            lifecycle.never_started(job, "requeued: the daemon stopped before the job began")
            self._save(job)
            log(f"job {job.id} never started; requeued", job=job, GPUSCHED_EVENT="requeue")
            self.request_pass()
            return
        self._killing.discard(job.id)
        lifecycle.ended(job, result, time.time())
        self._save(job)
        event = "requeue" if job.state == State.QUEUED else "end"
        text = f"job {job.id} {job.state}" + (f": {job.reason}" if job.reason else "")
        log(text, 6 if job.state in (State.SUCCEEDED, State.QUEUED, State.CANCELLED) else 4, job=job,
            GPUSCHED_EVENT=event, GPUSCHED_EXIT_CODE=job.exit_code, GPUSCHED_SIGNAL=job.signal)
        self.request_pass()

    # --- periodic work ---------------------------------------------------------------------------------

    def tick(self) -> bool:
        try:
            now = time.monotonic()
            if now - self._last_probe >= self.cfg.gpu_poll_interval:
                self._probe_gpus()
            adopted = set(self.monitors.values())
            try:
                for job_id in list(self._restop):
                    job = self.live.get(job_id)
                    if job is None or job.state != State.STOPPING:
                        self._restop.discard(job_id)
                    else:
                        self._send_stop(job)
                for job in [j for j in self.live.values() if j.state in ACTIVE and j.id not in adopted]:
                    self._reconcile(job)
            except SystemdUnavailable:
                pass                                    # bus.py is reconnecting; tried again next tick
            self.spawner.reap()
            if self.dirty:
                self._retry_dirty()
            if self._retry:
                self._retry = False
                self.request_pass()
            if now - self._last_expire >= self._expire_interval():
                self._last_expire = now
                self.expire()
            if now - self._last_rescan >= RESCAN_EVERY:
                self._last_rescan = now
                self._rescan()
            self._update_status()
        except Exception:  # noqa: BLE001
            log(f"internal error in tick: {traceback.format_exc()}", 3, multiline=True)
        return True

    def status_line(self) -> str:
        running = sum(1 for j in self.live.values() if j.state in ACTIVE)
        queued = sum(1 for j in self.live.values() if j.state == State.QUEUED)
        if self.gpus is None:
            gpus = f"GPUs unknown ({self.gpu_error})"
        else:
            held = {g.index for j in self.live.values() if j.state in ACTIVE for g in j.gpus}
            free = sum(1 for g in self.gpus if g.index not in held and not g.foreign_pids)
            gpus = f"GPUs {free}/{len(self.gpus)} free" + (" (simulated)" if self.probe.simulated else "")
        return f"{running} running, {queued} queued, {gpus}"

    def _update_status(self) -> None:
        line = self.status_line()
        if line != self._last_status:
            self._last_status = line
            journal.notify(f"STATUS={line}")

    # --- what the bus API asks ------------------------------------------------------------------------

    def may_act(self, caller: int, job: Job) -> bool:
        return caller in (0, job.uid) or self.is_admin(caller)

    def is_admin(self, caller: int) -> bool:
        if caller == 0:
            return True
        if not self.cfg.admin_group:
            return False
        try:
            gid = grp.getgrnam(self.cfg.admin_group).gr_gid
            pw = pwd.getpwuid(caller)
        except KeyError:
            return False
        return gid in os.getgrouplist(pw.pw_name, pw.pw_gid)

    def cancel(self, job_id: int, caller: int, now: bool = False) -> str:
        """Cancel a job: a queued one at once; an active one with its stop signal and grace, or (now) with
        SIGKILL to every process of its scope, whatever its grace."""
        job = self.jobs.get(job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        if not self.may_act(caller, job):
            raise PermissionError(f"job {job_id} belongs to {job.user}; only its owner or root may cancel it")
        who = _user_name(caller)
        if job.state == State.QUEUED:
            lifecycle.cancel_queued(job, f"cancelled by {who}", time.time())
            self._save(job)
            log(f"job {job.id} cancelled by {who} while queued", job=job, GPUSCHED_EVENT="cancel")
            self.request_pass()
            return "cancelled"
        if job.state not in ACTIVE:
            raise ValueError(f"job {job_id} has already ended ({job.state})")
        how = "at once (SIGKILL)" if now else ""
        if job.state == State.STOPPING:
            if job.stop_intent != "cancel" or now:
                lifecycle.cancel_stopping(job, f"cancelled by {who} {how}".rstrip())
                self._save(job)
                log(f"job {job.id} cancelled by {who} while stopping {how}".rstrip(), job=job,
                    GPUSCHED_EVENT="cancel")
        else:
            self._stop(job, "cancel", f"cancelled by {who} {how}".rstrip())
        if now and job.state in ACTIVE:
            # the job's own cgroup (jobcgroup.py) where it has one, so that its monitor lives on to record the
            # SIGKILL; else the whole scope, monitor included (then the record says killed after its grace)
            scope = cgroups.unit_dir(launch.SLICE, job.unit)
            self._kill(job, os.path.join(scope, "job") if scope and os.path.isdir(os.path.join(scope, "job"))
                       else scope)
            return "killed"
        return "stopping"

    # --- expiry ----------------------------------------------------------------------------------------

    def _keep(self) -> tuple[float, float]:
        """(keep_finished, keep_rejected) in seconds, 0 meaning for ever; keep_rejected 0 follows keep_finished."""
        finished = self.cfg.keep_finished
        rejected = self.cfg.keep_rejected or finished
        return finished, (min(rejected, finished) if finished else rejected)

    def _expire_interval(self) -> float:
        shortest = min((k for k in self._keep() if k), default=0.0)
        return min(EXPIRE_EVERY, max(1.0, shortest / 4)) if shortest else EXPIRE_EVERY

    def expire(self) -> None:
        """Start a sweep of finished jobs older than keep_finished (rejected ones: keep_rejected): records,
        status files, logs, results and rejected entries' kept copies go. Never an active or queued job. Done
        in batches on the main loop."""
        keep_finished, keep_rejected = self._keep()
        if not (keep_finished or keep_rejected) or self._expiring:
            return
        now = time.time()
        cutoff = {State.REJECTED: now - keep_rejected if keep_rejected else 0.0}
        default = now - keep_finished if keep_finished else 0.0
        self._expiring = [j.id for j in self.jobs.values()
                          if j.state in FINAL and (j.ended or j.submitted) < cutoff.get(j.state, default)]
        if keep_rejected:
            try:
                freed = self.spool.expire_rejected(cutoff[State.REJECTED])
                if freed:
                    log(f"removed rejected spool entries older than keep_rejected ({freed} bytes)")
            except OSError as e:
                log(f"can't expire rejected spool entries: {e}", 3)
        if self._expiring:
            log(f"removing {len(self._expiring)} finished job(s) older than keep_finished / keep_rejected",
                GPUSCHED_EVENT="expire")
            GLib.idle_add(self._expire_batch, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def _expire_batch(self) -> bool:
        batch = []
        while self._expiring and len(batch) < EXPIRE_BATCH:
            job = self.jobs.get(self._expiring.pop())
            if job is not None and job.state in FINAL and job.id not in self.dirty:
                batch.append(job)
        try:
            self.store.remove_jobs(j.id for j in batch)          # lists results/ once per batch
        except (OSError, ValueError) as e:
            log(f"can't remove {len(batch)} finished job(s): {e}; kept for the next sweep", 3)
            return bool(self._expiring)
        for job in batch:
            del self.jobs[job.id]
            self.listing.invalidate(job.id)
            self._queued_by_uid.get(job.uid, set()).discard(job.id)
            self._rejected_by_uid.get(job.uid, set()).discard(job.id)
        return bool(self._expiring)

    def stats_snapshot(self) -> dict[str, Any]:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {"status": self.status_line(), "jobs": len(self.jobs), "live": len(self.live),
                "rss_bytes": rss, **self.stats}

    def lookup(self, caller: int, name: str, ino: int) -> int:
        return self.submissions.get((caller, name, ino), 0)

    def gpu_table(self) -> list[dict[str, Any]]:
        holders = {g.index: j.id for j in self.live.values() if j.state in ACTIVE for g in j.gpus}
        out = []
        for g in self.gpus or ():
            state = f"job {holders[g.index]}" if g.index in holders else "foreign" if g.foreign_pids else "free"
            out.append({"index": g.index, "uuid": g.uuid, "name": g.name, "memory_total": g.memory_total,
                        "memory_free": g.memory_free, "simulated": g.simulated, "state": state,
                        "job": holders.get(g.index), "foreign_pids": list(g.foreign_pids),
                        "foreign": [dataclasses.asdict(p) for p in g.foreign]})
        return out


def _gpu_key(gpus: list[Gpu]) -> list[tuple]:
    return [(g.index, g.uuid, g.foreign_pids, g.memory_free >> 28) for g in gpus]   # 256 MiB steps


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpuschedd", description="gpusched daemon (run by gpusched.service)")
    ap.add_argument("--config", default=os.environ.get("GPUSCHED_CONFIG", configmod.DEFAULT_PATH))
    args = ap.parse_args(argv)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"gpuschedd: {e}", file=sys.stderr)
        return 2
    from gpusched.api import publish
    from gpusched.bus import BusLink, BusUnavailable
    from gpusched.systemd import Systemd

    # The bus connection is private and reconnects (bus.py): losing dbus-daemon, or being disconnected by
    # it, costs the API a few seconds, never the daemon. Meanwhile systemd calls fail with
    # SystemdUnavailable and the loop (scheduling, job ends, the watchdog) goes on.
    link = BusLink(lambda message, priority: log(message, priority))
    units = Systemd(None)
    link.on_up(units.rebind)
    link.on_down(lambda: units.rebind(None))
    try:
        link.start()
    except BusUnavailable as e:
        print(f"gpuschedd: {e}", file=sys.stderr)
        return 1
    probe, what = make_probe(cfg.simulated_gpus)
    log(f"gpusched starting: spool {cfg.spool_dir}, state {cfg.state_dir}, {what}")
    daemon = Daemon(cfg, Store(cfg.state_dir), Spool(cfg.spool_dir), units, probe)
    watcher = SpoolWatcher(cfg.spool_dir, daemon.on_spool_entry) if _spool_ready(daemon) else None
    daemon.recover()
    if watcher is None:
        watcher = SpoolWatcher(cfg.spool_dir, daemon.on_spool_entry)
    watcher.start()
    fds.cloexec_all()
    link.on_up(lambda bus: publish(bus, daemon))       # now, and again on every new connection
    daemon.request_pass()

    loop = GLib.MainLoop()
    GLib.timeout_add(1000, daemon.tick)
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
    journal.notify(f"READY=1\nSTATUS={daemon.status_line()}")
    log(f"gpusched ready: {daemon.status_line()}")
    loop.run()
    daemon.write_snapshot()
    link.stop()
    return 0


def _spool_ready(daemon: Daemon) -> bool:
    """Start watching before the first scan when the spool exists, so nothing dropped meanwhile is missed."""
    return os.path.isdir(daemon.spool.root)


if __name__ == "__main__":
    sys.exit(main())
