"""Issue 9's job lifecycle on the engine with fakes: dependencies (and their cascade), singleton, hold and
release, requeue, retries with backoff, drain and pause. The rules alone are in tests/test_dependencies.py."""

from __future__ import annotations

import pytest

from gpusched import config as configmod
from gpusched.access import Caller
from gpusched.errors import Invalid, NotAllowed
from gpusched.jobfile import JobSpec
from gpusched.model import State
from gpusched.testing import EPOCH, MemoryRecorder, World

ROOT = Caller(0, True)
OWNER = Caller(1000, False)


def spec(name="train", gpus=1, **kw) -> JobSpec:
    return JobSpec(command="python train.py", name=name, gpus=gpus, **kw)


def test_after_ok_waits_then_starts_and_a_failure_cascades_to_every_dependent():
    w = World(gpus=4, duration=lambda job: 60, exit_code=lambda job: 1 if job.spec.name == "prep" else 0)
    prep = w.submit(spec("prep"))
    train = w.submit(spec("train", after_ok=("prep",)))        # by name: the owner's latest "prep"
    evaluate = w.submit(spec("eval", after_ok=(train.id,)))   # by id
    cleanup = w.submit(spec("cleanup", after=(train.id,)))    # any outcome
    report = w.submit(spec("report", after_notok=(prep.id,)))
    w.settle()
    assert prep.state == State.RUNNING and train.state == State.QUEUED
    assert train.reason == f"waiting for job {prep.id} to succeed (after_ok)"
    w.run_until(EPOCH + 61)
    assert prep.state == State.FAILED
    assert train.state == evaluate.state == State.DEPENDENCY_FAILED
    assert f"job {prep.id} failed" in train.reason and f"job {train.id} dependency_failed" in evaluate.reason
    w.run_until(EPOCH + 200)
    assert cleanup.state == State.SUCCEEDED and report.state == State.SUCCEEDED   # ran: their rule was met
    assert w.recorder.state_of(evaluate.id) == State.DEPENDENCY_FAILED


def test_a_dependency_that_does_not_exist_or_is_another_users_fails_at_once():
    w = World(gpus=2)
    other = w.submit(spec("theirs"), uid=2000)
    missing = w.submit(spec("a", after=(999,)))
    foreign = w.submit(spec("b", after_ok=(other.id,)))
    unnamed = w.submit(spec("c", after=("nosuch",)))
    w.settle()
    for job, text in ((missing, "'999'"), (foreign, f"'{other.id}'"), (unnamed, "'nosuch'")):
        assert job.state == State.DEPENDENCY_FAILED and text in job.reason and "no such job of yours" in job.reason
    root_job = w.submit(spec("d", after=(other.id,)), uid=0, user="root")   # root's files may name anyone's
    assert root_job.after == (("after", other.id, str(other.id)),)


def test_dependencies_survive_a_restart_resolved_as_they_were():
    rec = MemoryRecorder()
    w = World(gpus=1, recorder=rec)
    first = w.submit(spec("prep"))
    second = w.submit(spec("train", after_ok=("prep",)))
    w.submit(spec("prep"))                                     # a newer "prep": train still means the first
    again = World(gpus=1, recorder=rec)
    assert again.engine.jobs[second.id].after == (("after_ok", first.id, "prep"),)


def test_singleton_runs_one_job_of_a_name_at_a_time():
    w = World(gpus=4, duration=lambda job: 100)
    a = w.submit(spec("sweep", singleton=True))
    b = w.submit(spec("sweep", singleton=True))
    c = w.submit(spec("sweep", singleton=True), uid=2000)     # another user's: not the same singleton
    w.settle()
    assert a.state == State.RUNNING and c.state == State.RUNNING and b.state == State.QUEUED
    assert b.reason == f"singleton: job {a.id} of the same name goes first"
    w.run_until(EPOCH + 101)
    assert a.state == State.SUCCEEDED and b.state == State.RUNNING


