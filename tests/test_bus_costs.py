"""What the bus calls any user may make cost the daemon, which is single-threaded: a call that grows with the
queue, or with what the caller puts in it, stalls everyone else's. These pin the bounds: why and submit
--dry-run (engine.outlook) reuse the pass's dependency verdicts rather than check every job ahead afresh, and
look at no job one by one beyond what the forecast plays; Outcomes looks at each job once however often it
is named."""

from __future__ import annotations

import pytest

from gpusched import answers, callbudget, dependencies
from gpusched import engine as enginemod
from gpusched.access import Access
from gpusched.api import Manager
from gpusched.errors import Busy
from gpusched.jobfile import JobSpec, parse
from gpusched.model import State
from gpusched.policy import forecast
from gpusched.testing import World

# a job file anyone may check (the fakes' users have no account here; nobody has one everywhere)
FILE = 'command = "x"\ngpus = 1\ntime_limit = "1d"\n'
NOBODY = 65534


def spec(name: str, **kw) -> JobSpec:
    return JobSpec(command="x", name=name, **kw)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the dependency checks made afresh (dependencies.check, as the engine calls it)."""
    calls: list[int] = []
    real = dependencies.check

    def check(deps, state_of):
        calls.append(1)
        return real(deps, state_of)
    monkeypatch.setattr(enginemod.dependencies, "check", check)
    return calls


def test_outlook_uses_the_passes_dependency_verdicts_not_a_check_per_job_ahead(monkeypatch):
    # one user's queue of jobs that each wait on up to 192 others made a dry run cost seconds: each job ahead
    # had its dependencies checked afresh on every call
    w = World(gpus=1)
    w.submit(spec("busy", gpus=1, time_limit=86400), uid=NOBODY, user="nobody")
    first = w.submit(spec("first", gpus=1, time_limit=60, hold=True), uid=NOBODY, user="nobody")
    for i in range(50):
        w.submit(spec(f"d{i}", gpus=1, time_limit=60, after_ok=(first.id,)), uid=NOBODY, user="nobody")
    w.settle()
    calls = counting(monkeypatch)
    m = Manager(w.engine, Access())
    d = m.check(NOBODY, "a.toml", FILE)
    assert d["ahead_count"] == 51 and d["expected_start"] is not None     # the same answer...
    assert len(calls) == 0                                                 # ...from the verdicts kept


def test_outlook_still_checks_a_job_whose_verdict_a_dependencys_end_dropped(monkeypatch):
    w = World(gpus=1, duration=lambda job: 10 if job.name == "dep" else None)
    dep = w.submit(spec("dep", gpus=0, time_limit=60), uid=NOBODY, user="nobody")
    w.submit(spec("busy", gpus=1, time_limit=3600), uid=NOBODY, user="nobody")
    waiting = w.submit(spec("w", gpus=1, time_limit=60, after_ok=(dep.id,)), uid=NOBODY, user="nobody")
    w.settle()
    assert "can't be dated" in w.engine.outlook(waiting)["expected_why"]
    w.clock.advance(10)
    w.runner.fire()                                    # dep ends: its dependents' verdicts are dropped...
    calls = counting(monkeypatch)
    o = w.engine.outlook(waiting)                      # ...and worked out afresh before the next pass
    assert len(calls) == 1 and o["expected_start"] == w.clock.time() + 3600 - 10


def test_outlook_beyond_what_the_forecast_plays_looks_at_no_job_ahead(monkeypatch):
    monkeypatch.setattr(forecast, "MAX_AHEAD", 5)
    w = World(gpus=1)
    w.submit(spec("busy", gpus=1, time_limit=86400), uid=NOBODY, user="nobody")
    for i in range(8):
        w.submit(spec(f"q{i}", gpus=1, time_limit=60), uid=NOBODY, user="nobody")
    w.settle()                                         # busy starts, then q0 (no job is running); 7 wait
    looked: list[int] = []
    real = answers.waits_for
    monkeypatch.setattr(answers, "waits_for", lambda e, job, now: looked.append(job.id) or real(e, job, now))
    d = Manager(w.engine, Access()).check(NOBODY, "a.toml", FILE)
    assert d["ahead_count"] == 7 and "too many to play forward" in d["expected_why"]
    assert looked == [0]                               # the checked job itself (id 0), none ahead


def test_outcomes_looks_at_an_array_once_however_often_it_is_named():
    w = World(gpus=0)
    text = b'command = "x {n}"\nname = "s"\ngpus = 0\n[sweep]\nn = [1, 2, 3]\n'
    w.engine.accept_array([1, 2, 3], parse(text, "s.toml", owner_is_root=False), "nobody", NOBODY, NOBODY,
                          "s.toml", data=text)
    m = Manager(w.engine, Access())
    looked: list[int] = []
    real = w.engine.array
    w.engine.array = lambda job: looked.append(job.id) or real(job)
    out = m.outcomes([1, 1, 2, 1, 2])
    assert [o["id"] for o in out] == [1, 2] and out[0]["array"] == 3
    assert looked == [1, 2]


def test_outcomes_stops_at_its_budget_of_jobs_and_answers_the_rest_when_asked_again(monkeypatch):
    monkeypatch.setattr("gpusched.api.MAX_ELEMENTS", 4)
    w = World(gpus=0)
    text = b'command = "x {n}"\nname = "s"\ngpus = 0\n[sweep]\nn = [1, 2, 3]\n'
    for first in (1, 4):
        w.engine.accept_array([first, first + 1, first + 2], parse(text, "s.toml", owner_is_root=False), "nobody",
                              NOBODY, NOBODY, "s.toml", data=text)
    w._next_id = 7
    lone = w.submit(spec("lone", gpus=0), uid=NOBODY, user="nobody")
    m = Manager(w.engine, Access())
    assert [o["id"] for o in m.outcomes([1, 4, lone.id])] == [1]           # 3 jobs, then 6: over 4
    assert [o["id"] for o in m.outcomes([4, lone.id])] == [4, lone.id]      # 3, then 4
    assert [o["id"] for o in m.outcomes([4] * 1000)] == [4]


def test_show_why_and_check_are_refused_once_a_caller_has_spent_its_share_of_the_daemons_time():
    w = World(gpus=1)
    jobs = [w.submit(spec(name, gpus=1, time_limit=60), uid=NOBODY, user="nobody") for name in ("a", "b")]
    w.settle()
    queued = next(j for j in jobs if j.state == State.QUEUED)
    real = w.engine.outlook

    def slow(job):                                     # as at 100,000 queued jobs on a slow machine
        w.clock.advance(0.5)
        return real(job)
    w.engine.outlook = slow
    m = Manager(w.engine, Access())
    answered = 0
    with pytest.raises(Busy, match=r"ask again in \d+ s"):
        for _ in range(20):
            m.why(NOBODY, queued.id)
            answered += 1
    assert 4 <= answered <= 8                          # a burst of about callbudget.BURST seconds
    with pytest.raises(Busy):
        m.check(NOBODY, "a.toml", FILE)                # one budget for all three
    with pytest.raises(Busy):
        m.show(NOBODY, queued.id)
    assert m.why(1000, queued.id)["state"] == "queued"   # another user is not held up
    w.clock.advance(30)                                # the bucket drains at callbudget.RATE
    assert m.why(NOBODY, queued.id)["state"] == "queued"


def test_budget_drains_at_its_rate_and_forgets_drained_callers():
    b = callbudget.Budget(rate=0.5, burst=1.0)
    b.charge(1, 3.0, now=0.0)
    assert b.wait(1, 0.0) == pytest.approx(4.0) and b.wait(2, 0.0) == 0
    assert b.wait(1, 2.0) == pytest.approx(2.0) and b.wait(1, 4.0) == 0
    b.charge(1, -5, now=4.0)                           # a clock that went back charges nothing, refunds nothing
    assert b.wait(1, 4.0) == 0 and b._level(1, 4.0) == pytest.approx(1.0)
    callbudget.MAX_CALLERS, old = 2, callbudget.MAX_CALLERS
    try:
        for uid in range(3):
            b.charge(uid, 0.0, now=100.0)
        assert len(b._owed) <= 2
    finally:
        callbudget.MAX_CALLERS = old
