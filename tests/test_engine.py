"""The engine alone, on the fakes of gpusched.testing (a clock moved by hand, a runner whose jobs run on it, a
recorder in memory): no root, no systemd, no disk. The same fakes drive the simulator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpusched import config as configmod
from gpusched.access import Caller
from gpusched.engine import Engine
from gpusched.errors import Invalid, NoSuchJob
from gpusched.jobfile import JobSpec
from gpusched.lifecycle import TransitionError
from gpusched.model import State
from gpusched.runner import MonitorDied
from gpusched.scopes import SystemdError, SystemdUnavailable, UnitExists
from gpusched.testing import EPOCH, FakeRunner, ListLog, MemoryRecorder, World

ROOT = Caller(0, True)


def spec(name="train", gpus=1, **kw) -> JobSpec:
    return JobSpec(command="python train.py", name=name, gpus=gpus, **kw)


def lines_of(w: World, job_id: int) -> list[str]:
    return [m for m, _, f in w.log.lines if f.get("GPUSCHED_JOB_ID") == job_id]


def assert_recorded(w: World) -> None:
    """The door's promise: every job's record says what the engine holds."""
    for job in w.engine.jobs.values():
        assert w.recorder.state_of(job.id) == job.state, job


def test_a_job_from_accept_to_success():
    w = World(gpus=2, duration=lambda job: 600)
    w.settle()                                          # the first probe found the GPUs: one pass
    job = w.submit(spec())
    assert job.state == State.QUEUED and w.wakes == 1 and job.submitted == EPOCH
    w.settle()
    assert job.state == State.RUNNING and job.gpus[0].index == 0 and job.attempt == 1
    assert w.runner.started == [(job.id, (0,))]
    w.run_until(EPOCH + 599)
    assert job.state == State.RUNNING
    w.run_until(EPOCH + 601)
    assert job.state == State.SUCCEEDED and job.ended == EPOCH + 600 and job.exit_code == 0
    assert lines_of(w, job.id) == [
        "accepted job 1 'train' from user1000: 1 GPU(s), priority 100",
        "started job 1 'train' of user1000 in gpusched-job-1.scope on GPU 0 (attempt 1)",
        "job 1 succeeded"]
    assert_recorded(w)


def test_cancel_a_queued_job_and_a_running_one():
    w = World(gpus=1)
    running, queued = w.submit(spec("a")), w.submit(spec("b"))
    w.settle()
    assert running.state == State.RUNNING and queued.state == State.QUEUED
    assert queued.reason.startswith("waiting")                                  # the policy says why
    assert w.engine.cancel(queued, ROOT) == "cancelled"
    assert queued.state == State.CANCELLED and queued.reason == "cancelled by root"
    assert w.engine.cancel(running, ROOT) == "stopping"
    assert running.state == State.STOPPING and w.runner.stopped == [running.unit]
    w.run_until(w.clock.time())
    assert running.state == State.CANCELLED and running.reason == "cancelled by root; killed by SIGTERM"
    with pytest.raises(Invalid, match="has already ended"):
        w.engine.cancel(running, ROOT)
    with pytest.raises(NoSuchJob, match="no job 99"):
        w.engine.get(99)
    assert_recorded(w)


def test_cancel_now_kills_a_stopping_job():
    w = World(gpus=1)
    job = w.submit(spec())
    w.settle()
    w.runner.stop = lambda unit: True                   # the stop signal is ignored: it keeps running
    assert w.engine.cancel(job, ROOT) == "stopping"
    assert w.engine.cancel(job, ROOT, now=True) == "killed"
    assert w.runner.killed == [job.unit] and job.reason == "cancelled by root at once (SIGKILL)"
    w.run_until(w.clock.time())
    assert job.state == State.CANCELLED and "killed by SIGKILL" in job.reason


CLASSES = configmod.parse("""
[classes.debug]
priority = 0
preempts = ["low"]
default_time_limit = "2h"
[classes.normal]
priority = 10
[classes.low]
priority = 20
""")


def test_a_debug_class_job_preempts_a_low_class_one_and_the_victim_is_requeued_with_its_id():
    w = World(gpus=2, cfg=CLASSES, duration=lambda job: 3600)
    low = w.submit(spec("low", gpus=2, job_class="low"), uid=1000)
    w.settle()
    assert low.state == State.RUNNING and low.job_class == "low"
    urgent = w.submit(spec("urgent", gpus=1, job_class="debug"), uid=1001)
    w.settle()
    assert low.state == State.STOPPING and low.stop_intent == "preempt" and urgent.state == State.QUEUED
    w.run_until(w.clock.time() + 1)                     # the victim's scope empties: GPUs free, next pass
    assert urgent.state == State.RUNNING
    assert low.state == State.QUEUED and low.preemptions == 1 and low.history[0]["preempted"]
    assert "job 1 queued: preempted (preempted by job 2 (class 'debug')); killed by SIGTERM; requeued" in \
        lines_of(w, low.id)
    w.run_until(w.clock.time() + 3600)
    assert urgent.state == State.SUCCEEDED and low.state == State.RUNNING and low.attempt == 2
    assert_recorded(w)


def test_without_classes_priority_no_longer_preempts_another_users_job():
    """The time-aware policy: a user's priority orders only their own jobs; urgency is a class's."""
    w = World(gpus=2, duration=lambda job: 3600)
    low = w.submit(spec("low", gpus=2, priority=100), uid=1000)
    w.settle()
    urgent = w.submit(spec("urgent", gpus=1, priority=10), uid=1001)
    w.settle()
    assert low.state == State.RUNNING and urgent.state == State.QUEUED
    assert urgent.reason.startswith("waiting for 1 GPU(s), 0 free")


def test_recovery_readopts_finishes_and_requeues():
    w = World(gpus=4, duration=lambda job: 100 if job.spec.name == "short" else None)
    long, short = w.submit(spec("long")), w.submit(spec("short"))
    w.settle()
    assert long.state == short.state == State.RUNNING
    # the daemon dies; meanwhile "short" ends, and a third job had been recorded as starting, no scope yet
    w.clock.advance(200)
    starting = w.submit(spec("cut"))
    starting.state, starting.unit, starting.attempt = State.STARTING, "gpusched-job-3.scope", 1
    w.recorder.save(starting)
    log = ListLog()
    e = Engine(w.cfg, w.clock, w.recorder, w.runner, w.probe, lambda: None, log)
    e.load()
    e.recover()
    assert e.jobs[long.id].state == State.RUNNING
    assert e.jobs[short.id].state == State.SUCCEEDED and e.jobs[short.id].ended == EPOCH + 100
    assert e.jobs[starting.id].state == State.QUEUED and e.jobs[starting.id].attempt == 0
    texts = log.texts()
    assert "job 1 re-adopted: running in gpusched-job-1.scope" in texts
    assert "job 3 never started; requeued" in texts and "job 2 succeeded" in texts
    assert texts[-1] == "recovered 3 job(s): 1 active, 1 queued"


def test_a_start_that_finds_its_unit_waits_apart_and_is_retried_after_a_backoff():
    w = World(gpus=1, duration=lambda job: 5 if job.id == 2 else None)
    job = w.submit(spec())
    w.runner.fail[job.id] = UnitExists("StartTransientUnit gpusched-job-1.scope: Unit exists")
    assert w.settle() == 1                              # no pass asks for another: no spin
    assert job.state == State.QUEUED and job.attempt == 0 and not job.gpus
    assert job.reason == "waiting for the previous gpusched-job-1.scope to go away"
    assert ("job 1 not started: StartTransientUnit gpusched-job-1.scope: Unit exists", 3) in \
        [(m, p) for m, p, _ in w.log.lines]
    other = w.submit(spec("other"))                     # meanwhile the GPU isn't kept for a start that fails
    w.settle()
    assert other.state == State.RUNNING and job.state == State.QUEUED
    w.run_until(EPOCH + 5)                               # the other ends; job 1's second second has come
    w.engine.tick()
    assert w.settle() == 1 and job.state == State.RUNNING and job.attempt == 1
    assert_recorded(w)


def test_typed_start_errors():
    w = World(gpus=4)
    refused, bus, died = w.submit(spec("a")), w.submit(spec("b")), w.submit(spec("c"))
    w.runner.fail[refused.id] = SystemdError("StartTransientUnit: refused")
    w.runner.fail[bus.id] = SystemdUnavailable("not connected")
    w.runner.fail[died.id] = MonitorDied("Broken pipe")
    w.settle()
    assert refused.state == State.FAILED and refused.reason == "could not create gpusched-job-1.scope: " \
        "StartTransientUnit: refused"
    assert bus.state == State.QUEUED and bus.reason == "waiting: the system bus is being reconnected"
    assert died.state == State.QUEUED and "monitor died before the job began (Broken pipe)" in died.reason
    assert w.runner.stopped == []                        # the died job's scope never existed here
    assert_recorded(w)


def test_one_job_whose_start_has_a_bug_does_not_block_the_others():
    w = World(gpus=4)
    bad = w.submit(spec("bad", priority=1))
    others = [w.submit(spec(f"j{i}")) for i in range(3)]
    w.runner.fail[bad.id] = RuntimeError("a bug")
    w.settle()
    assert bad.state == State.QUEUED and "internal error" in bad.reason
    assert [j.state for j in others] == [State.RUNNING] * 3
    assert any("internal error in start for job 1" in m for m in w.log.texts())


def test_a_failed_write_keeps_the_job_back_and_is_retried():
    w = World(gpus=1)
    job = w.submit(spec())
    w.recorder.full = True                               # the disk fills before the pass
    w.settle()
    assert job.state == State.QUEUED and job.reason == "waiting: the state directory can't be written"
    assert w.runner.started == [] and w.recorder.dirty == {job.id}
    w.engine.tick()                                      # still full: still dirty, said once
    assert w.recorder.dirty == {job.id}
    assert sum("can't write the status of job 1" in m for m in w.log.texts()) == 1
    w.recorder.full = False
    w.engine.tick()
    assert not w.recorder.dirty and w.recorder.state_of(job.id) == "queued"
    w.settle()
    assert job.state == State.RUNNING
    assert_recorded(w)


def test_accept_on_a_full_disk_keeps_nothing():
    w = World(gpus=1)
    w.recorder.full = True
    with pytest.raises(OSError):
        w.engine.accept(7, spec(), "alice", 1000, 1000, "a.toml", key=(1000, "a.toml", 42))
    assert not w.engine.jobs and w.engine.lookup(1000, "a.toml", 42) == 0 and w.engine.queued_of(1000) == 0


def test_the_time_limit_ends_a_job_and_says_so():
    w = World(gpus=1)
    job = w.submit(spec(time_limit=3600.0))
    w.run_until(EPOCH + 7200)
    assert job.state == State.FAILED and job.signal == "SIGTERM" and job.ended == EPOCH + 3600
    assert job.reason == "killed by SIGTERM (time limit 1h reached)"


def test_expiry_follows_the_clock():
    w = World(gpus=1, cfg=configmod.Config(keep_finished=3600.0), duration=lambda job: 10)
    done, waiting = w.submit(spec("done")), w.submit(spec("waits", gpus=2))
    w.run_until(EPOCH + 20)
    assert done.state == State.SUCCEEDED
    w.clock.advance(1800)
    w.engine.tick()
    assert done.id in w.engine.jobs                      # not an hour old yet
    w.clock.advance(3600)
    w.engine.tick()
    assert done.id not in w.engine.jobs and w.recorder.removed == [done.id]
    assert waiting.id in w.engine.jobs and waiting.state == State.QUEUED


def test_a_stop_during_a_bus_outage_is_sent_again():
    w = World(gpus=1)
    job = w.submit(spec())
    w.settle()
    real_stop = w.runner.stop

    def down(unit):
        raise SystemdUnavailable("reconnecting")
    w.runner.stop = down
    assert w.engine.cancel(job, ROOT) == "stopping" and job.state == State.STOPPING
    w.engine.tick()
    assert w.runner.stopped == []
    w.runner.stop = real_stop
    w.engine.tick()
    assert w.runner.stopped == [job.unit]
    w.run_until(w.clock.time())
    assert job.state == State.CANCELLED


def test_the_door_refuses_a_move_lifecycle_does_not_allow():
    w = World(gpus=1)
    job = w.submit(spec())
    from gpusched import lifecycle
    with pytest.raises(TransitionError):
        w.engine.apply(job, lifecycle.running)
    assert job.state == State.QUEUED and w.recorder.state_of(job.id) == "queued"


def test_unknown_user_at_start():
    """The start of a job whose user was deleted: today a queued job can't go straight to failed
    (lifecycle.ALLOWED), so it stays queued and each pass logs an internal error (kept as it was; see the
    report of the split)."""
    w = World(gpus=1)
    job = w.submit(spec())
    w.runner.accounts[job.uid] = None
    w.settle()
    assert job.state == State.QUEUED
    assert any("internal error in start" in m for m in w.log.texts())


def test_the_simulator_loop_runs_many_jobs_on_a_virtual_clock():
    w = World(gpus=8, duration=lambda job: 60.0 * (job.id % 7 + 1), keep_records=False)
    jobs = [w.submit(spec(f"j{i}", gpus=1 + i % 3)) for i in range(300)]
    w.run_until(EPOCH + 10 * 86400)
    assert all(j.state == State.SUCCEEDED for j in jobs)
    assert isinstance(w.runner, FakeRunner) and isinstance(w.recorder, MemoryRecorder)


def test_the_engine_and_its_fakes_load_no_glib_and_no_dbus():
    code = ("import sys, gpusched.engine, gpusched.testing; "
            "print(sorted(m for m in ('gi', 'pydbus') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


def test_a_class_default_time_limit_is_enforced_at_launch():
    w = World(gpus=1, cfg=CLASSES)                      # debug: default_time_limit 2h; the job runs for ever
    job = w.submit(spec("dbg", job_class="debug"))
    w.settle()
    assert job.state == State.RUNNING and job.spec.time_limit == 7200
    w.run_until(w.clock.time() + 7200)
    assert job.state == State.FAILED and "time limit 2h reached" in job.reason


def test_two_users_with_equal_shares_and_a_backlog_get_half_the_gpu_time_each():
    w = World(gpus=4, duration=lambda job: 1800)
    for i in range(200):                                # a day's worth each and more, submitted at once
        w.submit(spec(f"a{i}", time_limit=3600), uid=1000)
    for i in range(200):
        w.submit(spec(f"b{i}", time_limit=3600), uid=1001)
    w.run_until(w.clock.time() + 86400)
    held = {u: w.engine.ledger.value(u, w.clock.time()) for u in ("user1000", "user1001")}
    share = held["user1000"] / sum(held.values())
    assert 0.45 <= share <= 0.55, held
    done = {uid: sum(1 for j in w.engine.jobs.values() if j.uid == uid and j.state == State.SUCCEEDED)
            for uid in (1000, 1001)}
    assert 0.45 <= done[1000] / sum(done.values()) <= 0.55, done


def test_fair_share_favours_the_user_below_their_share():
    """User 1000 used the GPUs all morning; when both queue, user 1001's job goes first."""
    w = World(gpus=1, duration=lambda job: 3600)
    w.submit(spec("morning", time_limit=7200), uid=1000)
    w.run_until(w.clock.time() + 4 * 3600)
    a = w.submit(spec("a", time_limit=7200), uid=1000)
    blocker = w.submit(spec("blocker", time_limit=7200), uid=1002)
    w.settle()
    assert blocker.state == State.RUNNING
    b = w.submit(spec("b", time_limit=7200), uid=1001)
    w.run_until(w.clock.time() + 3600)                  # the blocker ends: one GPU, two waiting
    assert b.state == State.RUNNING and a.state == State.QUEUED