def test_hold_and_release_and_who_may_release():
    w = World(gpus=2)
    held = w.submit(spec(hold=True))
    w.settle()
    assert held.state == State.QUEUED and held.held == "user1000" and "release" in held.reason
    assert w.engine.release(held, OWNER, admin=False) == "released"
    w.settle()
    assert held.state == State.RUNNING
    with pytest.raises(Invalid, match="only a queued job can be held"):
        w.engine.hold(held, OWNER)
    queued = w.submit(spec(gpus=2))
    assert w.engine.hold(queued, ROOT) == "held" and queued.held == "root"
    with pytest.raises(NotAllowed, match="held by root; only an admin"):
        w.engine.release(queued, OWNER, admin=False)
    assert w.recorder.records[queued.id][0]["held"] == "root"               # durable
    w.engine.release(queued, ROOT, admin=True)
    assert queued.held == ""


def test_requeue_stops_a_running_job_and_queues_it_again_without_counting_a_preemption():
    w = World(gpus=1, duration=lambda job: 1000)
    job = w.submit(spec())
    w.settle()
    assert w.engine.requeue(job, OWNER).startswith("stopping")
    w.run_until(w.clock.time())
    assert job.attempt == 2 and job.state == State.RUNNING and job.preemptions == 0
    assert job.history[0]["requeued"] is True and job.history[0]["outcome"] == "killed by SIGTERM"
    assert sum(t.startswith(f"stopping job {job.id}: requeued by ") for t in w.log.texts()) == 1


def test_retries_back_off_exponentially_only_for_listed_exit_codes_and_keep_each_attempt():
    cfg = configmod.Config(retry_backoff=10.0, retry_backoff_max=25.0)
    codes = iter([3, 3, 3, 3])
    w = World(gpus=1, cfg=cfg, duration=lambda job: 5, exit_code=lambda job: next(codes))
    job = w.submit(spec(retries=3, retry_on=(3,)))
    w.settle()
    starts = []
    for _ in range(200):                       # one tick a second, as the daemon's loop
        if job.state == State.RUNNING and (not starts or starts[-1] != job.started):
            starts.append(job.started)
        if job.state in (State.FAILED, State.SUCCEEDED):
            break
        w.run_until(w.clock.time() + 1)
        w.engine.tick()
    # attempt 1 at 0, ends at 5; retry after 10 s; attempt 2 at ~15, ends 20, after 20 s; attempt 3 ends
    # 45+, after min(40, 25) = 25 s; attempt 4 fails for good
    assert job.state == State.FAILED and job.attempt == 4 and job.retried == 3
    assert [h.get("retried", False) for h in job.history] == [True, True, True, False]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert [round(g) for g in gaps] == [15, 25, 30], (starts, gaps)


def test_retry_on_other_codes_and_setup_errors_are_not_retried():
    w = World(gpus=1, duration=lambda job: 5, exit_code=lambda job: 2)
    job = w.submit(spec(retries=3, retry_on=(3,)))
    w.run_until(EPOCH + 6)
    assert job.state == State.FAILED and job.retried == 0
    from gpusched.dependencies import retry_delay
    assert retry_delay(job, {"exit_code": 127, "error": "cannot run x"}, 10, 60) is None


def test_drain_starts_nothing_until_resume_and_is_kept_across_a_restart():
    rec = MemoryRecorder()
    w = World(gpus=2, recorder=rec)
    assert w.engine.drain(ROOT, True) == "draining"
    job = w.submit(spec())
    w.settle()
    assert job.state == State.QUEUED and "draining" in job.reason and "draining" in w.engine.status_line()
    again = World(gpus=2, recorder=rec)
    assert again.engine.draining == "root"
    again.engine.drain(ROOT, False)
    again.settle()
    assert again.engine.jobs[job.id].state == State.RUNNING


def test_pause_holds_back_one_users_jobs_only():
    w = World(gpus=2)
    w.engine.pause("user1000", ROOT, True)
    mine, theirs = w.submit(spec()), w.submit(spec(), uid=2000)
    w.settle()
    assert mine.state == State.QUEUED and "paused by root" in mine.reason and theirs.state == State.RUNNING
    w.engine.pause("user1000", ROOT, False)
    w.settle()
    assert mine.state == State.RUNNING
    with pytest.raises(Invalid, match="not paused"):
        w.engine.pause("user1000", ROOT, False)


