"""Fakes that drive the real engine without root, systemd or a disk: a clock moved by hand, a runner whose jobs
"run" on that clock, a recorder in memory, a fixed set of GPUs, a log that keeps its lines.

tests/test_engine.py drives the engine with these, and so does the simulator (bench/simulate): the same
engine and policy as the daemon, on a virtual clock, with no thread and no sleep. The loop they need is:

    w = World(gpus=8)
    w.submit(JobSpec(command="x", name="a", gpus=2, time_limit=3600), uid=1000)
    while ...:
        w.settle()                     # scheduling passes until nobody asks for one
        t = w.runner.due()             # the next job end (wall time), or None
        w.clock.set(t); w.runner.fire()

Deliberately small: what a job does is the test's (or the simulator's) business, through `duration`.
"""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from gpusched import config as configmod
from gpusched.engine import Engine
from gpusched.jobfile import JobSpec
from gpusched.launch import Account
from gpusched.model import Gpu, Job, job_from_dict, job_to_dict
from gpusched.recorder import Retrying
from gpusched.runner import Ended, Gone, Running, Seen

EPOCH = 1_700_000_000.0


class FakeClock:
    """Monotonic seconds since the start and the wall time they map to; moves only when told."""

    def __init__(self, start: float = EPOCH):
        self.start = start
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return self.start + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, wall: float) -> None:
        """Move to the wall time `wall` (never back)."""
        self.t = max(self.t, wall - self.start)