def test_the_ledger_is_rebuilt_from_the_histories_after_a_restart():
    w = World(gpus=2, duration=lambda job: 3600)
    w.submit(spec("a", gpus=2), uid=1000)
    w.run_until(w.clock.time() + 7200)
    before = w.engine.ledger.value("user1000", w.clock.time())
    assert before > 0
    w2 = World(gpus=2, recorder=w.recorder, clock=w.clock)
    assert w2.engine.ledger.value("user1000", w.clock.time()) == pytest.approx(before)


def test_a_short_job_is_backfilled_while_a_wide_job_holds_a_reservation_and_the_wide_one_is_not_delayed():
    w = World(gpus=4, duration=lambda job: job.spec.time_limit)      # every job runs to its limit
    long = w.submit(spec("long", gpus=2, time_limit=4 * 3600), uid=1000)
    w.submit(spec("mid", gpus=1, time_limit=2 * 3600), uid=1000)
    w.settle()
    t0 = w.clock.time()
    wide = w.submit(spec("wide", gpus=4, time_limit=3600), uid=1001)
    w.settle()
    assert wide.state == State.QUEUED
    assert "expected to start by" in wide.reason and "(backfill plan)" in wide.reason
    late = w.submit(spec("late", gpus=1, time_limit=8 * 3600), uid=1002)   # would delay the wide job: waits
    w.settle()
    assert late.state == State.QUEUED and f"reserved for job {wide.id}" in late.reason
    short = w.submit(spec("short", gpus=1, time_limit=3600), uid=1002)     # ends before long does: backfilled
    w.settle()
    assert short.state == State.RUNNING and late.state == State.QUEUED
    w.run_until(t0 + 4 * 3600)
    assert wide.state == State.RUNNING and wide.started == t0 + 4 * 3600 == long.ended