def test_a_pass_looks_at_a_jobs_dependencies_again_only_when_one_of_them_ended(monkeypatch):
    from gpusched import dependencies
    calls = []
    real = dependencies.check
    monkeypatch.setattr(dependencies, "check", lambda deps, state_of: calls.append(1) or real(deps, state_of))
    w = World(gpus=1, duration=lambda job: 100)
    first = w.submit(spec("prep"))
    waiting = [w.submit(spec(f"dep{i}", after=tuple(range(1, first.id + 1)))) for i in range(3)]
    w.settle()
    n = len(calls)
    assert n == 3 and all(j.reason == f"waiting for job {first.id} to end (after)" for j in waiting)
    for _ in range(5):                          # passes with nothing ended: no dependency looked at again
        w.engine.schedule()
    assert len(calls) == n
    w.run_until(EPOCH + 101)                    # prep ended: each dependent's verdict is taken again, once
    assert len(calls) == n + 3 and sum(j.state == State.RUNNING for j in waiting) == 1


def test_a_met_dependency_is_kept_while_its_dependent_waits_and_not_needed_again_after_a_start():
    cfg = configmod.Config(keep_finished=3600.0)
    w = World(gpus=1, cfg=cfg, duration=lambda job: 10)
    prep = w.submit(spec("prep"))
    held = w.submit(spec("train", after_ok=(prep.id,), hold=True))   # met, but held past keep_finished
    later = w.submit(spec("eval", after_ok=(prep.id,)))
    w.run_until(EPOCH + 20)
    assert prep.state == State.SUCCEEDED and later.state == State.SUCCEEDED and later.deps_met
    w.run_until(EPOCH + 3 * 3600)
    w.engine.expire()
    w.engine.expire_batch()
    assert prep.id in w.engine.jobs                      # the held job still depends on it: kept
    assert later.id not in w.engine.jobs                 # finished and depended on by nothing: expired
    w.engine.release(held, OWNER, admin=False)
    w.settle()
    assert held.state == State.RUNNING and held.deps_met
    w.engine.requeue(held, OWNER)
    w.run_until(w.clock.time() + 1)
    w.engine.expire()
    w.engine.expire_batch()
    assert prep.id not in w.engine.jobs                  # nothing waits on it any more
    w.settle()
    assert held.state == State.RUNNING and held.attempt == 2   # its dependency isn't asked for again
    assert w.recorder.records[held.id][0]["deps_met"] is True  # durable: a restart doesn't ask either


def test_requeue_with_hold_comes_back_held_by_the_caller_and_a_cancel_meanwhile_drops_the_hold():
    w = World(gpus=1, duration=lambda job: 1000)
    job = w.submit(spec(), user=OWNER.name)
    w.settle()
    assert w.engine.requeue(job, OWNER, hold=True) == "stopping; requeued and held when it has stopped"
    w.run_until(w.clock.time())
    assert job.state == State.QUEUED and job.held == OWNER.name and job.attempt == 1
    assert "release" in job.reason and w.recorder.records[job.id][0]["held"] == OWNER.name
    w.engine.release(job, OWNER, admin=False)
    w.settle()
    assert job.state == State.RUNNING and job.attempt == 2
    w.engine.requeue(job, ROOT, hold=True)
    w.engine.cancel(job, OWNER)                       # changed their mind: cancelled, not held
    w.run_until(w.clock.time())
    assert job.state == State.CANCELLED and job.held == ""


# --- what a red-team of these verbs found (2026-11-24) ---------------------------------------------------

ADMIN = Caller(0, True)


