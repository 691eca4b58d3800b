"""Issue 9's accounting and idle reservations: the rules alone (usage.py), then on the engine with fakes (a
probe whose samples the test sets), the config keys, the records, the API's access rule and gpuschedctl's
--since."""

from __future__ import annotations

import json
import os

import pytest

from gpusched import config as configmod
from gpusched import gpus as gpusmod
from gpusched import usage
from gpusched.access import Access
from gpusched.api import Manager
from gpusched.ctl.common import CtlError, parse_since, usage_value
from gpusched.errors import Invalid, NotAllowed
from gpusched.jobfile import JobSpec
from gpusched.listing import row
from gpusched.model import Job, State, job_from_dict, job_to_dict
from gpusched.testing import EPOCH, MemoryRecorder, World
from gpusched.usage import GpuSample, Meter, Tally

BUSY, IDLE = GpuSample(90.0, 10 << 30, None), GpuSample(0.0, 1 << 30, None)


# --- the meter, alone ---------------------------------------------------------------------------------------

def test_utilisation_is_integrated_over_time_and_the_first_sample_only_sets_the_baseline():
    m = Meter()
    holders = {0: [(7, 0.0)], 1: [(7, 0.0)]}
    m.observe(100.0, {0: GpuSample(50.0), 1: GpuSample(100.0)}, holders)
    assert m.tallies[7].used == 0.0                          # nothing to integrate against yet
    m.observe(102.0, {0: GpuSample(50.0), 1: GpuSample(100.0)}, holders)
    assert m.tallies[7].used == pytest.approx(0.5 * 2 + 1.0 * 2)
    m.observe(102.0 + usage.MAX_GAP + 1, {0: GpuSample(100.0), 1: GpuSample(100.0)}, holders)
    assert m.tallies[7].used == pytest.approx(3.0)           # a gap (the daemon stalled) is not a guess


def test_energy_is_the_counters_increase_and_a_counter_that_goes_back_is_skipped():
    m = Meter()
    h = {0: [(1, 0.0)]}
    for t, counter in ((10.0, 1000.0), (11.0, 1300.0), (12.0, 1500.0), (13.0, 20.0), (14.0, 120.0)):
        m.observe(t, {0: GpuSample(10.0, None, counter)}, h)
    assert m.tallies[1].energy == pytest.approx(300 + 200 + 100)
    assert m.tallies[1].energy_seen and not m.tallies[1].estimated


def test_a_shared_gpu_is_split_by_gpu_memory_reservation_and_marked_estimated():
    m = Meter()
    h = {0: [(1, 30.0), (2, 10.0)], 1: [(3, 0.0)]}
    for t, counter in ((0.0, 0.0), (1.0, 400.0)):
        m.observe(t, {0: GpuSample(100.0, 50 << 30, counter), 1: GpuSample(100.0, 5 << 30, counter)}, h)
    assert m.tallies[1].energy == pytest.approx(300) and m.tallies[2].energy == pytest.approx(100)
    assert m.tallies[1].used == pytest.approx(0.75) and m.tallies[2].used == pytest.approx(0.25)
    assert m.tallies[1].estimated and m.tallies[2].estimated and not m.tallies[3].estimated
    assert m.tallies[3].energy == pytest.approx(400) and m.tallies[3].memory_peak == 5 << 30
    assert usage.split([(1, 0.0), (2, 10.0)]) == {1: 0.5, 2: 0.5}     # one without a reservation: equal parts


def test_the_idle_timer_needs_every_gpu_idle_and_unknown_is_not_idle():
    m = Meter(idle_percent=5.0)
    h = {0: [(1, 0.0)], 1: [(1, 0.0)]}
    m.observe(1.0, {0: IDLE, 1: BUSY}, h)
    assert m.tallies[1].idle_since is None
    m.observe(2.0, {0: IDLE, 1: GpuSample(5.0)}, h)          # at the threshold counts as idle
    m.observe(3.0, {0: IDLE, 1: IDLE}, h)
    assert m.tallies[1].idle_since == 2.0
    m.observe(4.0, {0: IDLE}, h)                             # GPU 1 unknown: the timer stops
    assert m.tallies[1].idle_since is None
    m.observe(5.0, {0: IDLE, 1: IDLE}, h)
    assert m.tallies[1].idle_since == 5.0


