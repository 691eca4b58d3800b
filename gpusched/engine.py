"""The engine: the job table and the one door every change of a job goes through.

`apply(job, change, ...)` is that door: `change` is a lifecycle function (lifecycle.py keeps the allowed
moves), then the record is written (recorder: a failed write is retried every tick), the journal gets its
line, and the scheduler is woken when the change can let a job start. New jobs come in through `accept` and
`reject`, which record them or raise (the spool entry then stays where it was). Everything else here is a
reason to call the door: a scheduling pass (policy.schedule decides), a job's end (its monitor's result), a
cancel, the reconciliation of active jobs with what the runner sees, the periodic `tick`, and expiry.

What needs the table but changes no job lives beside it, each given what it reads: answers.py (what people
ask: pages, show, why, gpus, history; it reads the engine as `answers.Asked` names it), shares.py (the
fair-share ledger and standings), accounting.py (the GPU-usage meter and idle jobs: its changes are asked of
this door), expiry.py (which finished jobs go, and when) and startstop.py (a start, a stop, a warning, a
finished job's hooks: how the runner is asked to act; every change that comes of it is asked of this door).
The engine keeps their verbs as one-line calls.

The policy is told what it needs through `policy.inputs` (each queued job's Request, cached until the job
changes, since a pass may see 100,000 of them), with the time, the config's scheduling keys and each user's
fair-share standing, from a ledger the engine charges with the GPU time active jobs hold and rebuilds from the
jobs' histories at recovery (docs/policy.md says what the engine does around the pass).

The engine is given a clock, a recorder, a runner, a GPU probe, a log and a `wake` callback (ask for a
scheduling pass, soon); optionally `soon` (run work at idle, in batches) and the spool's `expire_rejected`.
It imports no GLib and no D-Bus, starts no thread and never sleeps: the daemon drives it on its main loop,
the unit tests and the simulator on a clock they move by hand (gpusched.testing has the fakes).
"""

from __future__ import annotations

import heapq
import itertools
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Callable, Iterable, Protocol, Sequence

from gpusched import answers, dependencies, hooks, lifecycle, policy, sweep, timers, usage, windows
from gpusched import config as configmod
from gpusched.accounting import Accounting
from gpusched.clock import Clock
from gpusched.errors import Invalid, NoSuchJob, NotAllowed
from gpusched.expiry import Expiry
from gpusched.gpuhistory import GpuHistory
from gpusched.gpus import Probe
from gpusched.inventory import Inventory
from gpusched.jobfile import JobSpec
from gpusched.listing import Listing, Viewer
from gpusched.log import Log
from gpusched.model import ACTIVE, FINAL, Job, State
from gpusched.policy import fairshare, inputs
from gpusched.recorder import Recorder, Soon
from gpusched.shares import Shares
from gpusched.runner import Ended, Gone, Runner, Running
from gpusched.scopes import SystemdUnavailable
from gpusched.startstop import StartStop

MAX_SUBMISSIONS = 10000    # spool names remembered for Lookup
ARRAY_STEP = 0.02          # seconds of a main-loop turn spent recording an array's jobs


@dataclass(frozen=True)
class Line:
    """A journal line that depends on the job after its change (see apply's `say`)."""
    text: str
    priority: int = 6
    fields: dict[str, Any] = field(default_factory=dict)


class Who(Protocol):
    """Who asks for a cancel (access.Caller): named in the job's reason."""
    @property
    def name(self) -> str: ...


def _all_now(fn: Callable[[], bool]) -> None:
    while fn():
        pass


TIME_PASS = 30.0                   # seconds: while jobs wait, a pass at least this often, event or not