class ListLog:
    """A log that keeps its lines: (message, priority, fields with the job's id as GPUSCHED_JOB_ID)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int, dict[str, Any]]] = []

    def __call__(self, message: str, priority: int = 6, job: Job | None = None, multiline: bool = False,
                 **fields: Any) -> None:
        if job is not None:
            fields.setdefault("GPUSCHED_JOB_ID", job.id)
        self.lines.append((message, priority, fields))

    def texts(self) -> list[str]:
        return [m for m, _, _ in self.lines]


class MemoryRecorder(Retrying):
    """Records in memory, as the store would write them (job_to_dict), so a second engine can load() them
    as after a restart. `full = True` makes every write fail as a full disk does."""

    def __init__(self, log: Callable[..., None] | None = None, keep: bool = True):
        self.dirty: set[int] = set()
        self.records: dict[int, tuple[dict[str, Any], JobSpec | None]] = {}
        self.sources: dict[int, bytes] = {}
        self.copies: set[int] = set()                 # people's copies due (waiting reasons)
        self.removed: list[int] = []
        self.full = False
        self.keep = keep                              # False: write nothing down (the simulator's speed)
        self._log = log or (lambda *a, **k: None)

    def _write(self, job: Job) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        if self.keep:
            self.records[job.id] = (job_to_dict(job), job.spec)

    def load(self, on_error: Callable[[str, Exception], None]) -> list[Job]:
        return [job_from_dict(d, spec) for _, (d, spec) in sorted(self.records.items())]

    def create(self, job: Job, source: bytes | None = None) -> None:
        self._write(job)
        if source is not None and self.keep:
            self.sources[job.id] = source

    def create_array(self, jobs: list[Job], source: bytes) -> Iterator[None]:
        try:
            for job in jobs[1:] + jobs[:1]:           # the first element last, as the store does
                self.create(job, source)
                yield
        except OSError:
            self.discard(j.id for j in jobs)
            raise

    def discard(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.records.pop(job_id, None)
            self.sources.pop(job_id, None)

    def refresh_stale(self, jobs: Mapping[int, Job]) -> None:
        pass

    control: dict[str, Any] = {}

    def load_control(self) -> dict[str, Any]:
        return dict(self.control)

    def save_control(self, control: dict[str, Any]) -> None:
        self.control = dict(control)

    def copy_soon(self, job: Job) -> None:
        self.copies.add(job.id)

    def remove(self, job_ids: Iterable[int]) -> int:
        for job_id in job_ids:
            self.records.pop(job_id, None)
            self.removed.append(job_id)
        return 0

    def remove_rejected(self, job_ids: Iterable[int]) -> int:
        return self.remove(job_ids)

    def forget(self, job_id: int) -> None:
        self.dirty.discard(job_id)
        self.copies.discard(job_id)

    def log_path(self, job_id: int) -> str:
        return f"/nonexistent/logs/{job_id}.log"

    def state_of(self, job_id: int) -> str | None:
        """The state as last written (None: never written)."""
        rec = self.records.get(job_id)
        return rec[0]["state"] if rec else None


@dataclass
class Run:
    job_id: int
    unit: str
    gpus: tuple[int, ...]
    started: float
    ends: float | None                                  # wall time; None: until stopped
    result: dict[str, Any]
    on_exit: Callable[[], None]
    stop_signal: str = "SIGTERM"
    reported: bool = False


class FakeRunner:
    """Runs nothing. A started job ends `duration(job)` seconds later (None: only when stopped) with exit code
    exit_code(job) (0 by default), or at its time_limit with its stop signal, as systemd's RuntimeMaxUSec would; a stop ends it at once
    with its stop signal; `fire()` reports the ends that are due, as monitors exiting would.

    `fail[job_id] = exc` makes that job's next start raise exc (scopes.UnitExists(...), MonitorDied(...));
    `accounts[uid] = None` makes a user unknown; `units` are scopes that exist, as systemd would list them."""

    def __init__(self, clock: FakeClock, duration: Callable[[Job], float | None] = lambda job: None,
                 exit_code: Callable[[Job], int] = lambda job: 0,
                 extra: Callable[[Job], dict[str, Any]] = lambda job: {}):
        self.clock = clock
        self.extra = extra                              # more of the result of a job that ends by itself
        self.duration = duration
        self.exit_code = exit_code
        self.units: dict[str, Run] = {}
        self.fail: dict[int, Exception] = {}
        self.accounts: dict[int, Account | None] = {}
        self.started: list[tuple[int, tuple[int, ...]]] = []
        self.stopped: list[str] = []
        self.killed: list[str] = []
        # issue 9, warnings and hooks: signals sent to jobs' main processes (job id, signal, wall time); hooks
        # started; mail: whether sendmail is there; hook_fail[unit] = exc makes that hook's start raise exc
        self.signals: list[tuple[int, int, float]] = []
        self.hooks: list[Any] = []
        self.mail = True
        self.hook_fail: dict[str, Exception] = {}

    def account(self, uid: int) -> Account | None:
        if uid in self.accounts:
            return self.accounts[uid]
        return Account(f"user{uid}", uid, uid, f"/home/user{uid}", "/bin/sh")

    def start(self, job: Job, account: Account, gpus: Sequence[Gpu], on_exit: Callable[[], None]) -> None:
        if job.id in self.fail:
            raise self.fail.pop(job.id)
        spec = job.spec
        assert spec is not None
        now = self.clock.time()
        ends, result = None, {"exit_code": self.exit_code(job)} | self.extra(job)
        stop_signal = signals.Signals(spec.stop_signal).name
        d = self.duration(job)
        if d is not None:
            ends = now + d
        if spec.time_limit is not None and (ends is None or ends > now + spec.time_limit):
            ends, result = now + spec.time_limit, {"signal": stop_signal}
        if ends is not None:
            result = result | {"ended": ends}
        self.units[job.unit] = Run(job.id, job.unit, tuple(g.index for g in gpus), now, ends, result, on_exit,
                                   stop_signal)
        self.started.append((job.id, tuple(g.index for g in gpus)))

    def stop(self, unit: str) -> bool:
        run = self.units.get(unit)
        if run is None:
            return False
        self.stopped.append(unit)
        if run.ends is None or run.ends > self.clock.time():
            run.ends = self.clock.time()
            run.result = {"signal": run.stop_signal, "ended": run.ends}
        return True

    def kill(self, job: Job) -> None:
        run = self.units.get(job.unit)
        self.killed.append(job.unit)
        if run is not None and not run.reported:
            run.ends = self.clock.time()
            run.result = {"signal": "SIGKILL", "ended": run.ends}

    def observe(self, job: Job) -> Seen:
        run = self.units.get(job.unit)
        if run is None or run.job_id != job.id:
            return Gone()
        if run.ends is not None and run.ends <= self.clock.time():
            del self.units[job.unit]                    # its scope is empty now: systemd collects it
            return Ended(run.result)
        return Running()

    def watched(self) -> set[int]:
        return {r.job_id for r in self.units.values() if not r.reported}

    def reap(self) -> None:
        pass

    def signal(self, job: Job, sig: int) -> int | None:
        run = self.units.get(job.unit)
        if run is None or run.job_id != job.id or (run.ends is not None and run.ends <= self.clock.time()):
            return None
        self.signals.append((job.id, sig, self.clock.time()))
        return 4242

    def start_hook(self, hook: Any, job_id: int, timeout: float) -> None:
        if hook.unit in self.hook_fail:
            raise self.hook_fail.pop(hook.unit)
        self.hooks.append(hook)

    def can_mail(self) -> bool:
        return self.mail

    def due(self) -> float | None:
        """The wall time of the next end not yet reported."""
        return min((r.ends for r in self.units.values() if r.ends is not None and not r.reported), default=None)

    def fire(self) -> int:
        """Report every end that is due (its monitor exits). Returns how many."""
        now = self.clock.time()
        due = sorted((r for r in self.units.values() if r.ends is not None and r.ends <= now and not r.reported),
                     key=lambda r: (r.ends, r.job_id))
        for r in due:
            r.reported = True
            r.on_exit()
        return len(due)


class FixedGpus:
    """A probe that always sees the same `n` idle GPUs of `memory` bytes each."""
    simulated = True

    def __init__(self, n: int, memory: int = 80 << 30, name: str = "Simulated A100 80GB"):
        self.gpus = [Gpu(i, f"GPU-sim-{i}", name, memory, memory, simulated=True) for i in range(n)]

    def probe(self, active_units: frozenset[str] = frozenset()) -> list[Gpu]:
        return list(self.gpus)

    # issue 9's accounting: what `sample` reports per GPU index (usage.GpuSample); a GPU not in it has none
    usage: dict[int, Any] | None = None

    def sample(self, indices: Iterable[int]) -> dict[int, Any]:
        return {i: self.usage[i] for i in indices if i in self.usage} if self.usage else {}


@dataclass
class World:
    """The engine with all of the above; `settle()` runs the passes it asks for."""
    gpus: int = 4
    cfg: configmod.Config = field(default_factory=configmod.Config)
    duration: Callable[[Job], float | None] = lambda job: None
    exit_code: Callable[[Job], int] = lambda job: 0             # of a job that ends by itself
    extra: Callable[[Job], dict[str, Any]] = lambda job: {}     # more of its result (outcome, cpu_seconds...)
    clock: FakeClock = field(default_factory=FakeClock)
    log: ListLog = field(default_factory=ListLog)
    keep_records: bool = True
    recorder: MemoryRecorder | None = None

    def __post_init__(self) -> None:
        self.runner = FakeRunner(self.clock, self.duration, self.exit_code, self.extra)
        if self.recorder is None:
            self.recorder = MemoryRecorder(self.log, keep=self.keep_records)
        self.probe = FixedGpus(self.gpus)
        self.wakes = 0
        self.engine = Engine(self.cfg, self.clock, self.recorder, self.runner, self.probe, self._wake, self.log)
        self.engine.load()
        self.engine.recover()
        self._next_id = max(self.engine.jobs, default=0) + 1

    def _wake(self) -> None:
        self.wakes += 1

    def submit(self, spec: JobSpec, uid: int = 1000, user: str | None = None) -> Job:
        job_id, self._next_id = self._next_id, self._next_id + 1
        return self.engine.accept(job_id, spec, user or f"user{uid}", uid, uid, f"{spec.name}.toml")

    def settle(self, limit: int = 1000) -> int:
        """Scheduling passes while the engine asks for them. Returns how many ran."""
        n = 0
        while self.wakes and n < limit:
            self.wakes = 0
            self.engine.schedule()
            n += 1
        return n

    def run_until(self, wall: float) -> None:
        """Report every job end up to the wall time `wall`, passes in between, then move there."""
        while True:
            self.settle()
            t = self.runner.due()
            if t is None or t > wall:
                break
            self.clock.set(t)
            self.runner.fire()
        self.clock.set(wall)
        self.settle()
