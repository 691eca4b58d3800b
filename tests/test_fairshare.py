"""Fair share (policy/fairshare.py): decayed usage, standings, and two users splitting the GPUs."""

import math

import pytest

from bench.sim import cluster
from bench.sim.policy_driver import PolicyDriver
from bench.sim.trace import SimJob
from gpusched.config import Config
from gpusched.policy import fairshare
from gpusched.policy.fairshare import Ledger, decay, held, standings

DAY = 86400.0


def test_decay_halves_each_half_life():
    assert decay(100.0, 7 * DAY, 7 * DAY) == pytest.approx(50.0)
    assert decay(100.0, 14 * DAY, 7 * DAY) == pytest.approx(25.0)
    assert decay(100.0, 5.0, 0) == 100.0          # no half-life: no decay
    assert decay(100.0, -5.0, DAY) == 100.0       # time never runs backwards here


def test_held_is_the_integral_so_charging_often_or_once_agrees():
    once = Ledger(DAY)
    once.charge("a", 2, 0.0, 10 * 3600.0)
    often = Ledger(DAY)
    for t in range(0, 10 * 3600, 60):
        often.charge("a", 2, float(t), float(t + 60))
    assert once.value("a", 10 * 3600.0) == pytest.approx(often.value("a", 10 * 3600.0), rel=1e-9)
    # and it is less than the undecayed 20 GPU-hours, by the decay of the early part
    assert 0.8 * 20 * 3600 < once.value("a", 10 * 3600.0) < 20 * 3600
    assert held(2, 0, 100, 100, 0) == 200


def test_ledger_value_decays_between_charges():
    ledger = Ledger(DAY)
    ledger.charge("a", 1, 0.0, 3600.0)
    v = ledger.value("a", 3600.0)
    assert ledger.value("a", 3600.0 + DAY) == pytest.approx(v / 2)
    assert ledger.value("nobody", 5.0) == 0.0


def test_standing_is_usage_fraction_over_share_fraction():
    s = standings({"a": 30.0, "b": 10.0}, ["a", "b"])
    assert s["a"] == (pytest.approx(1.5), 0.0) and s["b"] == (pytest.approx(0.5), 0.0)
    # a share of 3 to 1 makes the same usage exactly fair
    s = standings({"a": 30.0, "b": 10.0}, ["a", "b"], shares={"a": 3})
    assert s["a"][0] == pytest.approx(1.0) and s["b"][0] == pytest.approx(1.0)


def test_nobody_has_used_anything_everyone_is_even():
    assert standings({}, ["a", "b"]) == {"a": (0.0, 0.0), "b": (0.0, 0.0)}


def test_only_the_users_asked_about_compete():
    # c used a lot but waits for nothing now: a and b are compared between themselves
    s = standings({"a": 10.0, "b": 10.0, "c": 1000.0}, ["a", "b"])
    assert s == {"a": (1.0, 0.0), "b": (1.0, 0.0)}


def test_zero_share_ranks_last():
    s = standings({"a": 1.0, "b": 1.0}, ["a", "b"], shares={"b": 0})
    assert math.isinf(s["b"][0]) and s["a"][0] < s["b"][0]


def test_groups_are_compared_before_their_members():
    # group g (share 1) has two heavy members, x (alone, share 1) used less than the group as a whole
    usage = {"g1": 30.0, "g2": 10.0, "x": 20.0}
    s = standings(usage, ["g1", "g2", "x"], group_of={"g1": "g", "g2": "g"}, group_shares={"g": 1})
    assert s["x"][0] < s["g1"][0] == s["g2"][0]
    assert s["g2"][1] < s["g1"][1]          # inside the group, the one who used less first
    assert s["x"][1] == 0.0


def test_describe():
    assert "below" in fairshare.describe((0.5, 0.0))
    assert "above" in fairshare.describe((2.0, 0.0))
    assert "no share" in fairshare.describe((math.inf, 0.0))


def _backlog(users, jobs_each, hours):
    jobs, n = [], 0
    for u, uid in users:
        for _ in range(jobs_each):
            n += 1
            jobs.append(SimJob(id=n, user=u, uid=uid, submit=0.0, duration=hours * 3600, gpus=1, limit=4 * 3600))
            jobs[-1].work = hours * 3600
    return jobs


def _gpu_seconds_until(jobs, user, t_end):
    return sum(max(0.0, min(e, t_end) - s) * g for j in jobs if j.user == user for s, e, g in j.runs)


def test_two_users_with_equal_shares_and_the_same_backlog_get_half_each():
    # alice's jobs all come first (lower ids, same submit time): without fair share she would get every GPU
    # until her backlog is gone
    jobs = _backlog([("alice", 1000), ("bob", 1001)], 60, 1.0)
    cluster.replay(jobs, 4, PolicyDriver(4, Config()))
    window = 10 * 3600.0                       # both have jobs waiting all through it (60 h of work each)
    a, b = _gpu_seconds_until(jobs, "alice", window), _gpu_seconds_until(jobs, "bob", window)
    assert a + b == pytest.approx(4 * window)
    assert 0.45 <= a / (a + b) <= 0.55, (a, b)


def test_without_fair_share_the_first_user_takes_everything():
    # the same backlog with shares 0 for bob: he runs only when alice has nothing waiting (the test above can
    # therefore fail)
    jobs = _backlog([("alice", 1000), ("bob", 1001)], 60, 1.0)
    cluster.replay(jobs, 4, PolicyDriver(4, Config(shares=(("bob", 0.0),))))
    assert _gpu_seconds_until(jobs, "bob", 10 * 3600.0) == 0.0


def test_unequal_shares_split_accordingly():
    jobs = _backlog([("alice", 1000), ("bob", 1001)], 90, 1.0)
    cluster.replay(jobs, 4, PolicyDriver(4, Config(shares=(("alice", 3.0),))))
    window = 20 * 3600.0
    a, b = _gpu_seconds_until(jobs, "alice", window), _gpu_seconds_until(jobs, "bob", window)
    assert 0.70 <= a / (a + b) <= 0.80, (a, b)


def test_a_ledger_rebuilt_from_history_matches_one_charged_as_jobs_ran():
    runs = [("a", 2, 0.0, 5 * 3600.0), ("b", 1, 3600.0, 9 * 3600.0), ("a", 1, 20 * 3600.0, 30 * 3600.0)]
    live = Ledger(DAY)
    for user, gpus, start, end in runs:
        live.charge(user, gpus, start, end)
    now = 40 * 3600.0
    rebuilt = Ledger.rebuild(runs, DAY, now)
    for user in ("a", "b"):
        assert rebuilt.value(user, now) == pytest.approx(live.value(user, now))
    # an attempt still running counts up to now only
    assert Ledger.rebuild([("a", 1, 0.0, 10 * now)], 0, now).value("a", now) == now


def test_runs_of_a_job_from_its_history():
    from gpusched.jobfile import JobSpec
    from gpusched.model import Job, State
    from gpusched.policy import inputs
    job = Job(id=1, user="a", uid=1, source="x", state=State.RUNNING, submitted=0.0,
              spec=JobSpec(command="x", name="x", gpus=2), started=500.0,
              history=[{"attempt": 1, "started": 10.0, "ended": 100.0, "outcome": "preempted"}])
    assert inputs.runs(job, 600.0) == [("a", 2.0, 10.0, 100.0), ("a", 2.0, 500.0, 600.0)]
    job.spec = JobSpec(command="x", name="x", gpus=0)
    assert inputs.runs(job, 600.0) == []