def test_take_restarts_the_counts_but_keeps_the_idle_timer_and_the_peak():
    m = Meter()
    h = {0: [(1, 0.0)]}
    m.observe(0.0, {0: IDLE}, h)
    m.observe(1.0, {0: GpuSample(0.0, 3 << 30, None)}, h)
    first = m.take(1)
    assert first.memory_peak == 3 << 30
    assert m.tallies[1].idle_since == 0.0 and m.tallies[1].used == 0.0 and m.tallies[1].memory_peak == 3 << 30
    assert m.forget(1).idle_since == 0.0 and 1 not in m.tallies


def test_fold_adds_up_and_reserved_is_exact_from_the_attempts():
    history = [{"started": 0.0, "ended": 3600.0, "gpus": [0, 1]}, {"started": 4000.0, "ended": 4100.0}]
    assert usage.reserved_seconds(history, 1, 5000.0, 5000.0 + 1800) == 2 * 3600 + 1800
    u = usage.fold({}, Tally(used=1800.0, memory_peak=5), 3600.0)
    assert u == {"gpu_hours_reserved": 1.0, "gpu_hours_used": 0.5, "gpu_memory_peak": 5}   # no energy counter
    u = usage.fold(u, Tally(used=1800.0, energy=10.0, energy_seen=True, estimated=True, memory_peak=3), 7200.0)
    assert u["gpu_hours_used"] == 1.0 and u["gpu_hours_reserved"] == 2.0 and u["gpu_memory_peak"] == 5
    assert u["energy_joules"] == 10.0 and u["energy_estimated"] is True


# --- on the engine ----------------------------------------------------------------------------------------------

def world(**cfg) -> World:
    w = World(gpus=2, cfg=configmod.Config(**cfg))
    w.probe.usage = {}
    return w


def run_for(w: World, seconds: int, samples: dict[int, GpuSample]) -> None:
    w.probe.usage = samples
    for _ in range(seconds):
        w.clock.advance(1)
        w.engine.tick()
        w.runner.fire()                                   # a stopped job's monitor reports its end
        w.settle()


def spec(**kw) -> JobSpec:
    kw.setdefault("gpus", 1)
    return JobSpec(command="python train.py", name=kw.pop("name", "train"), **kw)


def test_a_job_whose_gpus_stay_idle_is_flagged_once_and_unflagged_when_busy_again():
    w = world(idle_after=60.0)
    job = w.submit(spec(gpus=2))
    w.settle()
    assert job.state == State.RUNNING
    run_for(w, 30, {0: BUSY, 1: BUSY})
    run_for(w, 50, {0: IDLE, 1: BUSY})                 # one GPU busy: not idle
    run_for(w, 50, {0: IDLE, 1: IDLE})
    assert "idle_since" not in job.usage
    run_for(w, 15, {0: IDLE, 1: IDLE})
    assert job.state == State.RUNNING and job.usage["idle_since"] is not None
    assert job.reason.startswith("idle: its GPUs (0,1) at or under 5% utilisation since") and "idle:" in row(job)
    run_for(w, 100, {0: IDLE, 1: IDLE})
    lines = [t for t in w.log.texts() if f"job {job.id} idle" in t]
    assert len(lines) == 1 and "for 1m" in lines[0], lines            # one line, not one per sample
    assert w.recorder.records[job.id][0]["usage"]["idle_since"]       # in its status file
    run_for(w, 2, {0: BUSY, 1: IDLE})
    assert "idle_since" not in job.usage and job.reason == "" and job.state == State.RUNNING
    assert any(f"job {job.id} is using its GPUs again" in t for t in w.log.texts())