class Engine:
    def __init__(self, cfg: configmod.Config, clock: Clock, recorder: Recorder, runner: Runner, probe: Probe,
                 wake: Callable[[], None], log: Log, soon: Soon = _all_now,
                 expire_rejected: Callable[[float], int] | None = None):
        self.cfg = cfg
        self.clock = clock
        self.recorder = recorder
        self.runner = runner
        self.inventory = Inventory(probe, clock, log, cfg.gpu_poll_interval)
        self.wake = wake
        self.log = log
        self.soon = soon
        self.expire_rejected = expire_rejected
        self.listing = Listing()
        self.jobs: dict[int, Job] = {}
        self.live: dict[int, Job] = {}                 # jobs not yet final
        self._active: set[int] = set()                 # ids of the active ones (starting, running, stopping)
        self.submissions: OrderedDict[tuple[int, str, int], int] = OrderedDict()   # (uid, name, ino) -> id
        self._queued_by_uid: dict[int, set[int]] = {}  # for max_queued_per_user, kept by _track
        self._rejected_by_uid: dict[int, set[int]] = {}  # for max_rejected_per_user, kept by _track
        self._retry = False                            # a start must be tried again on the next tick
        # the policy's inputs: a queued job's Request is built once and dropped by _track when the job changes;
        # the fair-share ledger (shares.py) is charged with the GPUs active jobs hold;
        # _runs: the run times of each (uid, job name)'s latest successful runs, for a limit estimate
        self.classes = cfg.class_map() or None
        self._requests: dict[int, tuple[policy.Request, float | None]] = {}
        self.shares = Shares(cfg, clock)               # the fair-share ledger, charged (shares.py)
        self._runs: dict[tuple[int, str], deque[float]] = {}
        self._input_errors: set[int] = set()           # jobs whose policy inputs failed (said once each)
        self._last_pass = clock.monotonic()            # when the last pass began (TIME_PASS)
        # issue 9: each (uid, job name)'s latest job id (dependencies by name); the server-wide switches an
        # admin sets (drain, paused users), kept by the recorder across restarts; the next retry due
        self._latest: dict[tuple[int, str], int] = {}
        control = recorder.load_control()
        self.draining, self.paused = _control(control, log)       # who drained it ("": not); user -> who paused
        self._due: float | None = None
        # dependencies: which queued jobs still wait on each job (so it isn't expired under them, and their
        # verdict is looked at again only when it ends), and each such job's verdict until then: a pass costs
        # one lookup per waiting job, not one per dependency (a job may have 192)
        self._dependents: dict[int, set[int]] = {}
        self._verdicts: dict[int, tuple[str, str]] = {}
        self._singles: dict[tuple[int, str], int] | None = None
        # time windows (a job's `window`, a class's boost), read on the wall clock of `tz` (None: the server's
        # local time; tests set a zone); _window_waits: this pass's (reason, next opening) per window name
        self.tz: tzinfo | None = None
        self.window_map = cfg.window_map()
        self._window_waits: dict[str, tuple[str, float | None]] = {}
        # GPUs used outside gpusched (config `foreign`): GPU index -> since when (monotonic) a foreign process
        # has been on it, probe after probe; the active jobs on such GPUs (each said once in the journal)
        self._foreign_since: dict[int, float] = {}
        self._contested: set[int] = set()
        # issue 9, warnings: active jobs with a warning or a held-back stop to act on, and when (timers.next_due,
        # kept by _track). Starts, stops, warnings and hooks are startstop.py's, their changes asked of the door
        self._timers: dict[int, float] = {}
        self.startstop = StartStop(cfg, clock, runner, log, self.classes, self.apply, self.reconcile,
                                   self.monitor_exited, recorder.log_path, self._retry_soon, self._due_at)
        # issue 9: accounting and idle reservations (accounting.py): the meter of active jobs' GPU use; every
        # change it makes to a job goes through the door
        self.accounting = Accounting(cfg, clock, log, self.inventory, self.jobs, self.live,
                                     lambda: self.shares.charged, self.apply, self.startstop.stop)
        # job arrays: array id -> {element index: job id}; each array's active elements, counted per pass
        self._arrays: dict[int, dict[int, int]] = {}
        self._array_slots: dict[int, int] | None = None
        self._array_states: dict[int, State] | None = None   # array id -> its state as dependencies see it
        self._incoming: dict[int, int] = {}              # uid -> jobs of arrays being recorded (accept_array)
        # last_policy_seconds: gathering the queue plus the policy itself, without starting anything
        self.stats: dict[str, float] = {"passes": 0, "last_pass_seconds": 0.0, "last_policy_seconds": 0.0}
        self.expected: dict[int, float] = {}           # the last pass's plan: job id -> expected start (backfill)
        self.expiry = Expiry(cfg, clock, recorder, log, soon, self.jobs, self._kept_back, self._untrack)

    # --- the door --------------------------------------------------------------------------------------

    def apply(self, job: Job, change: Callable[..., Any], *args: Any, say: str | Callable[[Job], Line] | None = None,
              priority: int = 6, wake: bool = False, **fields: Any) -> bool:
        """Change `job` with `change(job, *args)` (a lifecycle function: it raises TransitionError for a
        move lifecycle.ALLOWED doesn't have), write its record, say `say` in the journal (a text with
        `priority` and `fields`, or a function of the changed job giving a Line), and wake the scheduler if
        `wake`: when the change frees GPUs or adds to the queue outside a pass. A start that failed is
        retried on the next tick instead, so a start that always fails can't spin the loop. Returns whether
        the record is on disk (if not, it is retried every tick). A job that reaches its final end with hooks
        (on_finish, notify, the config's) has them marked in its record, then started once it is written."""
        before = job.state
        change(job, *args)
        if job.state in FINAL and before not in FINAL and hooks.wanted(job, self.cfg.hook_on_finish):
            lifecycle.hooks_due(job)
        self._track(job)
        saved = self.recorder.save(job)
        if say is not None:
            line = say(job) if callable(say) else Line(say, priority, fields)
            self.log(line.text, line.priority, job=job, **line.fields)
        if wake:
            self.wake()
        if job.hooks and before not in FINAL:
            self._contained(self.startstop.start_hooks, job)
        return saved

    def _track(self, job: Job) -> None:
        """The in-memory side of every change: the table, the live set, the per-user counts, the listing."""
        self.jobs[job.id] = job
        self.listing.invalidate(job.id)
        self._requests.pop(job.id, None)
        self.shares.track(job)
        if job.state == State.SUCCEEDED and job.spec and job.started is not None and job.ended is not None:
            self._runs.setdefault((job.uid, job.spec.name), deque(maxlen=inputs.ESTIMATE_RUNS)).append(
                job.ended - job.started)
        if job.spec is not None and job.state != State.REJECTED:
            key = (job.uid, job.spec.name)
            if self._latest.get(key, 0) < job.id:
                self._latest[key] = job.id
            if job.array_id:                             # an array's name (without [i]) names the whole array
                key = (job.uid, sweep.base_name(job.spec.name, job.array_index))
                if self._latest.get(key, 0) < job.array_id:
                    self._latest[key] = job.array_id
        if job.state in FINAL:
            self.live.pop(job.id, None)
        else:
            self.live[job.id] = job
        if job.state in ACTIVE:
            self._active.add(job.id)
        else:
            self._active.discard(job.id)
        if job.after:
            self._index_dependencies(job, job.state == State.QUEUED and not job.deps_met)
        if job.state in FINAL:
            self.startstop.unit_waits.pop(job.id, None)
            for waiting in self._waiting_on(job):
                self._verdicts.pop(waiting, None)       # looked at again at the next pass
        due = timers.next_due(job)
        if due is None:
            self._timers.pop(job.id, None)
        else:
            self._timers[job.id] = due
        if job.array_id:
            self._arrays.setdefault(job.array_id, {})[job.array_index] = job.id
        for by_uid, state in ((self._queued_by_uid, State.QUEUED), (self._rejected_by_uid, State.REJECTED)):
            ids = by_uid.setdefault(job.uid, set())
            if job.state == state:
                ids.add(job.id)
            else:
                ids.discard(job.id)

    def _index_dependencies(self, job: Job, pending: bool) -> None:
        for _kind, dep, _label in job.after:
            if not dep:
                continue
            if pending:
                self._dependents.setdefault(dep, set()).add(job.id)
            elif (waiting := self._dependents.get(dep)) is not None:
                waiting.discard(job.id)
                if not waiting:
                    del self._dependents[dep]
        if not pending:
            self._verdicts.pop(job.id, None)

    def _waiting_on(self, job: Job) -> set[int]:
        """The queued jobs whose dependencies' verdict `job`'s end can change: those that depend on it and, for
        an array's job, those that depend on the whole array (its id)."""
        waiting = set(self._dependents.get(job.id, ()))
        if job.array_id and job.array_id != job.id:
            waiting |= self._dependents.get(job.array_id, set())
        return waiting

    def _untrack(self, job_id: int) -> None:
        job = self.jobs.pop(job_id, None)
        for waiting in self._dependents.get(job_id, ()):
            self._verdicts.pop(waiting, None)
        if job is not None and job.after:
            self._index_dependencies(job, False)
        self.live.pop(job_id, None)
        self._active.discard(job_id)
        self.listing.invalidate(job_id, job.array_id if job is not None else 0)
        self._requests.pop(job_id, None)
        self.shares.forget(job_id)
        self._timers.pop(job_id, None)
        self.recorder.forget(job_id)
        if job is not None:
            self._queued_by_uid.get(job.uid, set()).discard(job_id)
            self._rejected_by_uid.get(job.uid, set()).discard(job_id)
            if job.array_id and (elements := self._arrays.get(job.array_id)) is not None:
                elements.pop(job.array_index, None)
                if not elements:
                    del self._arrays[job.array_id]

    # --- new jobs --------------------------------------------------------------------------------------

    def accept(self, job_id: int, spec: JobSpec, user: str, uid: int, gid: int, source: str, *,
               data: bytes = b"", key: tuple[int, str, int] | None = None,
               settle: Callable[[], Any] | None = None) -> Job:
        """Record a new queued job: its job file (`data`, as taken) and its record, then `settle` (the
        intake moves the spool entry out), then the journal line, and wake the scheduler. `key` (uid, spool
        name, inode) lets its submitter look the id up. Raises OSError when the state directory can't take
        it: then nothing of it is kept."""
        job = self._new(job_id, spec, user, uid, gid, source, self.clock.time(), self._resolve(spec, uid))
        self._admit(job, data, key, settle)
        gpus = f"{spec.gpus} GPU(s)" if spec.gpus else "no GPU"
        self.log(f"accepted job {job_id} {spec.name!r} from {user}: {gpus}, priority {spec.priority}",
                 job=job, GPUSCHED_EVENT="accept")
        self.wake()
        return job

    def accept_array(self, job_ids: Sequence[int], spec: JobSpec, user: str, uid: int, gid: int, source: str, *,
                     data: bytes = b"", key: tuple[int, str, int] | None = None,
                     settle: Callable[[], Any] | None = None,
                     failed: Callable[[Exception], None] | None = None) -> list[Job]:
        """Record a [sweep] file's jobs, one per element (sweep.py), all or none: `job_ids` (one per element,
        the first is the array's id) are recorded with the job file written once (recorder.create_array), a
        few per main-loop turn (`soon`, ARRAY_STEP of each turn: 1,000 records take about 0.7 s here), then
        `settle`, then they join the table at once. If the records or settle fail, nothing of them is kept and
        `failed(error)` is called (the intake puts the entry back), or, without `failed`, the OSError is raised
        (with the engine's default `soon`, which runs everything at once: tests and the simulator). Returns
        the jobs, which are in the table once the last step ran. One journal line for the array."""
        array_id = job_ids[0]
        if len(job_ids) != sweep.size(spec.sweep):
            raise ValueError(f"{len(job_ids)} ids for an array of {sweep.size(spec.sweep)}")
        now = self.clock.time()
        after = self._resolve(spec, uid)
        jobs = [self._new(job_id, sweep.element(spec, index, array_id), user, uid, gid, source, now, after,
                          (array_id, index)) for index, job_id in enumerate(job_ids)]
        steps = self.recorder.create_array(jobs, data)
        self._incoming[uid] = self._incoming.get(uid, 0) + len(jobs)    # counted as queued meanwhile

        def done() -> None:
            self._incoming[uid] -= len(jobs)
            if not self._incoming[uid]:
                del self._incoming[uid]

        def step() -> bool:
            deadline = self.clock.monotonic() + ARRAY_STEP
            try:
                for _ in steps:
                    if self.clock.monotonic() > deadline:
                        return True                      # the rest on a later turn
                for job in jobs:
                    self._track(job)
                if key is not None:
                    self._remember(key, array_id)
                if settle:
                    settle()
            except Exception as e:  # noqa: BLE001 - nothing of the array may stay behind, whatever failed
                for job in jobs:
                    self._untrack(job.id)
                self.recorder.discard(job_ids)
                if key is not None:
                    self.submissions.pop(key, None)
                done()
                if not isinstance(e, OSError):
                    self.log(f"internal error while recording array {array_id}: {traceback.format_exc()}", 3,
                             multiline=True)
                if failed is None:
                    raise
                failed(e)
                return False
            done()
            gpus = f"{spec.gpus} GPU(s)" if spec.gpus else "no GPU"
            throttle = f", at most {spec.max_parallel} at once" if spec.max_parallel else ""
            self.log(f"accepted array {array_id} {spec.name!r} from {user}: {len(jobs)} jobs "
                     f"{spec.name}[0-{len(jobs) - 1}] (ids {', '.join(map(str, job_ids[:3]))}"
                     f"{', ...' if len(job_ids) > 3 else ''}), {gpus} each{throttle}, priority {spec.priority}",
                     job=jobs[0], GPUSCHED_EVENT="accept", GPUSCHED_ARRAY_ID=array_id)
            self.wake()
            return False

        self.soon(step)
        return jobs

    def _new(self, job_id: int, spec: JobSpec, user: str, uid: int, gid: int, source: str, now: float,
             after: tuple[dependencies.Dep, ...], array: tuple[int, int] = (0, 0)) -> Job:
        """A new queued job's record, not yet recorded: its class, its dependencies as resolved, its place in an
        array (array id, index), and on hold when its file says so."""
        job = lifecycle.accepted(job_id, spec, user, uid, gid, source, now)
        job.array_id, job.array_index = array
        job.job_class = inputs.job_class(job, self.classes, self.cfg.default_class)   # "" without classes
        job.after = after
        if spec.hold:
            job.held, job.reason = user, f"held by {user} (hold = true in the job file)"
        return job

    def dependencies_of(self, spec: JobSpec, uid: int) -> tuple[dependencies.Dep, ...]:
        """What a new file of `uid` would depend on, resolved now (submit --dry-run)."""
        return self._resolve(spec, uid)

    def _resolve(self, spec: JobSpec, uid: int) -> tuple[dependencies.Dep, ...]:
        """A new file's dependencies among its owner's jobs (root's: anyone's), resolved once (dependencies.py)."""
        return dependencies.resolve(spec, uid, job=self.jobs.get, anyone=uid == 0,
                                    latest=lambda u, name: self._latest.get((u, name)))

    def _remember(self, key: tuple[int, str, int], job_id: int) -> None:
        """Lookup's answer for a spool entry (uid, name, inode): its job's id (an array's: the array's)."""
        self.submissions[key] = job_id
        while len(self.submissions) > MAX_SUBMISSIONS:
            self.submissions.popitem(last=False)

    def array(self, job: Job) -> list[Job] | None:
        """The elements of the array whose id is job's (job is its first element), in index order; None when
        job is not an array's first element (it is then a job alone, or one element)."""
        if not job.array_id or job.array_id != job.id:
            return None
        elements = self._arrays.get(job.id, {})
        return [self.jobs[elements[i]] for i in sorted(elements)]

    def element(self, array_id: int, index: int) -> Job:
        """Element `index` of array `array_id` (`gpuschedctl cancel 12[3]`)."""
        job_id = self._arrays.get(array_id, {}).get(index)
        if job_id is None:
            if array_id in self._arrays:
                raise NoSuchJob(f"array {array_id} has no element {index}")
            raise NoSuchJob(f"no array {array_id}")
        return self.jobs[job_id]

    def discard_array(self, array_id: int) -> int:
        """An array whose intake didn't finish (its first element has no record: the daemon died meanwhile):
        the elements recorded are removed, so that the entry, taken again, makes the whole array once."""
        ids = [i for i in self._arrays.get(array_id, {}).values() if i != array_id]
        self.recorder.discard(ids)
        for job_id in ids:
            self._untrack(job_id)
        if ids:
            self.log(f"removed {len(ids)} job(s) of array {array_id}, whose intake the daemon did not finish; "
                     f"its file is taken again", 4)
        return len(ids)

    def reject(self, job_id: int, owner: str, uid: int, source: str, problem: str, *,
               key: tuple[int, str, int] | None = None, settle: Callable[[], Any] | None = None,
               say: Callable[[str], None] | None = None) -> Job:
        """Record a rejected entry, saying why (through `say` instead of the job's own journal line when
        given: the intake's rate limit); `settle` keeps the entry (it returns where). Raises OSError as
        accept does."""
        job = lifecycle.rejected(job_id, owner, uid, source, problem, self.clock.time())
        kept = self._admit(job, None, key, settle)
        text = f"rejected job {job_id} from {owner}: {problem} (kept as {kept})"
        if say is None:
            self.log(text, 4, job=job, GPUSCHED_EVENT="reject")
        else:
            say(text)
        return job

    def evict_rejected(self, uid: int, n: int) -> bool:
        """Remove the user's n oldest rejection records (a rejected entry has no log and no result; its kept
        copy in the spool's .rejected/ stays until keep_rejected). False if they can't be removed now."""
        oldest = heapq.nsmallest(n, self._rejected_by_uid.get(uid, ()))
        try:
            self.recorder.remove_rejected(oldest)
        except (OSError, ValueError) as e:
            self.log(f"can't remove old rejection records of uid {uid}: {e}", 3)
            return False
        for job_id in oldest:
            self._untrack(job_id)
        return True

    def _admit(self, job: Job, data: bytes | None, key: tuple[int, str, int] | None,
               settle: Callable[[], Any] | None) -> Any:
        if key is not None:
            self._remember(key, job.id)
        try:
            self.recorder.create(job, data)             # raises when the disk is full: nothing accepted yet
            self._track(job)
            return settle() if settle else None
        except OSError:
            self._untrack(job.id)
            if key is not None:
                self.submissions.pop(key, None)         # Lookup must not name it
            raise

    def queued_of(self, uid: int) -> int:
        return len(self._queued_by_uid.get(uid, ())) + self._incoming.get(uid, 0)

    def queued_ids(self, uid: int | None = None) -> Iterable[int]:
        """The ids of the queued jobs of `uid` (None: everyone's), in no order: from the per-user index, not a
        scan of the jobs."""
        if uid is None:
            return itertools.chain.from_iterable(self._queued_by_uid.values())
        return self._queued_by_uid.get(uid, ())

    def queued_count(self) -> int:
        return sum(len(ids) for ids in self._queued_by_uid.values())

    def active_ids(self) -> set[int]:
        return self._active

    def rejected_of(self, uid: int) -> int:
        return len(self._rejected_by_uid.get(uid, ()))

    # --- recovery --------------------------------------------------------------------------------------

    def load(self) -> None:
        """Every recorded job into the table, as it was written."""
        for job in self.recorder.load(lambda name, e: self.log(f"status file {name} unreadable: {e}", 3)):
            self._track(job)

    def recover(self) -> None:
        """After load (and the intake's unfinished entries): stale people's copies rewritten (after READY=1,
        in batches), the GPUs probed, every active job reconciled with its scope and result."""
        self.recorder.refresh_stale(self.jobs)          # copies a crash left older than their record: soon
        now = self.clock.time()
        self.shares.rebuild(self.jobs.values(), self.live.values(), now)
        self.probe_gpus()
        for job in [j for j in self.live.values() if j.state in ACTIVE]:
            try:
                self._reconcile_contained(job, recovering=True)
            except SystemdUnavailable:
                pass                                     # the tick reconciles it once the bus is back
        n_active = sum(1 for j in self.live.values() if j.state in ACTIVE)
        for job in [j for j in self.jobs.values() if j.hooks and j.state in FINAL]:
            self._contained(self.startstop.start_hooks, job)   # the daemon stopped between a job's end and its hooks
        self.log(f"recovered {len(self.jobs)} job(s): {n_active} active, {len(self.live) - n_active} queued")

    def reconcile(self, job: Job, recovering: bool = False) -> None:
        """Bring an active job's record in line with reality: its scope and its monitor's result."""
        seen = self.runner.observe(job)
        if isinstance(seen, Ended):
            self.finish(job, seen.result)
        elif isinstance(seen, Running):
            if job.state == State.STARTING:
                self.apply(job, lifecycle.running, say=f"job {job.id} re-adopted: running in {job.unit}")
            elif job.state == State.STOPPING and recovering and job.stop_due is None:
                self.runner.stop(job.unit)                   # in case the daemon died before asking
            # a stop held back for a warning (stop_due) is sent by the tick when due, restart or not
            elif recovering:
                self.log(f"job {job.id} re-adopted: running in {job.unit}", job=job)
        elif isinstance(seen, Gone):
            if job.state == State.STARTING:
                self.apply(job, lifecycle.never_started, "requeued: the daemon stopped before the job began",
                           say=f"job {job.id} never started; requeued")
            else:
                self.finish(job, None)
        # Leftovers: processes remain in the scope; the runner kills them, the job keeps its GPUs meanwhile

    def _reconcile_contained(self, job: Job, recovering: bool = False) -> None:
        """reconcile, with a bug or an odd record of one job contained (said once per job): it must not stop
        the tick (every other job's reconciliation, retries, expiry) nor a restart. The bus being away is
        not contained: the caller stops and tries again."""
        try:
            self.reconcile(job, recovering)
        except SystemdUnavailable:
            raise
        except Exception:  # noqa: BLE001
            if job.id not in self._input_errors:
                self._input_errors.add(job.id)
                self.log(f"internal error reconciling job {job.id} (tried again every tick): "
                         f"{traceback.format_exc()}", 3, job=job, multiline=True)

    def monitor_exited(self, job_id: int) -> None:
        job = self.live.get(job_id)
        if job is None or job.state not in ACTIVE:
            return
        try:
            self._reconcile_contained(job)
        except SystemdUnavailable:
            pass                                         # not watched any more: the tick reconciles it

    def finish(self, job: Job, result: dict[str, Any] | None) -> None:
        """The attempt is over: `result` is what its monitor recorded, None if it recorded nothing."""
        tally = self.accounting.ended(job)
        if result is not None and result.get("not_started"):
            if job.state in (State.STARTING, State.RUNNING):
                self.apply(job, lifecycle.never_started, "requeued: the daemon stopped before the job began",
                           say=f"job {job.id} never started; requeued", GPUSCHED_EVENT="requeue", wake=True)
            else:                                        # stopped (cancel, preemption, requeue) before it began
                self.apply(job, lifecycle.stopped_before_start, self.clock.time(), say=_ended_line, wake=True)
            return
        now = self.clock.time()
        if job.state == State.STOPPING:
            delay = dependencies.requeue_delay(job, self.cfg.retry_backoff, self.cfg.retry_backoff_max) \
                if job.stop_intent == "requeue" else None
        else:
            delay = dependencies.retry_delay(job, result, self.cfg.retry_backoff, self.cfg.retry_backoff_max)
        # a retried GPU out-of-memory asks for a GPU of its own or more memory (on_gpu_oom), recorded with the job
        oom = {} if delay is None or job.state == State.STOPPING else \
            dependencies.gpu_oom_retry(job, result, self.inventory.gpus)
        retry_at = None if delay is None else now + delay
        if job.gpus:                                     # it held GPUs: its accounting, up to its end
            end = float(result.get("ended", now)) if result else now
            self.apply(job, lifecycle.ended_accounted, self.accounting.folded(job, tally, end), result, now, retry_at, oom,
                       say=_ended_line, wake=True)
        else:
            self.apply(job, lifecycle.ended, result, now, retry_at, oom, say=_ended_line, wake=True)
        if delay is not None:
            self._due_at(now + delay)

    # --- what people ask for: changes through the door (what they ask to know: answers.py) --------------

    def get(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NoSuchJob(f"no job {job_id}")
        return job

    def cancel(self, job: Job, by: Who, now: bool = False) -> str:
        """Cancel a job (the caller's right to is checked by the API, access.py): a queued one at once; an
        active one with its stop signal and grace, or (now) with SIGKILL to every process of its scope,
        whatever its grace."""
        who = by.name
        if job.state == State.QUEUED:
            self.apply(job, lifecycle.cancel_queued, f"cancelled by {who}", self.clock.time(),
                       say=f"job {job.id} cancelled by {who} while queued", GPUSCHED_EVENT="cancel", wake=True)
            return "cancelled"
        if job.state not in ACTIVE:
            raise Invalid(f"job {job.id} has already ended ({job.state})")
        how = "at once (SIGKILL)" if now else ""
        if job.state == State.STOPPING:
            held_back = job.stop_due is not None          # a preemption waiting for its warning: stop now
            if job.stop_intent != "cancel" or now:
                self.apply(job, lifecycle.cancel_stopping, f"cancelled by {who} {how}".rstrip(),
                           say=f"job {job.id} cancelled by {who} while stopping {how}".rstrip(),
                           GPUSCHED_EVENT="cancel")
            if held_back and not now:
                self.startstop.send_stop(job)
        else:
            self.startstop.stop(job, "cancel", f"cancelled by {who} {how}".rstrip())
        if now and job.state in ACTIVE:
            self.runner.kill(job)
            return "killed"
        return "stopping"

    def hold(self, job: Job, by: Who, admin: bool = False) -> str:
        """Hold a queued job (the caller's right to act on it is the API's check). An admin's hold replaces
        its owner's (so that only an admin can release it); any other hold stays as it is."""
        if job.state != State.QUEUED:
            raise Invalid(f"job {job.id} is {job.state}: only a queued job can be held"
                          + (f" (`gpuschedctl requeue {job.id}` puts a running one back)" if job.state in ACTIVE
                             else ""))
        if job.held and not (admin and job.held == job.user and by.name != job.user):
            return "held" if job.held == by.name else f"held already (by {job.held})"
        self.apply(job, lifecycle.hold, by.name, say=f"job {job.id} held by {by.name}", GPUSCHED_EVENT="hold")
        return "held"

    def release(self, job: Job, by: Who, admin: bool) -> str:
        """Release a held job. A hold an admin put on someone else's job only an admin releases."""
        if job.state != State.QUEUED or not job.held:
            raise Invalid(f"job {job.id} is not held")
        if not admin and job.held != job.user:
            raise NotAllowed(f"job {job.id} was held by {job.held}; only an admin can release it")
        self.apply(job, lifecycle.release, say=f"job {job.id} released by {by.name}", GPUSCHED_EVENT="release",
                   wake=True)
        return "released"

    def requeue(self, job: Job, by: Who, hold: bool = False) -> str:
        """Stop a running job with its stop signal and grace and put it back in the queue (same id); `hold`:
        held there (by the caller) until released."""
        if job.state not in (State.STARTING, State.RUNNING):
            raise Invalid(f"job {job.id} is {job.state}: only a running job can be requeued")
        how = "requeued and held" if hold else "requeued"
        self.startstop.stop(job, "requeue", f"{how} by {by.name}", held=by.name if hold else "")
        return f"stopping; {how} when it has stopped"

    def drain(self, by: Who, on: bool) -> str:
        """Drain (no job starts; running ones finish) or resume, for the whole server. Kept across restarts."""
        self.draining = by.name if on else ""
        self._save_control()
        self.log(f"draining, by {by.name}: no new job starts" if on else f"resumed by {by.name}",
                 GPUSCHED_EVENT="drain" if on else "resume")
        self.wake()
        return "draining" if on else "resumed"

    def pause(self, user: str, by: Who, on: bool) -> str:
        """Pause (their queued jobs don't start) or unpause one user's jobs. Kept across restarts."""
        if on:
            self.paused[user] = by.name
        elif self.paused.pop(user, None) is None:
            raise Invalid(f"{user} is not paused")
        self._save_control()
        self.log(f"{user}'s jobs {'paused' if on else 'unpaused'} by {by.name}", GPUSCHED_EVENT="pause")
        self.wake()
        return "paused" if on else "unpaused"

    def _save_control(self) -> None:
        self.recorder.save_control({"draining": self.draining, "paused": self.paused})

    def job(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def lookup(self, caller: int, name: str, ino: int) -> int:
        return self.submissions.get((caller, name, ino), 0)

    def array_members(self, array_id: int) -> dict[int, int]:
        """An array's jobs still in the table: index -> job id (empty for no such array)."""
        return self._arrays.get(array_id, {})

    # the read-only answers (answers.py): the engine's verbs, as api.py and the web calls ask them

    def page(self, all: bool, after: int, viewer: Viewer, table: bool, max_bytes: int,
             max_count: int, fold: bool = False, submitted: list[int] | None = None) -> tuple[str, int | None]:
        return answers.page(self, all, after, viewer, table, max_bytes, max_count, fold, submitted)

    def array_row(self, array_id: int) -> str:
        return answers.array_row(self, array_id)

    def gpu_table(self) -> list[dict[str, Any]]:
        return answers.gpu_table(self)

    def status_line(self) -> str:
        return answers.status_line(self)

    def explain(self, job: Job) -> dict[str, Any]:
        return answers.explain(self, job)

    def outlook(self, job: Job) -> dict[str, Any]:
        return answers.outlook(self, job)

    def usage_report(self, users: set[str] | None, since: float) -> list[dict[str, Any]]:
        return answers.usage_report(self, users, since)

    def finished(self, users: set[str] | None, name: str, state: str, since: float, limit: int,
                 tag: str = "") -> tuple[list[Job], int]:
        return answers.finished(self, users, name, state, since, limit, tag)

    # --- scheduling ------------------------------------------------------------------------------------

    def probe_gpus(self) -> None:
        if self.inventory.refresh(j.unit for j in self.live.values() if j.state in ACTIVE and j.unit):
            self.wake()                                  # only what can change a decision wakes the policy
        self._foreign()

    def _foreign(self) -> None:
        """After each probe: the active jobs on GPUs that processes gpusched did not start use too. With
        foreign = "preempt", a preemptible running job on such a GPU is stopped through the door (intent
        "preempt": requeued, as a policy preemption is) once the GPU has been busy for foreign_grace on every
        probe since; any other is said once in the journal and shown contested (`gpus`, `show`)."""
        gpus = self.inventory.gpus
        if gpus is None:
            return                                       # the probe failed: nothing is known, nothing changes
        now = self.clock.monotonic()
        busy = {g.index: g for g in gpus if g.foreign_pids}
        self._foreign_since = {i: self._foreign_since.get(i, now) for i in busy}
        if not busy and not self._contested:
            return
        contested: set[int] = set()
        stops: list[tuple[Job, str]] = []
        preempt = self.cfg.foreign == "preempt"
        for job in self.live.values():
            hit = [g.index for g in job.gpus if g.index in busy] if job.state in ACTIVE else []
            if not hit:
                continue
            contested.add(job.id)
            first = hit[0]
            text = answers.foreign_text(busy[first])
            preemptible = job.spec is None or job.spec.preemptible
            if preempt and preemptible and job.state == State.RUNNING:
                if now - self._foreign_since[first] >= self.cfg.foreign_grace:
                    stops.append((job, text))
                elif job.id not in self._contested:
                    self.log(f"job {job.id}: {text}; it is stopped and requeued if that stays "
                             f"{_seconds(self.cfg.foreign_grace)} (foreign_grace)", 4, job=job,
                             GPUSCHED_EVENT="foreign")
            elif job.id not in self._contested:
                why = ('foreign = "wait"' if not preempt else
                       "it is not preemptible" if not preemptible else f"it is {job.state}")
                self.log(f"job {job.id}: {text}; {why}: it keeps running on a contested GPU", 4, job=job,
                         GPUSCHED_EVENT="foreign")
        self._contested = contested
        for job, text in stops:
            self._contained(self.startstop.stop, job, "preempt", text)

    def schedule(self) -> None:
        """One scheduling pass: the policy decides; preemptions are sent, starts made, waiting reasons noted.
        Errors are contained per job (one job whose start fails, every pass perhaps, never blocks the
        others) and per pass (a bug is logged; the next pass runs as usual)."""
        t0 = self.clock.monotonic()
        try:
            self._schedule()
        except Exception:  # noqa: BLE001
            self.log(f"internal error in scheduling pass: {traceback.format_exc()}", 3, multiline=True)
        self.stats["last_pass_seconds"] = self.clock.monotonic() - t0
        self.stats["passes"] += 1

    def _schedule(self) -> None:
        t0 = self._last_pass = self.clock.monotonic()
        now = self.clock.time()
        self.shares.charge(self.jobs, now)
        queued, holders = [], []
        users: dict[str, int] = {}
        doomed: list[tuple[Job, str]] = []
        self._singles = None                             # built by _gate for the first singleton job seen
        self._window_waits = {}
        self._array_slots = None                         # and for the first throttled array's job
        self._array_states = None                        # and for the first dependency on an array
        for job in self.live.values():
            # contained per job: one job whose inputs can't be built (a bug) must not stop everyone's pass
            if job.state == State.QUEUED:
                gate = self._gate(job, now)
                if gate is not None:
                    if gate[0] == "never":
                        doomed.append((job, gate[1]))
                    else:
                        self._wait(job, gate[1])
                    continue
                try:
                    queued.append(self.request(job))
                except Exception:  # noqa: BLE001
                    self._input_error(job)
                    continue
                users[job.user] = job.uid
            elif job.state in ACTIVE:
                holders.append(self.holder(job))
                users[job.user] = job.uid
        for job, why in doomed:
            self._contained(self._dependency_failed, job, why)
        if not queued:
            return
        gpus = self.inventory.gpus
        d = policy.schedule(queued, holders, gpus, now=now, standing=self.shares.standing(users, now),
                            **self.policy_settings(now))
        self.stats["last_policy_seconds"] = self.clock.monotonic() - t0
        self.stats["last_pass_queued"] = len(queued)
        self.expected = d.expected_start                 # the policy's own plan, for `gpuschedctl why`
        for victim, for_job in d.preempts:
            self._contained(self.startstop.stop, self.jobs[victim], "preempt", self._preempted_by(self.jobs[for_job]))
        by_index = {g.index: g for g in gpus or ()}
        for job_id, indices in d.starts:
            self._contained(self.startstop.start, self.jobs[job_id], [by_index[i] for i in indices])
        for job_id, reason in d.waiting.items():
            if job_id in d.expected_start:
                when = f"expected to start by {_when(d.expected_start[job_id])} (backfill plan)"
                vague = "expected to start by the running jobs' time limits"
                reason = reason.replace(vague, when) if vague in reason else f"{reason}; {when}"
            self._wait(self.jobs[job_id], reason)

    def holder(self, job: Job) -> policy.Holder:
        """An active job as the policy sees it (a job whose inputs fail still holds its GPUs, and is never a
        victim)."""
        try:
            return inputs.holder(job, classes=self.classes, default_class=self.cfg.default_class,
                                 history_estimate=self.estimate(job))
        except Exception:  # noqa: BLE001
            self._input_error(job)
            return policy.Holder(job.id, 0, tuple(g.index for g in job.gpus), preemptible=False,
                                 stopping=job.state == State.STOPPING, uid=job.uid)

    def _gate(self, job: Job, now: float) -> tuple[str, str] | None:
        """Why a queued job is not offered to the policy this pass, or None: ("never", why) when a dependency
        can't be met any more (it then ends); ("wait", why) for the rest, in this order: dependencies, hold,
        a paused user, drain, a retry's backoff, a time window, singleton. Cheap for a job with none of them."""
        if job.after and not job.deps_met:
            verdict = self._dependency_verdict(job)
            if verdict[0] != "ready":
                return verdict
        if job.held:
            return "wait", f"held by {job.held}; `gpuschedctl release {job.id}` lets it start"
        if job.id in self.startstop.unit_waits and now < self.startstop.unit_waits[job.id][0]:
            return "wait", job.reason                    # "waiting for the previous ... to go away"
        if job.user in self.paused:
            return "wait", f"{job.user}'s jobs are paused by {self.paused[job.user]} (`gpuschedctl unpause`)"
        if self.draining:
            return "wait", f"the server is draining (by {self.draining}): no job starts until `gpuschedctl resume`"
        if job.not_before is not None and job.not_before > now:
            self._due_at(job.not_before)
            if "retry" in job.reason:
                return "wait", job.reason
            return "wait", (f"waiting until {time.strftime('%H:%M:%S', time.localtime(job.not_before))}: a backoff "
                            f"after being requeued {sum(1 for h in job.history if h.get('requeued'))} times")
        spec = job.spec
        if spec is not None and spec.window and (why := self._window_wait(spec.window, now)):
            return "wait", why
        if spec is not None and spec.singleton:
            if self._singles is None:                    # (owner, name) -> the job that holds it this pass
                self._singles = {(j.uid, j.spec.name): j.id for j in self.live.values() if j.state in ACTIVE and j.spec}
            other = self._singles.setdefault((job.uid, spec.name), job.id)
            if other != job.id:
                return "wait", f"singleton: job {other} of the same name goes first"
        if spec is not None and spec.max_parallel and job.array_id:
            if self._array_slots is None:                # array id -> elements active or offered this pass
                self._array_slots = {}
                for j in self.live.values():
                    if j.array_id and j.state in ACTIVE:
                        self._array_slots[j.array_id] = self._array_slots.get(j.array_id, 0) + 1
            n = self._array_slots.get(job.array_id, 0)
            if n >= spec.max_parallel:
                return "wait", (f"max_parallel: array {job.array_id} may have {spec.max_parallel} job(s) running "
                                f"at once, and that many are running or about to start")
            self._array_slots[job.array_id] = n + 1
        return None

    def policy_settings(self, now: float) -> dict[str, Any]:
        """schedule()'s keywords at `now`: the config's, with each class's boost applied while its window is
        open (docs/config.md)."""
        settings = inputs.settings(self.cfg, configmod.cpu_job_cap(self.cfg))
        settings["classes"] = windows.effective_classes(settings["classes"], self.window_map, now, self.tz)
        return settings

    def _window_wait(self, name: str, now: float) -> str:
        """Why a job that names window `name` waits now ("" when it is open); the opening becomes a due time,
        so the pass that starts it runs when the window opens, not up to TIME_PASS later."""
        if name not in self._window_waits:
            self._window_waits[name] = windows.waiting_reason(name, self.window_map.get(name), now, self.tz)
        reason, at = self._window_waits[name]
        if at is not None:
            self._due_at(at)
        return reason

    def dependency_state(self, job_id: int) -> State | None:
        """What a dependency on job_id sees: the job's state, or for an array's id the whole array's
        (dependencies.array_state), worked out once per pass."""
        job = self.jobs.get(job_id)
        if job is None or job.array_id != job.id or len(elements := self._arrays.get(job_id, {})) < 2:
            return job.state if job is not None else None
        if self._array_states is None:
            self._array_states = {}
        if job_id not in self._array_states:
            self._array_states[job_id] = dependencies.array_state(self.jobs[i].state for i in elements.values())
        return self._array_states[job_id]

    def _dependency_verdict(self, job: Job) -> tuple[str, str]:
        """("ready" | "wait" | "never", why) for a queued job's dependencies, kept until one of them ends."""
        verdict = self._verdicts.get(job.id)
        if verdict is None:
            verdict = self._verdicts[job.id] = dependencies.check(job.after, self.dependency_state)
        return verdict

    def dependency_wait(self, job: Job) -> tuple[str, str]:
        """A queued job's dependencies' verdict without keeping it (`why` asks it of every job ahead): the pass's
        where it has one (kept until a dependency ends), else checked afresh, which costs up to 192 look-ups."""
        return self._verdicts.get(job.id) or dependencies.check(job.after, self.dependency_state)

    def _dependency_failed(self, job: Job, why: str) -> None:
        """End a job whose dependency can't be met, and at once every job that waits on it for that reason,
        down the chain (not one link per pass: a chain of 10,000 would take 10,000 passes)."""
        work = [(job, why)]
        while work:
            job, why = work.pop()
            if job.state != State.QUEUED:
                continue
            self.apply(job, lifecycle.dependency_failed, why, self.clock.time(), wake=True,
                       say=f"job {job.id} can never start: {why}", priority=4, GPUSCHED_EVENT="end")
            self._array_states = None                   # the array's state as dependencies see it has changed
            for other in sorted(self._waiting_on(job), reverse=True):
                dep = self.jobs.get(other)
                if dep is not None and dep.state == State.QUEUED and not dep.deps_met:
                    verdict, reason = self._dependency_verdict(dep)
                    if verdict == "never":
                        work.append((dep, reason))

    def _input_error(self, job: Job) -> None:
        """A job the policy can't be told about: said once per job (every pass would repeat it)."""
        if job.id not in self._input_errors:
            self._input_errors.add(job.id)
            self.log(f"internal error building the policy's view of job {job.id} (it waits meanwhile): "
                     f"{traceback.format_exc()}", 3, job=job, multiline=True)

    def request(self, job: Job) -> policy.Request:
        """A queued job's Request, built once while the job doesn't change (100,000 queued jobs are not
        rebuilt every pass). A job that relies on an estimate is rebuilt when its user's history moves it."""
        est = self.estimate(job)
        cached = self._requests.get(job.id)
        if cached is not None and cached[1] == est:
            return cached[0]
        req = inputs.request(job, classes=self.classes, default_class=self.cfg.default_class, history_estimate=est)
        self._requests[job.id] = (req, est)
        return req

    def estimate(self, job: Job) -> float | None:
        """The limit estimate from the user's latest successful runs of the same job name (None when the job
        has a limit of its own: it would not be read)."""
        spec = job.spec
        if spec is None or spec.time_limit:
            return None
        runs = self._runs.get((job.uid, spec.name))
        return inputs.estimate(runs) if runs else None

    def _preempted_by(self, job: Job) -> str:
        if self.classes:
            return f"preempted by job {job.id} (class {inputs.job_class(job, self.classes, self.cfg.default_class)!r})"
        return f"preempted by job {job.id} (priority {job.spec.priority if job.spec else '?'})"

    def may_reprioritize(self, job: Job, priority: int, admin: bool) -> None:
        """Raises the refusal, if reprioritize would refuse (so an array is checked whole before any change)."""
        if job.state != State.QUEUED or job.spec is None:
            raise Invalid(f"job {job.id} is {job.state}: only a queued job's priority can be changed")
        old = job.spec.priority
        if not admin:
            floor = self.cfg.job_limits().min_priority
            if priority < old:
                raise NotAllowed(f"job {job.id} has priority {old}: you may only make it less urgent (a number of "
                                 f"{old} or more; lower is more urgent); an admin can make it more urgent")
            if priority < floor:
                raise NotAllowed(f"priority {priority} is more urgent than this server lets users ask for (at "
                                 f"most {floor}: min_user_priority); ask an admin")

    def reprioritize(self, job: Job, by: Who, priority: int, admin: bool) -> str:
        """Change a queued job's priority (the job file's `priority`: lower is more urgent, among its owner's own
        jobs). Its owner may only make it less urgent, and never more urgent than min_user_priority; an admin
        may set any. Recorded (its record keeps it across restarts) and said in the journal."""
        self.may_reprioritize(job, priority, admin)
        assert job.spec is not None
        old = job.spec.priority
        if priority == old:
            return f"priority {old} already"
        self.apply(job, lifecycle.reprioritize, priority, wake=True, GPUSCHED_EVENT="priority",
                   say=f"job {job.id}: priority {old} -> {priority} by {by.name}")
        return f"priority {old} -> {priority}"

    # --- fair share (shares.py) ----------------------------------------------------------------------

    @property
    def ledger(self) -> fairshare.Ledger:
        return self.shares.ledger

    # --- around starts and stops (startstop.py): waiting reasons, containment ----------------------------

    def _wait(self, job: Job, reason: str) -> None:
        """A queued job's waiting reason: the one change that is not the door's. It is informational and
        recomputed every pass, so it is not written durably: only the people's copy shows it, soon."""
        if lifecycle.waiting(job, reason):
            self.listing.invalidate(job.id)
            self.recorder.copy_soon(job)

    def _contained(self, action: Callable[..., None], job: Job, *args: Any) -> None:
        try:
            action(job, *args)
        except Exception:  # noqa: BLE001 - a bug or an odd failure with one job must not stop the pass
            self.log(f"internal error in {action.__name__} for job {job.id}: {traceback.format_exc()}", 3,
                     job=job, multiline=True)
            if job.state == State.STARTING:
                # nothing of it can be running yet (the monitor got no spec): back to the queue, retried later
                self.apply(job, lifecycle.never_started, "waiting: an internal error stopped its start; retrying")

    def _retry_soon(self) -> None:
        """A start must be tried again: a pass on the next tick (not at once, so a start that always fails
        can't spin the loop)."""
        self._retry = True

    def _due_at(self, at: float) -> None:
        """A pass is due at `at` (a backoff's end, a window's opening), if none is due sooner."""
        self._due = min(self._due or at, at)

    # --- periodic work ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Every second or so: the GPUs probed when due, stops the bus lost sent again, active jobs no
        monitor of ours reports on reconciled, failed writes retried, failed starts retried, expiry when due."""
        if self.inventory.due():
            self.probe_gpus()
        self.accounting.sample()
        self.shares.charge(self.jobs, self.clock.time())
        watched = self.runner.watched()
        try:
            for job_id in list(self.startstop.restop):
                job = self.live.get(job_id)
                if job is None or job.state != State.STOPPING:
                    self.startstop.restop.discard(job_id)
                else:
                    self.startstop.send_stop(job)
            for job in [j for j in self.live.values() if j.state in ACTIVE and j.id not in watched]:
                self._reconcile_contained(job)
        except SystemdUnavailable:
            pass                                        # bus.py is reconnecting; tried again next tick
        if self._timers:
            wall = self.clock.time()
            for job_id in [i for i, due in self._timers.items() if due <= wall]:
                if (job := self.live.get(job_id)) is not None:
                    self._contained(self.startstop.timer, job)
                else:
                    self._timers.pop(job_id, None)
        for job_id in list(self.startstop.hooks_retry):
            job = self.jobs.get(job_id)
            if job is None or not job.hooks:
                self.startstop.hooks_retry.discard(job_id)
            else:
                self._contained(self.startstop.start_hooks, job)
        if self.recorder.dirty:
            self.recorder.retry(self.jobs)
        now = self.clock.monotonic()
        if self._due is not None and self.clock.time() >= self._due:
            self._due = None                             # a retry's backoff is over
            self.wake()
        if self._retry:
            self._retry = False
            self.wake()
        elif now - self._last_pass >= TIME_PASS and any(self._queued_by_uid.values()):
            # decisions that change with time alone (a job becoming overdue, a resumable job becoming
            # preemptible, a reservation coming due) are taken within TIME_PASS even when no event comes
            self.wake()
        if self.expiry.due():
            self.expire()

    # --- issue 9: accounting and idle reservations (accounting.py) --------------------------------------

    @property
    def meter(self) -> usage.Meter:
        return self.accounting.meter

    @property
    def gpu_history(self) -> GpuHistory:
        return self.accounting.gpu_history

    def usage_now(self, job: Job) -> dict[str, Any]:
        """An active job's accounting up to now (accounting.py)."""
        return self.accounting.usage_now(job)

    # --- expiry ----------------------------------------------------------------------------------------

    def expire(self) -> None:
        """Start a sweep of finished jobs older than keep_finished / keep_rejected (expiry.py), in batches."""
        self.expiry.start(self.expire_rejected)

    def expire_batch(self) -> bool:
        """One batch of the sweep's removals. True while some are left."""
        return self.expiry.batch()

    def _kept_back(self, job: Job) -> bool:
        """A finished job expiry must keep for now: a queued job still depends on it, or it is an array's first
        element (its id names the array) while another element is not final."""
        if job.id in self._dependents:
            return True
        if job.array_id != job.id or not job.array_id:
            return False
        return any(i in self.live for i in self._arrays.get(job.id, {}).values())


def _seconds(t: float) -> str:
    return f"{t:g}s"


def _control(control: dict[str, Any], log: Log) -> tuple[str, dict[str, str]]:
    """The drain and pause switches from the recorder's control file; anything of the wrong shape is said and
    left out (the daemon must start whatever the file holds)."""
    draining, paused = control.get("draining", ""), control.get("paused", {})
    if not isinstance(draining, str):
        log(f"control file: 'draining' is not a user name ({type(draining).__name__}); not draining", 3)
        draining = ""
    if not isinstance(paused, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in paused.items()):
        log("control file: 'paused' is not a table of user names; no user is paused", 3)
        paused = {}
    return draining[:256], dict(paused)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(t))


def _ended_line(job: Job) -> Line:
    text = f"job {job.id} {job.state}" + (f": {job.reason}" if job.reason else "")
    return Line(text, 6 if job.state in (State.SUCCEEDED, State.QUEUED, State.CANCELLED) else 4,
                {"GPUSCHED_EVENT": "requeue" if job.state == State.QUEUED else "end",
                 "GPUSCHED_EXIT_CODE": job.exit_code, "GPUSCHED_SIGNAL": job.signal})
