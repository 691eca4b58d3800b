"""Starting and stopping jobs' scopes: a start (launch, with every way it can fail), a stop (at once, or held
back behind the job's warning), the warning signal, a due warning or held-back stop, and a finished job's hooks.

This is where the runner (systemd) is asked to act on a job; what comes of it is asked of the engine's door
(`apply`: the record, the journal and the wake-up stay in one place), and a job's end comes back through the
engine (`reconcile`, `exited`), never from here. What must be tried again is kept here: the stops the bus lost
(`restop`), the hooks waiting for the bus (`hooks_retry`) and the jobs whose old scope lingers (`unit_waits`,
which the scheduling pass reads); `retry()` asks the engine for a pass on its next tick, `due(t)` for one at t.
Split out of engine.py: the job table decides when, this is how.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import Callable, Sequence

from gpusched import config as configmod
from gpusched import dependencies, hooks, launch, lifecycle, timers
from gpusched.clock import Clock
from gpusched.log import Log
from gpusched.model import Gpu, Job, State
from gpusched.policy import inputs
from gpusched.policy.classes import JobClass
from gpusched.runner import MonitorDied, NoAccount, Runner
from gpusched.scopes import SystemdError, SystemdUnavailable, UnitExists
from gpusched.units import format_duration


class StartStop:
    """One engine's starts and stops. `apply`: its door; `reconcile(job)`: its look at a job whose scope is
    gone; `exited(job_id)`: its monitor-exit handler; `log_path(job_id)`: where a job's output goes;
    `retry()`, `due(t)`: a pass on the next tick, a pass at t."""

    def __init__(self, cfg: configmod.Config, clock: Clock, runner: Runner, log: Log,
                 classes: dict[str, JobClass] | None, apply: Callable[..., bool],
                 reconcile: Callable[[Job], None], exited: Callable[[int], None],
                 log_path: Callable[[int], str], retry: Callable[[], None], due: Callable[[float], None]):
        self.cfg, self.clock, self.runner, self.log, self.classes = cfg, clock, runner, log, classes
        self.apply, self.reconcile, self.exited, self.log_path = apply, reconcile, exited, log_path
        self.retry, self.due = retry, due
        self.unit_waits: dict[int, tuple[float, int]] = {}   # job id -> (until, tries): its old scope lingers
        self.restop: set[int] = set()                  # stops to send again (the bus was down)
        self.hooks_retry: set[int] = set()             # finished jobs whose hooks wait for the bus

    def start(self, job: Job, gpus: Sequence[Gpu]) -> None:
        """Start a queued job on `gpus` (the pass chose them): recorded as starting before its scope exists, then
        running; or back to the queue, or failed, according to what went wrong."""
        spec = job.spec
        assert spec is not None
        cls = (self.classes or {}).get(inputs.job_class(job, self.classes, self.cfg.default_class))
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
        if not self.apply(job, lifecycle.starting, gpus, unit, self.log_path(job.id), self.clock.time(),
                          os.urandom(4).hex()):
            # on disk before the scope exists, or no start
            self.apply(job, lifecycle.never_started, "waiting: the state directory can't be written")
            self.retry()
            return
        try:
            self.runner.start(job, account, gpus, lambda: self.exited(job.id))
        except UnitExists as e:
            # a scope left by a start that was given up on (this job is queued, so nothing of it can be
            # running there): stop it and try again on the next tick
            self.apply(job, lifecycle.never_started, f"waiting for the previous {unit} to go away",
                       say=f"job {job.id} not started: {e}", priority=3)
            self.runner.stop(unit)
            # kept out of the passes meanwhile (1 s, doubled each time, at most 30 s), so that the GPUs it
            # would be given stay free for the others rather than go to a start that fails again
            tries = self.unit_waits.get(job.id, (0.0, 0))[1] + 1
            until = self.clock.time() + dependencies.backoff(tries - 1, 1.0, 30.0)
            self.unit_waits[job.id] = (until, tries)
            self.due(until)                              # a pass then
            return
        except SystemdUnavailable as e:
            self.apply(job, lifecycle.never_started, "waiting: the system bus is being reconnected",
                       say=f"job {job.id} not started: {e}", priority=3)
            self.retry()
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
            self.retry()
            return
        self.unit_waits.pop(job.id, None)
        where = "GPU " + ",".join(str(g.index) for g in gpus) if gpus else "no GPU"
        self.apply(job, lifecycle.running,
                   say=f"started job {job.id} {spec.name!r} of {job.user} in {unit} on {where} (attempt {job.attempt})",
                   GPUSCHED_EVENT="start", GPUSCHED_UNIT=unit)

    def stop(self, job: Job, intent: str, reason: str, held: str = "") -> None:
        """Stop an active job (`intent`: cancel, requeue, preempt, ...): a preemption of a job with a warning is held
        back behind it (timer sends it); any other stop is sent now."""
        delay = timers.preempt_delay(job, self.cfg.max_warn_before) if intent == "preempt" else 0.0
        if delay > 0 and self.warn(job, f"it is being preempted; stopped in {format_duration(delay)}"):
            # its warn_signal now, the StopUnit warn_before later (tick): it can checkpoint first. Without a
            # main process to warn (it hasn't begun, or has ended), the stop goes at once
            now = self.clock.time()
            self.apply(job, lifecycle.stopping, intent, reason, now, now + delay,
                       say=f"stopping job {job.id} in {format_duration(delay)}, after its warning: {reason}",
                       GPUSCHED_EVENT="preempt")
            return
        self.apply(job, lifecycle.stopping, intent, reason, self.clock.time(), None, held,
                   say=f"stopping job {job.id}: {reason}", GPUSCHED_EVENT="preempt" if intent == "preempt" else "stop")
        self.send_stop(job)

    def warn(self, job: Job, why: str) -> bool:
        """Send the job's warn_signal to its main process, once per attempt (the record says when). False if
        there was no main process to send it to."""
        spec = job.spec
        assert spec is not None and spec.warn_signal is not None
        name = signal.Signals(spec.warn_signal).name
        try:
            pid = self.runner.signal(job, spec.warn_signal)
        except OSError as e:
            pid, why = None, f"{why}; {e.strerror}"
        text = (f"sent {name} to job {job.id} (pid {pid}): {why}" if pid is not None else
                f"job {job.id}: no main process to send {name} to ({why})")
        self.apply(job, lifecycle.warned, self.clock.time(), say=text, priority=6 if pid is not None else 4,
                   GPUSCHED_EVENT="warn")
        return pid is not None

    def timer(self, job: Job) -> None:
        """A job's warning or held-back stop that is due (timers.next_due)."""
        now = self.clock.time()
        if job.state == State.STOPPING and job.stop_due is not None and job.stop_due <= now:
            self.apply(job, lifecycle.stop_sent, say=f"job {job.id}: its warning time is over; stopping it",
                       GPUSCHED_EVENT="stop")
            self.send_stop(job)
            return
        due = timers.warning_due(job)
        if due is not None and due <= now:
            spec = job.spec
            assert spec is not None and spec.time_limit is not None and job.started is not None
            left = max(0.0, job.started + spec.time_limit - now)
            self.warn(job, f"its time limit {format_duration(spec.time_limit)} is reached in "
                            f"{format_duration(round(left))}")

    def start_hooks(self, job: Job) -> None:
        """Start a finished job's hooks (hooks.py), each a transient service; nothing waits for them. A failure
        is said in the journal and not retried, but for the bus being away (tried again on the next tick)."""
        started, notes = [], []
        for hook in hooks.plan(job, config_hook=self.cfg.hook_on_finish, config_user=self.cfg.hook_user,
                               python=sys.executable):
            if hook.what == "notify mail" and not self.runner.can_mail():
                notes.append(f'notify = "mail": there is no {hooks.SENDMAIL} on this server; no mail sent')
                continue
            try:
                self.runner.start_hook(hook, job.id, self.cfg.hook_timeout)
            except SystemdUnavailable:
                self.hooks_retry.add(job.id)
                return
            except UnitExists:
                pass                                     # started before a restart
            except (SystemdError, NoAccount) as e:
                notes.append(f"{hook.what} hook not started: {e}")
                continue
            started.append(hook.unit)
        self.hooks_retry.discard(job.id)
        for note in notes:
            self.log(f"job {job.id}: {note}", 4, job=job, GPUSCHED_EVENT="hook")
        self.apply(job, lifecycle.hooks_started, say=f"job {job.id}: started {', '.join(started)}" if started
                   else None, GPUSCHED_EVENT="hook")

    def send_stop(self, job: Job) -> None:
        try:
            gone = not self.runner.stop(job.unit)
        except SystemdUnavailable:
            self.restop.add(job.id)                    # asked again once the bus is back (tick)
            return
        self.restop.discard(job.id)
        if gone:
            self.reconcile(job)