def test_idle_action_stop_cancels_it_through_the_door_and_never_requeues_it():
    w = world(idle_after=30.0, idle_action="stop")
    job = w.submit(spec(resumable=True))                 # preemptible and resumable: still not requeued
    w.settle()
    run_for(w, 40, {0: IDLE, 1: IDLE})
    assert job.state == State.CANCELLED, job.reason
    assert job.reason.startswith('stopped: its GPUs were idle for 30s (idle_after 30s, idle_action = "stop")')
    assert job.usage["gpu_hours_reserved"] > 0 and "idle_since" not in job.usage
    run_for(w, 5, {})
    assert job.attempt == 1 and job.state == State.CANCELLED
    assert any("stopping it" in t for t in w.log.texts())


def test_idle_detection_is_off_by_default_and_without_samples():
    w = world()
    job = w.submit(spec())
    w.settle()
    run_for(w, 600, {0: IDLE, 1: IDLE})
    assert job.state == State.RUNNING and "idle_since" not in job.usage
    w = world(idle_after=10.0, idle_action="stop")
    job = w.submit(spec())
    w.settle()
    run_for(w, 60, {})                                   # no samples (utilisation unknown): never stopped
    assert job.state == State.RUNNING


def test_a_finished_job_has_its_accounting_and_a_running_one_gets_it_now_and_then():
    w = world()
    job = w.submit(spec(gpus=2))
    w.settle()
    run_for(w, 1, {0: GpuSample(50.0, 2 << 30, 0.0), 1: GpuSample(50.0, 4 << 30, 0.0)})
    for t in range(1, 120):
        run_for(w, 1, {0: GpuSample(50.0, 2 << 30, 300.0 * t), 1: GpuSample(50.0, 4 << 30, 100.0 * t)})
    on_disk = w.recorder.records[job.id][0]["usage"]     # folded at least once while running
    assert 0 < on_disk["gpu_hours_used"] < job_to_dict(job)["usage"]["gpu_hours_used"] + 1
    w.engine.cancel(job, Access().caller(0))
    w.runner.fire()
    assert job.state == State.CANCELLED
    u = w.recorder.records[job.id][0]["usage"]
    held = job.ended - job.started
    assert u["gpu_hours_reserved"] == pytest.approx(2 * held / 3600, abs=1e-5)
    assert u["gpu_hours_used"] == pytest.approx(2 * 0.5 * 119 / 3600, abs=1e-5)
    assert u["energy_joules"] == pytest.approx(400.0 * 119) and "energy_estimated" not in u
    assert u["gpu_memory_peak"] == 4 << 30


def test_jobs_sharing_a_gpu_have_their_energy_split_and_marked_estimated():
    w = World(gpus=1)
    a = w.submit(spec(name="a", share=True, gpu_memory=30 << 30))
    b = w.submit(spec(name="b", share=True, gpu_memory=10 << 30))
    w.settle()
    assert a.state == b.state == State.RUNNING and a.gpus[0].index == b.gpus[0].index == 0
    for t in range(0, 11):
        run_for(w, 1, {0: GpuSample(100.0, 1 << 30, 100.0 * t)})
    for job in (a, b):
        w.engine.cancel(job, Access().caller(0))
    w.runner.fire()
    assert a.usage["energy_joules"] == pytest.approx(750) and b.usage["energy_joules"] == pytest.approx(250)
    assert a.usage["energy_estimated"] and b.usage["energy_estimated"]