def test_two_sharing_jobs_with_gpu_memory_share_one_gpu():
    w = World(gpus=1)                                   # 80 GiB
    a = w.submit(spec("a", gpu_memory=30 << 30, share=True, time_limit=3600), uid=1000)
    b = w.submit(spec("b", gpu_memory=30 << 30, share=True, time_limit=3600), uid=1001)
    c = w.submit(spec("c", gpu_memory=30 << 30, share=True, time_limit=3600), uid=1002)   # 90 GiB: no room
    w.settle()
    assert a.state == b.state == State.RUNNING and c.state == State.QUEUED
    assert [g.index for g in a.gpus] == [g.index for g in b.gpus] == [0]
    alone = w.submit(spec("alone", time_limit=3600), uid=1003)   # not sharing: never on a shared GPU
    w.settle()
    assert alone.state == State.QUEUED


def test_a_pass_reuses_the_requests_of_jobs_that_did_not_change():
    w = World(gpus=1)
    w.submit(spec("hold"))
    jobs = [w.submit(spec(f"q{i}")) for i in range(5)]
    w.settle()
    first = {j.id: w.engine._requests[j.id][0] for j in jobs}
    w.engine.schedule()
    assert all(w.engine._requests[j.id][0] is first[j.id] for j in jobs)
    w.engine.cancel(jobs[0], ROOT)
    assert jobs[0].id not in w.engine._requests


