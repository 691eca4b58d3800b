"""Intake: spool entries become jobs (engine.accept) or rejected records (engine.reject), fairly and within
bounds.

The spool watcher's thread only posts names (`on_spool_entry`); one main-loop source drains them: each name
is sorted by owner (one lstat), then owners take turns (fairqueue.py), all within INGEST_BUDGET per turn and
at the scheduling pass's own idle priority, so a flood of files never starves the watchdog, the bus or the
start of jobs already accepted. An entry is parsed (jobfile.py) for its owner, with the server's limits, and
checked against max_queued_per_user; a bad one is rejected with a record, and past max_rejected_per_user its
owner's oldest rejection records make room (said once a minute per owner; no record when they can't go).
Nothing is taken while the state filesystem is under half the log floor, and an entry that can't be recorded
goes back to the spool; either way it is offered again by the periodic rescan, not at once.
"""

from __future__ import annotations

import os
import pwd
import threading
from collections import deque
from typing import Any, Callable

from gpusched import config as configmod
from gpusched import sweep
from gpusched.access import Access, group_names
from gpusched.clock import Clock
from gpusched.engine import Engine
from gpusched.fairqueue import FairQueue
from gpusched.jobfile import JobFileError, parse as parse_jobfile
from gpusched.listing import printable
from gpusched.log import Log, guarded
from gpusched.model import State
from gpusched.spool import Spool, Taken, ignored
from gpusched.store import Store
from gpusched.units import format_size

RESCAN_EVERY = 10.0        # seconds: a safety net for inotify overflows; entries are normally seen at once
INGEST_BATCH = 64          # spool entries taken per main-loop turn, at most
INGEST_BUDGET = 0.05       # seconds of main-loop time per ingest turn: a flood never starves the watchdog or bus
MAX_DEFERRED = 100000      # names put back and remembered; the oldest are simply offered again sooner


def judge(cfg: configmod.Config, access: Access, engine: Engine, data: bytes, name: str, uid: int,
          problem: str | None = None) -> tuple[str, Any, Any, str | None]:
    """The daemon's verdict on a job file owned by `uid`: (owner's name, spec or None, the account it runs as or
    None, the problem or None). Parsed for its owner with the server's limits (the classes the owner may ask
    for; privileged for root and admins), its `user` resolved, max_queued_per_user checked. Changes nothing:
    the intake records what it says, and `submit --dry-run` (api.Manager.check) only reports it."""
    try:
        pw = pwd.getpwuid(uid)
        owner, groups = pw.pw_name, group_names(pw.pw_name, pw.pw_gid)
    except KeyError:
        owner, groups = str(uid), []
    spec = None
    if problem is None:
        try:
            spec = parse_jobfile(data, name, owner_is_root=uid == 0, limits=cfg.job_limits(owner, groups),
                                 privileged=access.is_admin(uid))
        except JobFileError as e:
            problem = str(e)
    account = None
    if spec is not None:
        try:
            account = pwd.getpwnam(spec.user) if spec.user else pwd.getpwuid(uid)
        except KeyError:
            problem = f"{name}: " + (f"user: no such user {spec.user!r}" if spec.user
                                     else f"the file's owner (uid {uid}) has no account")
    cap = cfg.max_queued_per_user
    count = sweep.size(spec.sweep) if spec is not None else 1      # an array counts as its jobs
    if account is not None and problem is None and cap and uid != 0:
        waiting = engine.queued_of(account.pw_uid)
        if waiting + count > cap and count > 1:
            problem = (f"{name}: its [sweep] makes {count} jobs and {account.pw_name} already has "
                       f"{waiting} waiting: more than this server allows (max_queued_per_user = {cap}); "
                       f"submit it again when some have started, or sweep over fewer values")
        elif waiting >= cap:
            problem = (f"{name}: {account.pw_name} already has {waiting} jobs waiting, the most this "
                       f"server allows (max_queued_per_user = {cap}); submit it again when some have started")
    return owner, spec, account, problem