def test_a_requeued_job_accounts_every_attempt():
    w = world()
    job = w.submit(spec())
    w.settle()
    run_for(w, 100, {0: BUSY, 1: BUSY})
    w.engine.requeue(job, Access().caller(0))
    w.runner.fire()
    w.settle()
    assert job.state == State.RUNNING and job.attempt == 2
    first = job.usage["gpu_hours_reserved"]
    run_for(w, 100, {0: BUSY, 1: BUSY})
    w.engine.cancel(job, Access().caller(0))
    w.runner.fire()
    assert job.usage["gpu_hours_reserved"] == pytest.approx(first + (job.ended - job.started) / 3600, abs=1e-6)
    # 99 intervals in the first attempt (its first sample is the baseline), 100 in the second: the meter
    # integrates from the previous sample, so a new attempt counts to within a second
    assert job.usage["gpu_hours_used"] == pytest.approx(0.9 * 199 / 3600, abs=1e-6)


def test_usage_survives_a_restart_and_an_old_record_without_it_loads():
    rec = MemoryRecorder()
    w = World(gpus=1, recorder=rec, cfg=configmod.Config(idle_after=5.0))
    w.probe.usage = {}
    job = w.submit(spec())
    w.settle()
    run_for(w, 10, {0: IDLE})
    assert job.usage.get("idle_since")
    d = job_to_dict(job)
    back = job_from_dict(d, job.spec)
    assert back.usage == job.usage                        # idle_since as a time and back
    from gpusched import snapshot
    assert snapshot.decode(json.loads(json.dumps(snapshot.encode(job)))).usage == job.usage   # a clean stop's copy
    old = {k: v for k, v in d.items() if k != "usage"}
    assert job_from_dict(old, job.spec).usage == {}
    w.engine.accounting.meter = usage.Meter()             # the daemon restarted: its meter is new
    run_for(w, 3, {0: IDLE})
    assert w.engine.meter.tallies[job.id].idle_since == job.usage["idle_since"]   # the timer from the record
    assert sum(f"job {job.id} idle" in t for t in w.log.texts()) == 1             # not flagged twice
    run_for(w, 2, {0: BUSY})
    assert "idle_since" not in job.usage                 # and busy unflags it


# --- stats and history ---------------------------------------------------------------------------------------

class _WithCgroup(Job):
    """A record with the cgroup's figures (cpu_seconds, memory_peak), which another part of issue 9 adds."""


def _finished(job_id, user, submitted, started, ended, **u):
    j = _WithCgroup(id=job_id, user=user, uid=1000, source="x", state=State.SUCCEEDED, submitted=submitted,
            started=started, ended=ended, usage=u)
    j.history = [{"attempt": 1, "started": started, "ended": ended, "gpus": [0]}]
    return j


def test_summarize_per_user_with_waits_and_the_period():
    jobs = [_finished(1, "alice", 0.0, 10.0, 100.0, gpu_hours_reserved=1.0, gpu_hours_used=0.5, energy_joules=10.0),
            _finished(2, "alice", 0.0, 30.0, 200.0, gpu_hours_reserved=2.0, gpu_hours_used=1.0,
                      energy_joules=5.0, energy_estimated=True),
            _finished(3, "bob", 0.0, 5.0, 50.0, gpu_hours_reserved=0.5),
            Job(id=4, user="bob", uid=1001, source="y", state=State.REJECTED, submitted=0.0, ended=0.0)]
    jobs[0].cpu_seconds = 12.5        # the cgroup's figures, where the record has them
    rows = usage.summarize(jobs)
    assert [r["user"] for r in rows] == ["alice", "bob"]
    a = rows[0]
    assert (a["jobs"], a["gpu_hours_reserved"], a["gpu_hours_used"], a["energy_joules"]) == (2, 3.0, 1.5, 15.0)
    assert a["wait_mean"] == 20.0 and a["wait_max"] == 30.0 and a["energy_estimated"] and a["cpu_seconds"] == 12.5
    assert rows[1]["jobs"] == 1 and "cpu_seconds" not in rows[1]
    assert [r["user"] for r in usage.summarize(jobs, since=150.0)] == ["alice"]
    assert usage.summarize(jobs, since=150.0)[0]["jobs"] == 1