def test_show_explains_a_waiting_job_its_class_its_users_standing_and_what_is_ahead():
    w = World(gpus=1, duration=lambda job: 3600)
    w.submit(spec("morning", time_limit=7200), uid=1000)
    w.run_until(w.clock.time() + 4 * 3600)               # user 1000 has used the GPU; user 1001 hasn't
    blocker = w.submit(spec("blocker", time_limit=7200), uid=1002)
    w.settle()
    assert blocker.state == State.RUNNING
    a = w.submit(spec("a", time_limit=7200), uid=1000)
    b = w.submit(spec("b", time_limit=7200), uid=1001)
    w.settle()
    first, second = w.engine.explain(b), w.engine.explain(a)
    assert first["ahead"] == "none: it is first in line" and "class" not in first   # no classes configured
    assert second["ahead"] == f"1 job(s): {b.id}"          # below-share user 1001 first
    assert "above" in second["fair_share"] and "user1000" in second["fair_share"]
    assert w.engine.explain(blocker) == {}                 # only a waiting job is explained
    many = [w.submit(spec(f"m{i}", time_limit=7200), uid=1003) for i in range(30)]
    w.settle()
    last = w.engine.explain(many[-1])["ahead"]
    # b and the 29 earlier jobs of user 1003; a (user 1000, above their share) comes after all of them
    assert last.startswith(f"30 job(s): {b.id}, ") and last.endswith(" and 10 more"), last
    assert f" {a.id}," not in last