class Intake:
    def __init__(self, cfg: configmod.Config, spool: Spool, store: Store, engine: Engine, access: Access,
                 clock: Clock, log: Log, soon: Callable[[Callable[[], bool]], Any]):
        self.cfg = cfg
        self.spool = spool
        self.store = store
        self.engine = engine
        self.access = access
        self.clock = clock
        self.log = log
        self.soon = soon                               # must be callable from the watcher's thread
        self._pending: set[str] = set()                # spool names announced, not yet ingested
        self._incoming: deque[str] = deque()
        self._incoming_lock = threading.Lock()
        self._draining = False
        self._rescan_backlog: list[str] = []
        self._last_rescan = clock.monotonic()
        self._fair = FairQueue()                       # spool names to take, round-robin by owner
        self._deferred: dict[str, float] = {}          # spool name -> not offered again before (monotonic)
        self._unrecorded: dict[int, tuple[float, int]] = {}  # uid -> (last journal line, rejections since)
        self._room, self._room_checked, self._room_said = True, 0.0, 0.0

    # --- recovery --------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Entries taken when the daemon died: recorded ones are moved on, the others recorded now."""
        self.spool.init()
        for job_id, name in self.spool.work_entries():
            job = self.engine.job(job_id)
            if job is None:
                self.engine.discard_array(job_id)      # an array's elements recorded before the daemon died
                taken = self.spool.read_taken(job_id, name)
                if taken:
                    self._process(job_id, taken)
            elif job.state == State.REJECTED:
                self.spool.finish_rejected(job_id, name)
            else:
                self.spool.finish_accepted(job_id, name)

    def resume(self) -> None:
        """What waits in the spool is taken after READY=1, in batches, in the order of its names."""
        self._rescan_backlog = list(reversed(self.spool.entries()))
        if self._rescan_backlog:
            self._kick()

    # --- the drain -------------------------------------------------------------------------------------

    def on_spool_entry(self, name: str) -> None:
        """From the watcher thread: queue the name; one main-loop source drains the queue in batches, so a
        flood of files interleaves with timers (the watchdog), bus calls and job ends."""
        with self._incoming_lock:
            self._pending.add(name)
            self._incoming.append(name)
            if self._draining:
                return
            self._draining = True
        self.soon(self._drain_incoming)

    def _kick(self) -> None:
        """From the main loop: make sure the drain runs (for names that came from a rescan)."""
        with self._incoming_lock:
            if self._draining:
                return
            self._draining = True
        self.soon(self._drain_incoming)

    def _drain_incoming(self) -> bool:
        """Sort new names by owner, then take them round-robin by owner, all within INGEST_BUDGET."""
        deadline = self.clock.monotonic() + INGEST_BUDGET
        while self.clock.monotonic() <= deadline:
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
            if self.clock.monotonic() > deadline:
                return True                            # the rest on the next turn, after timers and bus calls
            name = self._fair.pop()
            if name is None:
                break
            guarded(self.ingest, self.log)(name)
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
        now = self.clock.monotonic()
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
                self.log(f"the state filesystem {self.store.root} has {format_size(free)} free, under the intake "
                         f"floor ({format_size(floor)}, half of log_min_free): new spool entries wait there until "
                         f"there is room", 3, GPUSCHED_EVENT="defer")
        return self._room

    # --- one entry -------------------------------------------------------------------------------------

    def ingest(self, name: str) -> bool:
        if ignored(name):
            return False
        retry_at = self._deferred.get(name)
        if retry_at is not None:
            if self.clock.monotonic() < retry_at:
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
            self.log(f"can't accept {printable(name)} now: {e.strerror} in {self.store.root}; it stays in the "
                     f"spool, to be retried", 3, GPUSCHED_EVENT="defer")
            self._defer(name)
            return False
        taken = self.spool.take(name, job_id)
        if taken is not None:
            self._process(job_id, taken)
        return False

    def _defer(self, name: str) -> None:
        self._deferred[name] = self.clock.monotonic() + RESCAN_EVERY
        while len(self._deferred) > MAX_DEFERRED:
            del self._deferred[next(iter(self._deferred))]

    def _process(self, job_id: int, taken: Taken) -> None:
        uid = taken.st.st_uid
        owner, spec, account, problem = judge(self.cfg, self.access, self.engine, taken.data or b"", taken.name,
                                              uid, f"{taken.name}: {taken.problem}" if taken.problem else None)
        count = sweep.size(spec.sweep) if spec is not None else 1      # an array counts as its jobs
        key = (uid, taken.name, taken.st.st_ino)
        try:
            if problem is not None or spec is None or account is None:
                budget = self.cfg.max_rejected_per_user
                over = bool(budget) and uid != 0 and self.engine.rejected_of(uid) >= budget
                # past the budget, the user's oldest rejection records make room: the newest mistakes are the
                # ones a user looks for; the line is then said once a minute per user
                if over and not self.engine.evict_rejected(uid, self.engine.rejected_of(uid) - budget + 1):
                    self._reject_unrecorded(job_id, taken, uid, owner, problem or "rejected")
                    return
                say = (lambda text: self._say_rejected(uid, owner, text + f"; only the newest {budget} rejections "
                                                       f"of {owner} keep a record (max_rejected_per_user)")) \
                    if over else None
                self.engine.reject(job_id, owner, uid, taken.name, problem or "rejected", key=key,
                                   settle=lambda: self.spool.finish_rejected(job_id, taken.name), say=say)
            elif spec.sweep:
                ids = [job_id] + self.store.allocate_ids(count - 1)
                # recorded over a few main-loop turns; if that fails, the entry goes back as below
                self.engine.accept_array(ids, spec, account.pw_name, account.pw_uid, account.pw_gid, taken.name,
                                         data=taken.data or b"", key=key,
                                         settle=lambda: self.spool.finish_accepted(job_id, taken.name),
                                         failed=lambda e: self._put_back(job_id, taken, owner, e))
            else:
                self.engine.accept(job_id, spec, account.pw_name, account.pw_uid, account.pw_gid, taken.name,
                                   data=taken.data or b"", key=key,
                                   settle=lambda: self.spool.finish_accepted(job_id, taken.name))
        except OSError as e:
            self._put_back(job_id, taken, owner, e)

    def _put_back(self, job_id: int, taken: Taken, owner: str, e: Exception) -> None:
        """The state directory can't take it (full?): the entry goes back to the spool, untouched, and the
        periodic rescan offers it again."""
        where = self.spool.put_back(job_id, taken.name)
        self._defer(os.path.basename(where))
        why = e.strerror if isinstance(e, OSError) else "an internal error"
        self.log(f"can't accept {taken.name} from {owner} now: {why} in {self.store.root}; "
                 f"left in the spool as {where}, to be retried", 3, GPUSCHED_EVENT="defer")

    def _reject_unrecorded(self, job_id: int, taken: Taken, uid: int, owner: str, problem: str) -> None:
        """Over max_rejected_per_user with old records that can't be removed now: the entry is kept byte for
        byte in .rejected/, but gets no record."""
        kept = self.spool.finish_rejected(job_id, taken.name)
        self._say_rejected(uid, owner, f"rejected {taken.name} from {owner} without a record: {owner} has "
                           f"{self.cfg.max_rejected_per_user} rejected entries kept (max_rejected_per_user); "
                           f"kept as {kept}: {problem}")

    def _say_rejected(self, uid: int, owner: str, text: str) -> None:
        """A rejection of a user over max_rejected_per_user: in the journal once a minute per user (with how
        many meanwhile), so a flood of bad files can't flood the journal too."""
        said, quiet = self._unrecorded.get(uid, (0.0, 0))
        now = self.clock.monotonic()
        if now - said < 60:
            self._unrecorded[uid] = (said, quiet + 1)
            return
        self._unrecorded[uid] = (now, 0)
        more = f" ({quiet} more rejections of {owner} since the last such line)" if quiet else ""
        self.log(text + more, 4, GPUSCHED_EVENT="reject", GPUSCHED_USER=owner)

    # --- periodic work ---------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock.monotonic()
        if now - self._last_rescan >= RESCAN_EVERY:
            self._last_rescan = now
            self._rescan()

    def _rescan(self) -> None:
        """Offer entries no event announced (an inotify overflow, a file put back): in batches, so a huge
        backlog never blocks the main loop (or the watchdog)."""
        if self._rescan_backlog or len(self._fair):
            return                                    # the last rescan is still being worked through
        now = self.clock.time()
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