@pytest.mark.parametrize("verb", ["cancel", "requeue", "requeue-hold"])
def test_a_job_stopped_before_it_began_is_cancelled_or_requeued_without_an_attempt(verb):
    w = World(gpus=1, duration=lambda job: 1000)
    job = w.submit(spec(), user=OWNER.name)
    w.settle()
    if verb == "cancel":
        w.engine.cancel(job, OWNER)
    else:
        w.engine.requeue(job, OWNER, hold=verb == "requeue-hold")
    w.engine.finish(job, {"not_started": True})     # its monitor never let it begin (the scope was stopped first)
    assert job.attempt == 0 and job.gpus == () and "never began" in job.reason
    if verb == "cancel":
        assert job.state == State.CANCELLED and job.ended is not None
    else:
        assert job.state == State.QUEUED and bool(job.held) == (verb == "requeue-hold")


def test_a_job_whose_reconciliation_fails_does_not_stop_the_tick_for_the_others():
    w = World(gpus=2, duration=lambda job: 10)
    bad, good = w.submit(spec("bad")), w.submit(spec("good"))
    w.settle()
    real = w.runner.observe
    w.runner.observe = lambda job: (_ for _ in ()).throw(KeyError("odd")) if job.id == bad.id else real(job)
    w.runner.watched = lambda: set()                 # as after a restart: the tick reconciles every active job
    w.clock.set(EPOCH + 11)
    w.runner.fire()
    w.engine.tick()
    assert good.state == State.SUCCEEDED and bad.state == State.RUNNING
    w.engine.tick()
    assert sum("internal error reconciling job" in t for t in w.log.texts()) == 1   # said once, not every tick


def test_a_requeued_job_goes_to_the_back_of_the_line_and_requeues_in_a_loop_back_off():
    cfg = configmod.Config(retry_backoff=10.0, retry_backoff_max=25.0)
    w = World(gpus=1, cfg=cfg, duration=lambda job: 1000)
    job = w.submit(spec(), user=OWNER.name)
    w.settle()
    waits = []
    for _ in range(4):
        w.engine.requeue(job, OWNER)
        t = w.clock.time()
        w.run_until(t)
        waits.append(job.not_before - t if job.state == State.QUEUED else 0.0)
        if job.state == State.QUEUED:
            assert job.queued_since == t and w.engine.request(job).submitted == t   # its age restarts
            assert job.reason.startswith("waiting") and job.not_before > w.clock.time()
            w.clock.set(job.not_before)
            w.engine.tick()                          # the backoff is over: a pass
            w.settle()
        assert job.state == State.RUNNING
    assert waits == [0.0, 10.0, 20.0, 25.0]          # none the first time, then the retries' backoff, capped


def test_an_admins_hold_replaces_the_owners_so_the_owner_cannot_release_it():
    w = World(gpus=1)
    job = w.submit(spec(hold=True), user=OWNER.name)
    assert w.engine.hold(job, OWNER) == "held"
    assert w.engine.hold(job, ADMIN, admin=True) == "held" and job.held == ADMIN.name
    with pytest.raises(NotAllowed):
        w.engine.release(job, OWNER, admin=False)
    assert w.engine.hold(job, OWNER).startswith("held already")   # the owner can't take it back either
    assert job.held == ADMIN.name


def test_a_failure_cascades_down_a_long_chain_in_one_pass():
    w = World(gpus=1, duration=lambda job: 5, exit_code=lambda job: 1)
    first = w.submit(spec("c0"))
    chain = [first]
    for i in range(1, 200):
        chain.append(w.submit(spec(f"c{i}", after_ok=(f"c{i - 1}",))))
    w.run_until(EPOCH + 6)
    assert first.state == State.FAILED
    passes = w.engine.stats["passes"]
    assert all(j.state == State.DEPENDENCY_FAILED for j in chain[1:])
    assert passes <= 4                               # not one pass per link


def test_a_control_file_of_the_wrong_shape_is_said_and_ignored():
    rec = MemoryRecorder()
    rec.control = {"draining": 0, "paused": ["abc"]}
    w = World(recorder=rec)
    assert w.engine.draining == "" and w.engine.paused == {}
    assert any("control file" in t for t in w.log.texts())