def test_a_job_without_a_limit_after_runs_of_its_name_gets_an_estimate_and_runs():
    """The engine keeps a user's latest run times per job name in a deque; the estimate must read it (a pass
    once failed on every job of such a user: a deque can't be sliced)."""
    w = World(gpus=1, duration=lambda job: 60)
    for _ in range(3):
        job = w.submit(spec("probe"))
        w.run_until(w.clock.time() + 120)
        assert job.state == State.SUCCEEDED
    again = w.submit(spec("probe"))
    w.settle()
    assert again.state == State.RUNNING
    assert w.engine.estimate(again) is not None


def test_a_job_whose_policy_inputs_fail_waits_alone(monkeypatch):
    from gpusched.policy import inputs
    w = World(gpus=2)
    bad = w.submit(spec("bad"))
    real = inputs.request

    def broken(job, **kw):
        if job.id == bad.id:
            raise TypeError("a bug in building one job's request")
        return real(job, **kw)
    monkeypatch.setattr(inputs, "request", broken)
    good = w.submit(spec("good"))
    w.settle()
    w.engine.schedule()
    assert good.state == State.RUNNING and bad.state == State.QUEUED
    said = [m for m, _, _ in w.log.lines if "policy's view of job" in m]
    assert len(said) == 1 and f"job {bad.id}" in said[0]            # once, not every pass


def test_while_jobs_wait_a_pass_comes_at_least_every_time_pass_seconds_without_an_event():
    from gpusched.engine import TIME_PASS
    w = World(gpus=1, duration=lambda job: 3600)
    w.submit(spec("long", time_limit=7200))
    w.settle()
    w.engine.tick()
    assert w.wakes == 0                                  # nothing waits: no pass for time's sake
    w.submit(spec("waiting", time_limit=7200))
    w.settle()
    w.clock.advance(TIME_PASS - 1)
    w.engine.tick()
    assert w.wakes == 0
    w.clock.advance(2)
    w.engine.tick()
    assert w.wakes == 1
