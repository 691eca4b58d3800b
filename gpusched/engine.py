"""The engine: the job table and the one door every change of a job goes through.

`apply(job, change, ...)` is that door: `change` is a lifecycle function (lifecycle.py keeps the allowed
moves), then the record is written (recorder: a failed write is retried every tick), the journal gets its
line, and the scheduler is woken when the change can let a job start. New jobs come in through `accept` and
`reject`, which record them or raise (the spool entry then stays where it was). Everything else here is a
reason to call the door: a scheduling pass (policy.schedule decides), a job's end (its monitor's result), a
cancel, the reconciliation of active jobs with what the runner sees, the periodic `tick`, and expiry.

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

import dataclasses
import heapq
import os
import pwd
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from gpusched import dependencies, launch, lifecycle, listing, policy, sweep
from gpusched import config as configmod
from gpusched.access import group_names
from gpusched.clock import Clock
from gpusched.errors import Invalid, NoSuchJob, NotAllowed
from gpusched.gpus import Probe
from gpusched.inventory import Inventory
from gpusched.jobfile import JobSpec
from gpusched.listing import Listing, Viewer
from gpusched.log import Log
from gpusched.model import ACTIVE, FINAL, Gpu, Job, State
from gpusched.policy import fairshare, inputs, order
from gpusched.recorder import Recorder, Soon
from gpusched.runner import Ended, Gone, MonitorDied, Runner, Running
from gpusched.scopes import SystemdError, SystemdUnavailable, UnitExists

EXPIRE_EVERY = 3600.0      # seconds between sweeps of finished jobs older than keep_finished
EXPIRE_BATCH = 500         # finished jobs removed per main-loop turn
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
MAX_AHEAD = 20                     # job ids named in `show`'s list of what is ahead (the count is exact)

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
        self.submissions: OrderedDict[tuple[int, str, int], int] = OrderedDict()   # (uid, name, ino) -> id
        self._queued_by_uid: dict[int, set[int]] = {}  # for max_queued_per_user, kept by _track
        self._rejected_by_uid: dict[int, set[int]] = {}  # for max_rejected_per_user, kept by _track
        self._retry = False                            # a start must be tried again on the next tick
        self._restop: set[int] = set()                 # stops to send again (the bus was down)
        self._expiring: list[int] = []
        # the first sweep a minute after start (or sooner with a short keep_finished), then every interval
        self._last_expire = clock.monotonic() - self._expire_interval() + min(60.0, self._expire_interval())
        # the policy's inputs: a queued job's Request is built once and dropped by _track when the job changes;
        # the fair-share ledger is charged with the GPUs active jobs hold, up to _charged[job id] (wall time);
        # _runs: the run times of each (uid, job name)'s latest successful runs, for a limit estimate
        self._classes = cfg.class_map() or None
        self._requests: dict[int, tuple[policy.Request, float | None]] = {}
        self.ledger = fairshare.Ledger(cfg.fair_share_half_life, at=clock.time())
        self._charged: dict[int, tuple[float, int]] = {}   # active job id -> (charged up to, GPUs)
        self._runs: dict[tuple[int, str], deque[float]] = {}
        self._input_errors: set[int] = set()           # jobs whose policy inputs failed (said once each)
        self._last_pass = clock.monotonic()            # when the last pass began (TIME_PASS)
        self._share_group: dict[str, str | None] = {}
        # issue 9: each (uid, job name)'s latest job id (dependencies by name); the server-wide switches an
        # admin sets (drain, paused users), kept by the recorder across restarts; the next retry due
        self._latest: dict[tuple[int, str], int] = {}
        control = recorder.load_control()
        self.draining: str = str(control.get("draining", ""))         # who drained it; "" when not
        self.paused: dict[str, str] = dict(control.get("paused", {}))  # user -> who paused them
        self._due: float | None = None
        self._singles: dict[tuple[int, str], int] | None = None
        # job arrays: array id -> {element index: job id}; each array's active elements, counted per pass
        self._arrays: dict[int, dict[int, int]] = {}
        self._array_slots: dict[int, int] | None = None
        self._array_states: dict[int, State] | None = None   # array id -> its state as dependencies see it
        self._incoming: dict[int, int] = {}              # uid -> jobs of arrays being recorded (accept_array)
        # last_policy_seconds: gathering the queue plus the policy itself, without starting anything
        self.stats: dict[str, float] = {"passes": 0, "last_pass_seconds": 0.0, "last_policy_seconds": 0.0}

    # --- the door --------------------------------------------------------------------------------------

    def apply(self, job: Job, change: Callable[..., Any], *args: Any, say: str | Callable[[Job], Line] | None = None,
              priority: int = 6, wake: bool = False, **fields: Any) -> bool:
        """Change `job` with `change(job, *args)` (a lifecycle function: it raises TransitionError for a
        move lifecycle.ALLOWED doesn't have), write its record, say `say` in the journal (a text with
        `priority` and `fields`, or a function of the changed job giving a Line), and wake the scheduler if
        `wake`: when the change frees GPUs or adds to the queue outside a pass. A start that failed is
        retried on the next tick instead, so a start that always fails can't spin the loop. Returns whether
        the record is on disk (if not, it is retried every tick)."""
        change(job, *args)
        self._track(job)
        saved = self.recorder.save(job)
        if say is not None:
            line = say(job) if callable(say) else Line(say, priority, fields)
            self.log(line.text, line.priority, job=job, **line.fields)
        if wake:
            self.wake()
        return saved

    def _track(self, job: Job) -> None:
        """The in-memory side of every change: the table, the live set, the per-user counts, the listing."""
        self.jobs[job.id] = job
        self.listing.invalidate(job.id)
        self._requests.pop(job.id, None)
        if job.state in ACTIVE and job.gpus and job.id not in self._charged:
            self._charged[job.id] = (job.started if job.started is not None else self.clock.time(), len(job.gpus))
        elif job.id in self._charged and job.state not in ACTIVE:
            self._charge_job(job, self.clock.time())     # it held its GPUs until now
            del self._charged[job.id]
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
        if job.array_id:
            self._arrays.setdefault(job.array_id, {})[job.array_index] = job.id
        for by_uid, state in ((self._queued_by_uid, State.QUEUED), (self._rejected_by_uid, State.REJECTED)):
            ids = by_uid.setdefault(job.uid, set())
            if job.state == state:
                ids.add(job.id)
            else:
                ids.discard(job.id)

    def _untrack(self, job_id: int) -> None:
        job = self.jobs.pop(job_id, None)
        self.live.pop(job_id, None)
        self.listing.invalidate(job_id)
        self._requests.pop(job_id, None)
        self._charged.pop(job_id, None)
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
        job = lifecycle.accepted(job_id, spec, user, uid, gid, source, self.clock.time())
        job.job_class = inputs.job_class(job, self._classes, self.cfg.default_class)   # "" without classes
        job.after = dependencies.resolve(spec, uid, job=self.jobs.get, anyone=uid == 0,
                                         latest=lambda u, name: self._latest.get((u, name)))
        if spec.hold:
            job.held, job.reason = user, f"held by {user} (hold = true in the job file)"
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
        after = dependencies.resolve(spec, uid, job=self.jobs.get, anyone=uid == 0,
                                     latest=lambda u, name: self._latest.get((u, name)))
        jobs = []
        for index, job_id in enumerate(job_ids):
            job = lifecycle.accepted(job_id, sweep.element(spec, index, array_id), user, uid, gid, source, now)
            job.array_id, job.array_index, job.after = array_id, index, after
            job.job_class = inputs.job_class(job, self._classes, self.cfg.default_class)
            if spec.hold:
                job.held, job.reason = user, f"held by {user} (hold = true in the job file)"
            jobs.append(job)
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
                    self.submissions[key] = array_id
                    while len(self.submissions) > MAX_SUBMISSIONS:
                        self.submissions.popitem(last=False)
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
            self.submissions[key] = job.id
            while len(self.submissions) > MAX_SUBMISSIONS:
                self.submissions.popitem(last=False)
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
        # the ledger from the jobs' histories (the finished jobs still kept, the active ones up to now)
        self.ledger = fairshare.Ledger.rebuild((r for j in self.jobs.values() for r in inputs.runs(j, now)),
                                               self.cfg.fair_share_half_life, now)
        self._charged = {j.id: (now, len(j.gpus)) for j in self.live.values() if j.state in ACTIVE and j.gpus}
        self.probe_gpus()
        for job in [j for j in self.live.values() if j.state in ACTIVE]:
            self.reconcile(job, recovering=True)
        n_active = sum(1 for j in self.live.values() if j.state in ACTIVE)
        self.log(f"recovered {len(self.jobs)} job(s): {n_active} active, {len(self.live) - n_active} queued")

    def reconcile(self, job: Job, recovering: bool = False) -> None:
        """Bring an active job's record in line with reality: its scope and its monitor's result."""
        seen = self.runner.observe(job)
        if isinstance(seen, Ended):
            self.finish(job, seen.result)
        elif isinstance(seen, Running):
            if job.state == State.STARTING:
                self.apply(job, lifecycle.running, say=f"job {job.id} re-adopted: running in {job.unit}")
            elif job.state == State.STOPPING and recovering:
                self.runner.stop(job.unit)                   # in case the daemon died before asking
            elif recovering:
                self.log(f"job {job.id} re-adopted: running in {job.unit}", job=job)
        elif isinstance(seen, Gone):
            if job.state == State.STARTING:
                self.apply(job, lifecycle.never_started, "requeued: the daemon stopped before the job began",
                           say=f"job {job.id} never started; requeued")
            else:
                self.finish(job, None)
        # Leftovers: processes remain in the scope; the runner kills them, the job keeps its GPUs meanwhile

    def monitor_exited(self, job_id: int) -> None:
        job = self.live.get(job_id)
        if job is None or job.state not in ACTIVE:
            return
        self.reconcile(job)

    def finish(self, job: Job, result: dict[str, Any] | None) -> None:
        """The attempt is over: `result` is what its monitor recorded, None if it recorded nothing."""
        if result is not None and result.get("not_started") and job.state in (State.STARTING, State.RUNNING):
            self.apply(job, lifecycle.never_started, "requeued: the daemon stopped before the job began",
                       say=f"job {job.id} never started; requeued", GPUSCHED_EVENT="requeue", wake=True)
            return
        now = self.clock.time()
        delay = None if job.state == State.STOPPING else dependencies.retry_delay(
            job, result, self.cfg.retry_backoff, self.cfg.retry_backoff_max)
        self.apply(job, lifecycle.ended, result, now, None if delay is None else now + delay, say=_ended_line,
                   wake=True)
        if delay is not None:
            self._due = min(self._due or now + delay, now + delay)

    # --- what people ask -------------------------------------------------------------------------------

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
            if job.stop_intent != "cancel" or now:
                self.apply(job, lifecycle.cancel_stopping, f"cancelled by {who} {how}".rstrip(),
                           say=f"job {job.id} cancelled by {who} while stopping {how}".rstrip(),
                           GPUSCHED_EVENT="cancel")
        else:
            self._stop(job, "cancel", f"cancelled by {who} {how}".rstrip())
        if now and job.state in ACTIVE:
            self.runner.kill(job)
            return "killed"
        return "stopping"

    def hold(self, job: Job, by: Who) -> str:
        """Hold a queued job (the caller's right to act on it is the API's check)."""
        if job.state != State.QUEUED:
            raise Invalid(f"job {job.id} is {job.state}: only a queued job can be held"
                          + (f" (`gpuschedctl requeue {job.id}` puts a running one back)" if job.state in ACTIVE
                             else ""))
        if not job.held:
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

    def requeue(self, job: Job, by: Who) -> str:
        """Stop a running job with its stop signal and grace and put it back in the queue (same id)."""
        if job.state not in (State.STARTING, State.RUNNING):
            raise Invalid(f"job {job.id} is {job.state}: only a running job can be requeued")
        self._stop(job, "requeue", f"requeued by {by.name}")
        return "stopping; requeued when it has stopped"

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

    def page(self, all: bool, after: int, viewer: Viewer, table: bool, max_bytes: int,
             max_count: int, fold: bool = False) -> tuple[str, int | None]:
        """A page of the listing: jobs with ids above `after` (all: finished ones too); see Listing.page.
        fold (table only): an array's jobs as one row."""
        jobs = self.jobs if all else self.live
        ids = sorted(i for i in jobs if i > after)
        return self.listing.page((jobs[i] for i in ids), viewer, table, not after, max_bytes, max_count,
                                 self._folder(jobs) if fold else None)

    def _folder(self, jobs: dict[int, Job]) -> Callable[[Job], str | None]:
        """For a folded listing of `jobs`: an array's row at the first of its elements listed (the one with the
        lowest id), "" at the others; None for a job alone."""
        first: dict[int, int] = {}

        def fold(job: Job) -> str | None:
            if not job.array_id or job.array_id not in self._arrays:
                return None
            elements = self._arrays[job.array_id]
            if job.array_id not in first:
                first[job.array_id] = min(i for i in elements.values() if i in jobs)
            if first[job.array_id] != job.id:
                return ""
            # counted over every element kept, finished ones too: "2 running, 3 queued, 1 succeeded"
            return listing.fold_row(job.array_id, [self.jobs[elements[i]] for i in sorted(elements)])
        return fold

    def _holders(self) -> dict[int, int]:
        return {g.index: j.id for j in self.live.values() if j.state in ACTIVE for g in j.gpus}

    def gpu_table(self) -> list[dict[str, Any]]:
        return self.inventory.table(self._holders())

    def status_line(self) -> str:
        running = sum(1 for j in self.live.values() if j.state in ACTIVE)
        queued = sum(1 for j in self.live.values() if j.state == State.QUEUED)
        drain = f"draining (by {self.draining}), " if self.draining else ""
        return f"{drain}{running} running, {queued} queued, {self.inventory.summary(set(self._holders()))}"

    # --- scheduling ------------------------------------------------------------------------------------

    def probe_gpus(self) -> None:
        if self.inventory.refresh(j.unit for j in self.live.values() if j.state in ACTIVE and j.unit):
            self.wake()                                  # only what can change a decision wakes the policy

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
        self._charge(now)
        queued, holders = [], []
        users: dict[str, int] = {}
        doomed: list[tuple[Job, str]] = []
        self._singles = None                             # built by _gate for the first singleton job seen
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
                    queued.append(self._request(job))
                except Exception:  # noqa: BLE001
                    self._input_error(job)
                    continue
                users[job.user] = job.uid
            elif job.state in ACTIVE:
                try:
                    holders.append(inputs.holder(job, classes=self._classes, default_class=self.cfg.default_class,
                                                 history_estimate=self._estimate(job)))
                except Exception:  # noqa: BLE001
                    self._input_error(job)               # its GPUs still count as held, and it is never a victim
                    holders.append(policy.Holder(job.id, 0, tuple(g.index for g in job.gpus), preemptible=False,
                                                 stopping=job.state == State.STOPPING, uid=job.uid))
                users[job.user] = job.uid
        for job, why in doomed:
            self._contained(self._dependency_failed, job, why)
        if not queued:
            return
        gpus = self.inventory.gpus
        d = policy.schedule(queued, holders, gpus, now=now, standing=self._standing(users, now),
                            **inputs.settings(self.cfg, configmod.cpu_job_cap(self.cfg)))
        self.stats["last_policy_seconds"] = self.clock.monotonic() - t0
        self.stats["last_pass_queued"] = len(queued)
        for victim, for_job in d.preempts:
            self._contained(self._stop, self.jobs[victim], "preempt", self._preempted_by(self.jobs[for_job]))
        by_index = {g.index: g for g in gpus or ()}
        for job_id, indices in d.starts:
            self._contained(self._start, self.jobs[job_id], [by_index[i] for i in indices])
        for job_id, reason in d.waiting.items():
            if job_id in d.expected_start:
                when = f"expected to start by {_when(d.expected_start[job_id])} (backfill plan)"
                vague = "expected to start by the running jobs' time limits"
                reason = reason.replace(vague, when) if vague in reason else f"{reason}; {when}"
            self._wait(self.jobs[job_id], reason)

    def _gate(self, job: Job, now: float) -> tuple[str, str] | None:
        """Why a queued job is not offered to the policy this pass, or None: ("never", why) when a dependency
        can't be met any more (it then ends); ("wait", why) for the rest, in this order: dependencies, hold,
        a paused user, drain, a retry's backoff, singleton. Cheap for a job with none of them."""
        if job.after:
            verdict, why = dependencies.check(job.after, self._dependency_state)
            if verdict != "ready":
                return verdict, why
        if job.held:
            return "wait", f"held by {job.held}; `gpuschedctl release {job.id}` lets it start"
        if job.user in self.paused:
            return "wait", f"{job.user}'s jobs are paused by {self.paused[job.user]} (`gpuschedctl unpause`)"
        if self.draining:
            return "wait", f"the server is draining (by {self.draining}): no job starts until `gpuschedctl resume`"
        if job.not_before is not None and job.not_before > now:
            self._due = min(self._due or job.not_before, job.not_before)
            return "wait", job.reason if "retry" in job.reason else "waiting to retry"
        spec = job.spec
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

    def _dependency_state(self, job_id: int) -> State | None:
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

    def _dependency_failed(self, job: Job, why: str) -> None:
        self.apply(job, lifecycle.dependency_failed, why, self.clock.time(), wake=True,
                   say=f"job {job.id} can never start: {why}", priority=4, GPUSCHED_EVENT="end")

    def _input_error(self, job: Job) -> None:
        """A job the policy can't be told about: said once per job (every pass would repeat it)."""
        if job.id not in self._input_errors:
            self._input_errors.add(job.id)
            self.log(f"internal error building the policy's view of job {job.id} (it waits meanwhile): "
                     f"{traceback.format_exc()}", 3, job=job, multiline=True)

    def _request(self, job: Job) -> policy.Request:
        """A queued job's Request, built once while the job doesn't change (100,000 queued jobs are not
        rebuilt every pass). A job that relies on an estimate is rebuilt when its user's history moves it."""
        est = self._estimate(job)
        cached = self._requests.get(job.id)
        if cached is not None and cached[1] == est:
            return cached[0]
        req = inputs.request(job, classes=self._classes, default_class=self.cfg.default_class, history_estimate=est)
        self._requests[job.id] = (req, est)
        return req

    def _estimate(self, job: Job) -> float | None:
        """The limit estimate from the user's latest successful runs of the same job name (None when the job
        has a limit of its own: it would not be read)."""
        spec = job.spec
        if spec is None or spec.time_limit:
            return None
        runs = self._runs.get((job.uid, spec.name))
        return inputs.estimate(runs) if runs else None

    def _preempted_by(self, job: Job) -> str:
        if self._classes:
            return f"preempted by job {job.id} (class {inputs.job_class(job, self._classes, self.cfg.default_class)!r})"
        return f"preempted by job {job.id} (priority {job.spec.priority if job.spec else '?'})"

    def explain(self, job: Job) -> dict[str, Any]:
        """For `gpuschedctl show` of a queued job: its class, its user's fair-share standing and the jobs
        ahead of it in the order the next pass would use (one linear scan of the queue, on demand only)."""
        if job.state != State.QUEUED or job.spec is None:
            return {}
        now = self.clock.time()
        queued, users = [], {}
        for j in self.live.values():
            if j.state == State.QUEUED:
                queued.append(self._request(j))
            users[j.user] = j.uid
        standing = self._standing(users, now)
        settings = inputs.settings(self.cfg, configmod.cpu_job_cap(self.cfg))
        key = order.keyfunc(classes=settings["classes"], now=now, aging=settings["aging"], standing=standing)
        ahead = [r.id for r in order.ahead(self._request(job), queued, key)]
        out: dict[str, Any] = {}
        if self._classes:
            out["class"] = inputs.job_class(job, self._classes, self.cfg.default_class)
        if job.uid in standing:
            out["fair_share"] = f"{job.user} is at " + fairshare.describe(standing[job.uid])
        shown = ", ".join(map(str, ahead[:MAX_AHEAD])) + (f" and {len(ahead) - MAX_AHEAD} more"
                                                           if len(ahead) > MAX_AHEAD else "")
        out["ahead"] = f"{len(ahead)} job(s): {shown}" if ahead else "none: it is first in line"
        return out

    # --- fair share -------------------------------------------------------------------------------------

    def _charge_job(self, job: Job, now: float) -> None:
        since, gpus = self._charged[job.id]
        if now > since:
            self.ledger.charge(job.user, float(gpus), since, now)
            self._charged[job.id] = (now, gpus)

    def _charge(self, now: float) -> None:
        """Charge the ledger with the GPU time active jobs held since they were last charged (each pass and
        tick; _track starts a job's account when it gets GPUs and charges the rest when it leaves them)."""
        for job_id in self._charged:
            self._charge_job(self.jobs[job_id], now)
        self.ledger.advance(now)

    def _standing(self, users: dict[str, int], now: float) -> dict[int, fairshare.Standing]:
        """Each uid's fair-share standing among the users with jobs waiting or running."""
        usage = {u: self.ledger.value(u, now) for u in users}
        group_shares = dict(self.cfg.share_groups)
        group_of = {u: g for u in users if (g := self._group(u, group_shares)) is not None} if group_shares else None
        standing = fairshare.standings(usage, users, shares=dict(self.cfg.shares),
                                       default_share=self.cfg.default_share, group_of=group_of,
                                       group_shares=group_shares or None)
        return {users[u]: s for u, s in standing.items()}

    def _group(self, user: str, group_shares: dict[str, float]) -> str | None:
        """The share group (fair_share.groups) a user belongs to, the first configured one; looked up once."""
        if user not in self._share_group:
            try:
                pw = pwd.getpwnam(user)
                mine = set(group_names(pw.pw_name, pw.pw_gid))
            except KeyError:
                mine = set()
            self._share_group[user] = next((g for g in group_shares if g in mine), None)
        return self._share_group[user]

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

    def _start(self, job: Job, gpus: Sequence[Gpu]) -> None:
        spec = job.spec
        assert spec is not None
        cls = (self._classes or {}).get(inputs.job_class(job, self._classes, self.cfg.default_class))
        if spec.time_limit is None and cls is not None and cls.default_time_limit:
            # the class's default limit, enforced like the file's own (RuntimeMaxUSec): applied to the spec in
            # memory at each launch (a restart re-reads the file; the next launch applies it again)
            spec = job.spec = dataclasses.replace(spec, time_limit=cls.default_time_limit)
        account = self.runner.account(job.uid)
        if account is None:
            self.apply(job, lifecycle.start_failed, f"user {job.user} (uid {job.uid}) no longer exists",
                       self.clock.time())
            return
        unit = launch.unit_name(job.id)
        if not self.apply(job, lifecycle.starting, gpus, unit, self.recorder.log_path(job.id), self.clock.time(),
                          os.urandom(4).hex()):
            # on disk before the scope exists, or no start
            self.apply(job, lifecycle.never_started, "waiting: the state directory can't be written")
            self._retry = True
            return
        try:
            self.runner.start(job, account, gpus, lambda: self.monitor_exited(job.id))
        except UnitExists as e:
            # a scope left by a start that was given up on (this job is queued, so nothing of it can be
            # running there): stop it and try again on the next tick
            self.apply(job, lifecycle.never_started, f"waiting for the previous {unit} to go away",
                       say=f"job {job.id} not started: {e}", priority=3)
            self.runner.stop(unit)
            self._retry = True
            return
        except SystemdUnavailable as e:
            self.apply(job, lifecycle.never_started, "waiting: the system bus is being reconnected",
                       say=f"job {job.id} not started: {e}", priority=3)
            self._retry = True
            return
        except SystemdError as e:
            self.apply(job, lifecycle.start_failed, f"could not create {unit}: {e}", self.clock.time(),
                       say=f"job {job.id} not started: {e}", priority=3)
            return
        except MonitorDied as e:
            # nothing runs; stop the empty scope and requeue; the monitor's exit is handled as usual
            self.apply(job, lifecycle.never_started,
                       f"waiting: its monitor died before the job began ({e.strerror})",
                       say=f"job {job.id} not started: its monitor died early", priority=3)
            self.runner.stop(unit)
            self._retry = True
            return
        where = "GPU " + ",".join(str(g.index) for g in gpus) if gpus else "no GPU"
        self.apply(job, lifecycle.running,
                   say=f"started job {job.id} {spec.name!r} of {job.user} in {unit} on {where} (attempt {job.attempt})",
                   GPUSCHED_EVENT="start", GPUSCHED_UNIT=unit)

    def _stop(self, job: Job, intent: str, reason: str) -> None:
        self.apply(job, lifecycle.stopping, intent, reason, self.clock.time(), say=f"stopping job {job.id}: {reason}",
                   GPUSCHED_EVENT="preempt" if intent == "preempt" else "stop")
        self._send_stop(job)

    def _send_stop(self, job: Job) -> None:
        try:
            gone = not self.runner.stop(job.unit)
        except SystemdUnavailable:
            self._restop.add(job.id)                    # asked again once the bus is back (tick)
            return
        self._restop.discard(job.id)
        if gone:
            self.reconcile(job)

    # --- periodic work ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Every second or so: the GPUs probed when due, stops the bus lost sent again, active jobs no
        monitor of ours reports on reconciled, failed writes retried, failed starts retried, expiry when due."""
        if self.inventory.due():
            self.probe_gpus()
        self._charge(self.clock.time())
        watched = self.runner.watched()
        try:
            for job_id in list(self._restop):
                job = self.live.get(job_id)
                if job is None or job.state != State.STOPPING:
                    self._restop.discard(job_id)
                else:
                    self._send_stop(job)
            for job in [j for j in self.live.values() if j.state in ACTIVE and j.id not in watched]:
                self.reconcile(job)
        except SystemdUnavailable:
            pass                                        # bus.py is reconnecting; tried again next tick
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
        if now - self._last_expire >= self._expire_interval():
            self._last_expire = now
            self.expire()

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
        in batches (`soon`)."""
        keep_finished, keep_rejected = self._keep()
        if not (keep_finished or keep_rejected) or self._expiring:
            return
        now = self.clock.time()
        cutoff = {State.REJECTED: now - keep_rejected if keep_rejected else 0.0}
        default = now - keep_finished if keep_finished else 0.0
        self._expiring = [j.id for j in self.jobs.values()
                          if j.state in FINAL and (j.ended or j.submitted) < cutoff.get(j.state, default)
                          and not self._array_lives(j)]
        if keep_rejected and self.expire_rejected is not None:
            try:
                freed = self.expire_rejected(cutoff[State.REJECTED])
                if freed:
                    self.log(f"removed rejected spool entries older than keep_rejected ({freed} bytes)")
            except OSError as e:
                self.log(f"can't expire rejected spool entries: {e}", 3)
        if self._expiring:
            self.log(f"removing {len(self._expiring)} finished job(s) older than keep_finished / keep_rejected",
                     GPUSCHED_EVENT="expire")
            self.soon(self.expire_batch)

    def _array_lives(self, job: Job) -> bool:
        """An array's first element is kept while another element is not final: its id names the array."""
        if job.array_id != job.id or not job.array_id:
            return False
        return any(i in self.live for i in self._arrays.get(job.id, {}).values())

    def expire_batch(self) -> bool:
        """Remove up to EXPIRE_BATCH of the sweep's jobs. True while some are left."""
        batch = []
        while self._expiring and len(batch) < EXPIRE_BATCH:
            job = self.jobs.get(self._expiring.pop())
            if job is not None and job.state in FINAL and job.id not in self.recorder.dirty:
                batch.append(job)
        try:
            self.recorder.remove(j.id for j in batch)           # lists results/ once per batch
        except (OSError, ValueError) as e:
            self.log(f"can't remove {len(batch)} finished job(s): {e}; kept for the next sweep", 3)
            return bool(self._expiring)
        for job in batch:
            self._untrack(job.id)
        return bool(self._expiring)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(t))


def _ended_line(job: Job) -> Line:
    text = f"job {job.id} {job.state}" + (f": {job.reason}" if job.reason else "")
    return Line(text, 6 if job.state in (State.SUCCEEDED, State.QUEUED, State.CANCELLED) else 4,
                {"GPUSCHED_EVENT": "requeue" if job.state == State.QUEUED else "end",
                 "GPUSCHED_EXIT_CODE": job.exit_code, "GPUSCHED_SIGNAL": job.signal})