def test_stats_and_history_follow_the_access_rule():
    w = world()
    mine = w.submit(spec(), uid=1000, user="root")
    theirs = w.submit(spec(name="other"), uid=2000, user="nobody-else")
    w.settle()
    run_for(w, 5, {0: BUSY, 1: BUSY})
    for job in (mine, theirs):
        w.engine.cancel(job, Access().caller(0))
    w.runner.fire()
    m = Manager(w.engine, Access())
    assert {r["user"] for r in m.usage(0, "", 0.0)} == {"root", "nobody-else"}     # root: everyone
    assert [r["user"] for r in m.usage(0, "root", 0.0)] == ["root"]
    nobody = 65534                                        # a plain user: only their own (none here)
    with pytest.raises(NotAllowed):
        m.usage(nobody, "root", 0.0)
    h = json.loads(m.history(0, "", "", "", 0.0, 100))["ok"]
    assert [j["id"] for j in h["jobs"]] == [mine.id, theirs.id] and h["jobs"][0]["usage"]["gpu_hours_reserved"] > 0
    mine.cpu_seconds, mine.memory_peak = 1.5, 1 << 30
    w.engine.listing.invalidate(mine.id)                  # (set by hand here: no change through the door)
    h = json.loads(m.history(nobody, "root", "", "cancelled", 0.0, 100))["ok"]
    assert [j["id"] for j in h["jobs"]] == [mine.id] and "usage" not in h["jobs"][0]   # public part only
    assert "cpu_seconds" not in h["jobs"][0] and "memory_peak" not in h["jobs"][0]
    assert json.loads(m.history(0, "root", "", "cancelled", 0.0, 100))["ok"]["jobs"][0]["cpu_seconds"] == 1.5
    h = json.loads(m.history(0, "", "", "", 0.0, 1))["ok"]
    assert [j["id"] for j in h["jobs"]] == [theirs.id] and h["more"] == 1
    with pytest.raises(Invalid):
        m.history(0, "", "", "running", 0.0, 10)


# --- config, the hook, gpuschedctl --------------------------------------------------------------------------

def test_config_keys_are_validated():
    c = configmod.parse('idle_after = "30m"\nidle_action = "stop"\nidle_threshold = 2.5\n')
    assert (c.idle_after, c.idle_action, c.idle_threshold) == (1800.0, "stop", 2.5)
    assert configmod.Config().idle_after == 0.0 and configmod.Config().idle_action == "flag"
    assert configmod.parse('idle_after = 0\n').idle_after == configmod.parse('idle_after = "0"\n').idle_after == 0.0
    for text, key in (('idle_action = "kill"', "idle_action"), ('idle_after = "soon"', "idle_after"),
                      ("idle_threshold = 100", "idle_threshold"), ("idle_after = 0.5", "idle_after"),
                      ("idle_after = false", "idle_after"), ("idle_threshold = true", "idle_threshold")):
        with pytest.raises(configmod.ConfigError, match=f":1: {key}:"):
            configmod.parse(text + "\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the hook file must be root's")
def test_the_simulated_usage_hook_is_read_only_from_a_root_only_file(tmp_path):
    path = tmp_path / "usage"
    path.write_text("0 100 20G 300\n1 0\n2 bad\n7 50 1G 99999999\n# comment\n")
    os.chmod(path, 0o644)
    assert gpusmod.read_simulated_usage(str(path)) == {0: (100.0, 20 << 30, 300.0), 1: (0.0, None, None)}
    os.chmod(path, 0o666)                                 # anyone could write it: ignored
    assert gpusmod.read_simulated_usage(str(path)) == {}
    assert gpusmod.read_simulated_usage(str(tmp_path / "absent")) == {}


def test_the_simulated_energy_counter_grows_at_the_hooks_power(monkeypatch, tmp_path):
    probe = gpusmod.SimulatedGpus([configmod.SimulatedGpu("g", 1 << 30)] * 2)
    clock = [100.0]
    monkeypatch.setattr(gpusmod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(gpusmod, "read_simulated_usage", lambda path: {0: (80.0, 5, 200.0)})
    first = probe.sample([0, 1])
    clock[0] = 102.5
    second = probe.sample([0, 1])
    assert 1 not in first and first[0].utilization == 80.0 and first[0].memory_used == 5
    assert second[0].energy - first[0].energy == pytest.approx(500.0)


def test_since_is_a_duration_back_or_a_date():
    now = EPOCH
    assert parse_since("7d", now) == now - 7 * 86400 and parse_since(None, now) == 0.0
    assert parse_since("2026-11-01T00:00:00+00:00", now) == 1793491200.0
    with pytest.raises(CtlError):
        parse_since("last tuesday", now)
    assert usage_value("energy_joules", 7.2e6) == "2.00 kWh" and usage_value("gpu_memory_peak", 2 << 30) == "2G"


def test_stats_and_history_print_tables_escaped_and_json_exact(monkeypatch, capsys):
    from gpusched import ctl
    from gpusched.ctl import client as clientmod
    from tests.test_ctl import EVIL, FakeClient, no_raw_controls
    FakeClient.calls, FakeClient.replies = [], {}
    monkeypatch.setattr(clientmod, "Client", FakeClient)
    FakeClient.replies["Usage"] = [{"user": EVIL, "jobs": 3, "running": 1, "gpu_hours_reserved": 2.5,
                                    "gpu_hours_used": 1.25, "energy_joules": 9000.0, "energy_estimated": True,
                                    "wait_mean": 90.0, "wait_max": 3600.0, "cpu_seconds": 7200.0}]
    assert ctl.main(["stats", "--user", "alice", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    method, user, since = FakeClient.calls[-1]
    assert (method, user) == ("Usage", "alice") and since > 0
    assert no_raw_controls(out) and "CPU TIME" in out and "~9.0 kJ" in out and "2.500" in out and "1h" in out
    assert ctl.main(["stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["users"][0]["user"] == EVIL
    assert FakeClient.calls[-1] == ("Usage", "", 0.0)
    FakeClient.replies["History"] = {"more": 2, "jobs": [
        {"id": 4, "user": "alice", "name": EVIL, "state": "succeeded", "ended": "2026-11-24T10:00:00+00:00",
         "gpus": [{"index": 1, "uuid": "u"}], "usage": {"gpu_hours_reserved": 1.0, "gpu_hours_used": 0.5,
                                                          "gpu_memory_peak": 2 << 30, "energy_joules": 100.0}}]}
    assert ctl.main(["history", "--state", "succeeded", "--limit", "999999"]) == 0
    captured = capsys.readouterr()
    assert no_raw_controls(captured.out) and "0.500" in captured.out and "2G" in captured.out
    assert "2 older matching job(s) not shown" in captured.err
    assert FakeClient.calls[-1] == ("History", "", "", "succeeded", 0.0, 5000)


def test_show_gives_a_running_jobs_accounting_to_the_second_and_only_to_who_may_see_it():
    w = world()
    job = w.submit(spec(), uid=0, user="root")
    w.settle()
    run_for(w, 31, {0: BUSY, 1: BUSY})
    assert "usage" not in w.recorder.records[job.id][0]          # not folded yet (once a minute)
    m = Manager(w.engine, Access())
    u = json.loads(m.show(0, job.id))["ok"]["usage"]
    assert u["gpu_hours_reserved"] == pytest.approx(31 / 3600, abs=1e-6)
    assert u["gpu_hours_used"] == pytest.approx(0.9 * 30 / 3600, abs=1e-6)
    assert "usage" not in json.loads(m.show(65534, job.id))["ok"]
