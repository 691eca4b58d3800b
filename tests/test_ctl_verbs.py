"""Issue 11's verbs, their pure parts and the engine side on the fakes: wait's exit status and poll loop, the
start forecast of why and submit --dry-run, priority, config check, and submit of several files or a command.
The box runs the same verbs against the real daemon (tests/integration/test_cli_verbs.py)."""

from __future__ import annotations

import argparse
import json
import math
import os
from datetime import datetime, timezone

import pytest

from gpusched import ctl
from gpusched import config as configmod
from gpusched.access import Access, Caller
from gpusched.api import Manager
from gpusched.ctl import client as clientmod
from gpusched.ctl import jobs, settings, waiting
from gpusched.ctl.common import FAILED, TIMED_OUT, UNREACHABLE, USAGE, CtlError
from gpusched.errors import Invalid, NotAllowed
from gpusched.jobfile import JobSpec, parse
from gpusched.model import Gpu, State, job_from_dict, job_to_dict
from gpusched.policy.data import Holder, Request
from gpusched.policy.forecast import expected_start
from gpusched.testing import EPOCH, World

ROOT, ALICE = Caller(0, True), Caller(1000, False)


def spec(name="train", gpus=1, **kw) -> JobSpec:
    return JobSpec(command="python train.py", name=name, gpus=gpus, **kw)


# --- wait: exit status ------------------------------------------------------------------------------------

@pytest.mark.parametrize("outcome, status", [
    ({"state": "succeeded", "exit_code": 0}, 0),
    ({"state": "failed", "exit_code": 3}, 3),
    ({"state": "failed", "exit_code": 0}, 1),                     # failed (a time limit, say) without a code
    ({"state": "cancelled", "signal": "SIGTERM"}, 143),
    ({"state": "failed", "signal": "SIGKILL", "exit_code": None}, 137),
    ({"state": "cancelled"}, 1),                                  # cancelled while queued
    ({"state": "dependency_failed"}, 1),
    ({"state": "rejected"}, 1),
    ({"state": "failed", "signal": "SIGWHAT"}, 1),
    ({"array": 3, "failed": 0, "state": "3 succeeded"}, 0),
    ({"array": 3, "failed": 1, "state": "2 succeeded, 1 failed"}, 1),
])
def test_exit_status(outcome, status):
    assert waiting.exit_status(outcome) == status


def test_overall_one_job_is_its_own_code_several_are_zero_or_one():
    ok, bad = {"state": "succeeded", "exit_code": 0}, {"state": "failed", "exit_code": 7}
    assert waiting.overall([bad]) == 7
    assert waiting.overall([ok, ok]) == 0 and waiting.overall([ok, bad]) == 1


# --- wait: the poll loop ------------------------------------------------------------------------------------

class Daemon:
    """Outcomes from a script: each call moves to the next answer; "away" raises as an unreachable daemon."""

    def __init__(self, script):
        self.script, self.calls, self.clients = list(script), [], 0

    def connect(self):
        if self.script and self.script[0] == "away":
            self.script.pop(0)
            raise CtlError("can't reach gpusched", UNREACHABLE)
        self.clients += 1
        return self

    def call(self, method, *args):
        self.calls.append((method, *args))
        if method == "Element":
            return 40 + args[1]
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if step == "away":
            raise CtlError("gpusched did not answer", UNREACHABLE)
        if isinstance(step, Exception):
            raise step
        return [step[i] for i in args[0]]


class Clock:
    def __init__(self):
        self.t = 0.0
        self.slept = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept.append(s)
        self.t += s


def queued(i):
    return {"id": i, "state": "running", "final": False}


def ended(i, code=0):
    return {"id": i, "state": "succeeded" if code == 0 else "failed", "final": True, "exit_code": code}


def test_wait_polls_until_every_job_ends_backing_off_to_once_a_second():
    d = Daemon([{1: queued(1), 2: queued(2)}] * 8 + [{1: ended(1), 2: queued(2)}, {2: ended(2, 5)}])
    clock, said = Clock(), []
    out = waiting.Waiter(d.connect, clock, clock.sleep, said.append).run([(1, None), (2, None)], None)
    assert [o["id"] for o in out] == [1, 2] and waiting.overall(out) == 1
    assert clock.slept[:4] == [0.1, 0.2, 0.4, 0.8] and set(clock.slept[4:]) == {1.0}
    assert d.calls[-1] == ("Outcomes", [2])                         # an ended job is not asked about again
    assert said == [] and d.clients == 1


def test_wait_resolves_an_element_and_keeps_waiting_through_a_daemon_restart():
    d = Daemon([{43: queued(43)}, "away", "away", {43: ended(43, 9)}])
    clock, said = Clock(), []
    out = waiting.Waiter(d.connect, clock, clock.sleep, said.append).run([(40, 3)], None)
    assert out[0]["exit_code"] == 9 and ("Element", 40, 3) in d.calls
    assert len(said) == 2 and "waiting for it to come back" in said[0] and "back" in said[1]   # said once
    assert d.clients == 2                                           # a new connection after it came back


def test_wait_times_out_with_124_naming_what_it_waits_for():
    d = Daemon([{7: queued(7)}])
    clock = Clock()
    with pytest.raises(CtlError) as e:
        waiting.Waiter(d.connect, clock, clock.sleep, lambda s: None).run([(7, None)], 5.0)
    assert e.value.code == TIMED_OUT and "job 7 running" in str(e.value) and clock.t == pytest.approx(5.0)


def test_wait_gives_up_at_once_on_a_refusal():
    d = Daemon([CtlError("no job 99")])
    clock = Clock()
    with pytest.raises(CtlError, match="no job 99") as e:
        waiting.Waiter(d.connect, clock, clock.sleep, lambda s: None).run([(99, None)], None)
    assert e.value.code == FAILED and clock.t == 0


def test_wait_timeout_must_be_a_duration(monkeypatch):
    monkeypatch.setattr(clientmod, "Client", lambda: pytest.fail("no call"))
    with pytest.raises(SystemExit) as e:
        ctl.main(["wait", "1", "--timeout", "soon"])
    assert e.value.code == USAGE


# --- the start forecast -------------------------------------------------------------------------------------

NOW = 1_000_000.0


def gpus(n=4):
    return [Gpu(i, f"GPU-{i}", "H100", 80 << 30, 80 << 30) for i in range(n)]


def req(i, n=1, limit=None, **kw):
    return Request(i, 100, n, time_limit=limit, **kw)


def held(i, on, started, limit=None, **kw):
    return Holder(i, 100, tuple(on), started=started, time_limit=limit, **kw)


def test_forecast_free_gpus_mean_now():
    f = expected_start(req(9, 2), [], [held(1, [0], NOW - 10)], gpus(), NOW)
    assert f.at == NOW and f.gpus == (1, 2)


def test_forecast_waits_for_running_jobs_time_limits():
    holders = [held(1, [0, 1], NOW - 100, 3600), held(2, [2, 3], NOW - 100, 600)]
    f = expected_start(req(9, 2), [], holders, gpus(), NOW)
    assert f.at == NOW + 500 and f.gpus == (2, 3)
    f = expected_start(req(9, 3), [], holders, gpus(), NOW)
    assert f.at == NOW + 3500


def test_forecast_plays_the_jobs_ahead_on_their_limits():
    holders = [held(1, [0, 1, 2, 3], NOW, 600)]
    ahead = [req(5, 4, 1200)]                                       # takes every GPU from +600 to +1800
    assert expected_start(req(9, 1), ahead, holders, gpus(), NOW).at == NOW + 1800
    ahead = [req(5, 2, 1200)]                                       # two are left for it at +600
    assert expected_start(req(9, 2), ahead, holders, gpus(), NOW).at == NOW + 600


def test_forecast_is_honest_about_what_it_does_not_know():
    f = expected_start(req(9, 1), [], [held(1, [0, 1, 2, 3], NOW)], gpus(), NOW)
    assert f.at is None and "running job 1 has no time limit" in f.why
    f = expected_start(req(9, 4), [req(5, 4)], [held(1, [0, 1, 2, 3], NOW, 60)], gpus(), NOW)
    assert f.at is None and "job 5, ahead of it, has no time limit" in f.why
    f = expected_start(req(9, 8), [], [], gpus(), NOW)
    assert f.at is None and "can never run here" in f.why
    assert expected_start(req(9), [], [], None, NOW).why == "the GPUs can't be probed now"


def test_forecast_cpu_jobs_and_a_floor():
    assert expected_start(req(9, 0), [], [held(1, [0, 1, 2, 3], NOW)], gpus(), NOW).at == NOW
    assert expected_start(req(9, 1), [], [], gpus(), NOW, not_before=NOW + 60).at == NOW + 60


def test_forecast_stopping_jobs_free_their_gpus_within_their_grace():
    h = held(1, [0, 1, 2, 3], NOW - 5, stopping=True, grace=30)
    assert expected_start(req(9, 1), [], [h], gpus(), NOW).at == NOW + 30


# --- the engine: outlook (why, --dry-run) and priority ----------------------------------------------------------

def test_outlook_position_blockers_and_expected_start():
    w = World(gpus=2, duration=lambda job: None)
    running = w.submit(spec("a", gpus=2, time_limit=3600))
    w.settle()
    first, second = w.submit(spec("b", gpus=2, time_limit=600)), w.submit(spec("c", gpus=1))
    w.settle()
    assert running.state == State.RUNNING
    o = w.engine.outlook(second)
    assert o["position"] == 2 and o["ahead"] == [first.id] and o["ahead_count"] == 1
    # the first waits for the running job's limit (the policy's own reservation, EASY backfill), then the
    # second waits for the first's
    assert w.engine.outlook(first)["expected_start"] == EPOCH + 3600
    assert w.engine.outlook(first)["expected_source"] == "policy"
    assert o["expected_start"] == EPOCH + 3600 + 600 and o["expected_source"] == "forecast"
    w.engine.hold(first, ROOT)
    assert w.engine.outlook(first)["expected_why"].startswith("unknown: held by root")
    assert w.engine.outlook(second)["expected_start"] == EPOCH + 3600    # a held job ahead takes nothing


def test_outlook_names_dependencies_and_says_their_end_cannot_be_dated():
    w = World(gpus=1)
    dep = w.submit(spec("a"))
    later = w.submit(spec("b", after_ok=(dep.id,)))
    w.settle()
    o = w.engine.outlook(later)
    assert o["dependencies"] == [{"kind": "after_ok", "id": dep.id, "label": str(dep.id), "state": "running"}]
    assert o["expected_start"] is None and "can't be dated" in o["expected_why"]


def test_priority_owner_only_less_urgent_admin_anything_recorded_and_journalled():
    w = World(gpus=0)
    job = w.submit(spec(), uid=1000, user="alice")
    assert w.engine.reprioritize(job, ALICE, 150, admin=False) == "priority 100 -> 150"
    assert job.spec.priority == 150 and w.recorder.records[job.id][0]["priority"] == 150
    assert any("priority 100 -> 150" in m for m, _, _ in w.log.lines)
    with pytest.raises(NotAllowed, match="only make it less urgent"):
        w.engine.reprioritize(job, ALICE, 120, admin=False)
    assert w.engine.reprioritize(job, ROOT, -5, admin=True) == "priority 150 -> -5"
    assert w.engine.reprioritize(job, ROOT, -5, admin=True) == "priority -5 already"
    # a restart reads the record's priority over the file's
    assert job_from_dict(job_to_dict(job), spec()).spec.priority == -5
    w.engine.cancel(job, ROOT)
    with pytest.raises(Invalid, match="only a queued job's priority"):
        w.engine.reprioritize(job, ROOT, 5, admin=True)


def test_priority_never_below_min_user_priority_for_owners():
    w = World(gpus=0, cfg=configmod.Config(min_user_priority=50))
    job = w.submit(spec(priority=60), uid=1000, user="alice")
    w.engine.reprioritize(job, ALICE, 70, admin=False)
    w2 = World(gpus=0, cfg=configmod.Config(min_user_priority=200))
    job = w2.submit(spec(priority=100), uid=1000, user="alice")        # an admin's file, say
    with pytest.raises(NotAllowed, match="min_user_priority"):
        w2.engine.reprioritize(job, ALICE, 150, admin=False)


def test_manager_priority_of_an_array_id_and_of_someone_elses_job():
    w = World(gpus=0)
    text = b'command = "python train.py --lr {lr}"\nname = "s"\n[sweep]\nlr = [1, 2, 3]\n'
    jobs_ = w.engine.accept_array([1, 2, 3], parse(text, "s.toml", owner_is_root=False), "alice", 1000, 1000,
                                  "s.toml", data=text)
    m = Manager(w.engine, Access())
    w.engine.cancel(jobs_[2], ROOT)
    assert m.priority(1000, 1, -1, 300) == "array 1: 2 queued job(s) at priority 300 (1 not queued, left as they were)"
    assert [j.spec.priority for j in jobs_[:2]] == [300, 300]
    assert m.priority(1000, 1, 1, 400) == "priority 300 -> 400" and jobs_[1].spec.priority == 400
    with pytest.raises(NotAllowed, match="belongs to alice; only its owner"):
        m.priority(1001, 1, -1, 500)
    with pytest.raises(NotAllowed, match="job 2 has priority 400"):     # checked whole: job 1 is unchanged
        m.priority(1000, 1, -1, 350)
    assert jobs_[0].spec.priority == 300


def test_manager_outcomes_and_why():
    w = World(gpus=1, duration=lambda job: 10, exit_code=lambda job: 3)
    a, b = w.submit(spec("a", time_limit=60), uid=1000, user="alice"), w.submit(spec("b"), uid=1000, user="alice")
    w.settle()
    m = Manager(w.engine, Access())
    assert m.outcomes([a.id])[0] == {"id": a.id, "state": "running", "final": False, "exit_code": None,
                                     "signal": None}
    why = m.why(1001, b.id)
    assert why["state"] == "queued" and why["position"] == 1 and "dependencies" not in why   # not bob's
    assert why["expected_start"] == datetime.fromtimestamp(EPOCH + 60, timezone.utc).isoformat()   # a's limit
    w.run_until(EPOCH + 11)
    assert m.outcomes([a.id])[0]["exit_code"] == 3 and m.outcomes([a.id])[0]["final"]
    assert "position" not in m.why(1000, a.id)                         # ended: its state, no queue


def test_manager_check_is_the_daemons_verdict_and_queues_nothing():
    w = World(gpus=2)
    m = Manager(w.engine, Access())
    d = m.check(0, "t.toml", 'command = "true"\ngpus = 1\n')
    assert d["expected_start"] is not None and d["expected_gpus"] == [0] and d["jobs"] == 1
    assert not w.engine.jobs
    with pytest.raises(Invalid, match="gpus"):
        m.check(0, "t.toml", 'command = "true"\ngpus = "many"\n')
    d = m.check(0, "t.toml", 'command = "true"\nhold = true\n')
    assert d["expected_start"] is None and "held" in d["expected_why"]


# --- why and --dry-run for people ------------------------------------------------------------------------------

def test_dry_run_text():
    now = NOW
    def iso(t):
        return datetime.fromtimestamp(t).astimezone().isoformat()
    assert waiting.dry_run_text({"expected_start": iso(now), "expected_gpus": [1, 2]}, now) == \
        "would start now on GPU(s) 1,2"
    text = waiting.dry_run_text({"expected_start": iso(now + 3600), "expected_gpus": [0], "ahead_count": 2,
                                 "expected_source": "forecast"}, now)
    assert text.startswith("would wait: 2 job(s) ahead of it") and "(in 1h" in text and "estimate" in text
    assert waiting.dry_run_text({"expected_start": None, "expected_why": "unknown: held by bob until released"},
                                now) == "would wait: held by bob until released; expected start unknown"


def test_why_lines_for_queued_running_and_ended_jobs():
    q = {"id": 5, "name": "t", "user": "alice", "state": "queued", "reason": "waiting for 1 GPU(s), 0 free",
         "position": 3, "ahead": [1, 2], "ahead_count": 2, "priority": 100, "dependencies": [],
         "expected_start": None, "expected_why": "unknown: running job 1 has no time limit"}
    lines = dict(waiting.why_lines(q, NOW))
    assert lines["position"] == "3 in the queue (after 1, 2)"
    assert lines["expected start"] == "unknown: running job 1 has no time limit"
    r = {"id": 5, "name": "t", "user": "alice", "state": "running", "started": "2026-11-25T10:00:00+00:00",
         "gpus": [{"index": 1}], "unit": "gpusched-job-5.scope"}
    assert "on GPU(s) 1 in gpusched-job-5.scope" in dict(waiting.why_lines(r, NOW))["started"]
    e = {"id": 5, "name": "t", "user": "alice", "state": "failed", "ended": "2026-11-25T10:00:00+00:00",
         "exit_code": 2}
    assert dict(waiting.why_lines(e, NOW))["ended"].endswith("(exit code 2)")


# --- config check ------------------------------------------------------------------------------------------------

def test_config_check_prints_every_setting_marking_defaults(tmp_path, capsys):
    path = tmp_path / "gpusched.toml"
    path.write_text("max_running = 3\n")
    assert ctl.main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: valid\n")
    assert "max_running" in out and "= 3\n" in out.split("max_running", 1)[1].split("\n", 1)[0] + "\n"
    names = {line.split(" = ")[0].strip() for line in out.splitlines()[1:]}
    assert names == set(settings.effective(configmod.Config()))        # every setting, none left out
    assert all(line.endswith("# default") for line in out.splitlines()[1:] if not line.startswith("max_running "))
    assert ctl.main(["config", "check", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["version"] == 1 and d["config"]["max_running"] == 3 and d["config"]["spool_dir"] == "/var/spool/gpusched"


def test_config_check_names_file_line_and_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("# a comment\nmax_running = \"three\"\n")
    with pytest.raises(SystemExit) as e:
        ctl.main(["config", "check", str(path)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:2: max_running" in err
    with pytest.raises(SystemExit):
        ctl.main(["config", "check", str(tmp_path / "missing.toml")])
    assert "no such file" in capsys.readouterr().err


def test_config_check_of_the_default_path_when_there_is_none(tmp_path, capsys):
    assert ctl.main(["--config", str(tmp_path / "none.toml"), "config", "check"]) == 0
    assert "every setting is at its default" in capsys.readouterr().out


# --- submit: several files, a directory, a command --------------------------------------------------------------

@pytest.fixture
def spool(tmp_path, monkeypatch):
    """A spool in tmp_path (the config names it), and a daemon that takes each file as job 100, 101, ...;
    it rejects the files named in `rejected` (Show, which works out a queued job's place in the whole queue,
    is asked only for a rejected one's reason)."""
    d = tmp_path / "spool"
    d.mkdir()
    cfg = tmp_path / "gpusched.toml"
    cfg.write_text(f'spool_dir = "{d}"\n')
    taken, rejected = [], set()

    def state(job_id):
        return "rejected" if taken[job_id - 100] in rejected else "queued"

    class Fake:
        def call(self, method, *args):
            if method == "Lookup":
                taken.append(args[0])
                return 99 + len(taken)
            if method == "Outcomes":
                return [{"id": i, "state": state(i), "final": state(i) == "rejected"} for i in args[0]]
            if method == "Show" and state(args[0]) == "rejected":
                return {"id": args[0], "state": "rejected", "reason": "no, says the daemon"}
            raise AssertionError(method)

    monkeypatch.setattr(clientmod, "Client", Fake)
    return argparse.Namespace(dir=d, cfg=str(cfg), taken=taken, rejected=rejected)


def test_submit_a_directory_in_order_one_id_per_line(spool, tmp_path, capsys):
    jd = tmp_path / "jobs"
    jd.mkdir()
    for name in ("b.toml", "a.toml", ".hidden.toml", "notes.txt"):
        (jd / name).write_text('command = "true"\ngpus = 0\n')
    assert ctl.main(["--config", spool.cfg, "submit", str(jd)]) == 0
    assert capsys.readouterr().out == "100\n101\n"
    assert spool.taken == ["a.toml", "b.toml"] and sorted(os.listdir(spool.dir)) == ["a.toml", "b.toml"]


def test_submit_says_a_rejection_with_the_daemons_reason_and_queues_the_others(spool, tmp_path, capsys):
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text('command = "true"\ngpus = 0\n')
    spool.rejected.add("a.toml")
    assert ctl.main(["--config", spool.cfg, "submit", str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]) == 1
    out, err = capsys.readouterr()
    assert out == "101\n" and "job 100 rejected: no, says the daemon" in err


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "device"])
def test_submit_reads_only_regular_files_and_never_blocks(spool, tmp_path, capsys, kind):
    # a directory may be anyone's: a FIFO named x.toml in it made submit hang on reading it
    jd = tmp_path / "jobs"
    jd.mkdir()
    (jd / "a.toml").write_text('command = "true"\ngpus = 0\n')
    if kind == "fifo":
        os.mkfifo(jd / "x.toml")
    elif kind == "link to a fifo":
        os.mkfifo(tmp_path / "fifo")
        os.symlink(tmp_path / "fifo", jd / "x.toml")
    else:
        os.symlink("/dev/zero", jd / "x.toml")
    with pytest.raises(SystemExit) as e:
        ctl.main(["--config", spool.cfg, "submit", str(jd)])
    assert e.value.code == 1
    assert f"{jd / 'x.toml'}: not a regular file; nothing was submitted" in capsys.readouterr().err
    assert os.listdir(spool.dir) == []


def test_submit_checks_every_file_first_and_queues_nothing_if_one_is_invalid(spool, tmp_path, capsys):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('command = "true"\n')
    bad.write_text('command = "true"\ngpus = "two"\n')
    with pytest.raises(SystemExit) as e:
        ctl.main(["--config", spool.cfg, "submit", str(good), str(bad)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "invalid job file" in err and "bad.toml" in err and "nothing was submitted" in err
    assert os.listdir(spool.dir) == []


def test_submit_a_command_writes_its_job_file(spool, capsys):
    assert ctl.main(["--config", spool.cfg, "submit", "--gpus", "2", "--tag", "x", "--after", "7", "--hold",
                     "--", "python", "train.py", "--lr", "1"]) == 0
    assert capsys.readouterr().out == "100\n"
    import tomllib
    doc = tomllib.loads((spool.dir / "python.toml").read_text())
    assert doc["command"] == ["python", "train.py", "--lr", "1"] and doc["gpus"] == 2 and doc["tags"] == ["x"]
    assert doc["after"] == [7] and doc["hold"] is True


@pytest.mark.parametrize("name, stem", [(".x", "job-.x"), ("#x", "job-#x"), ("~x", "job-~x"), ("4913", "job-4913"),
                                        ("a/../b", "a_.._b"), ("plain", "plain")])
def test_submit_a_command_names_its_spool_file_so_that_the_daemon_takes_it(spool, capsys, name, stem):
    # the spool's daemon passes over dotfiles and editors' temporary names: a job named so waited for nothing
    assert ctl.main(["--config", spool.cfg, "submit", "--name", name, "--", "true"]) == 0
    assert os.listdir(spool.dir) == [f"{stem}.toml"]


def test_submit_refuses_mixed_or_misplaced_options(spool, tmp_path, capsys):
    f = tmp_path / "a.toml"
    f.write_text('command = "true"\n')
    for argv, text in ((["submit", str(f), "--", "true"], "not both"),
                       (["submit", "--gpus", "2", str(f)], "--gpus: job options describe a command"),
                       (["submit"], "nothing to submit"),
                       (["list", "--", "x"], "list takes no command after --")):
        with pytest.raises(SystemExit) as e:
            ctl.main(["--config", spool.cfg, *argv])
        assert e.value.code == USAGE and text in capsys.readouterr().err
    assert os.listdir(spool.dir) == []


def test_submit_dry_run_asks_the_daemon_and_writes_nothing(spool, tmp_path, capsys, monkeypatch):
    f = tmp_path / "a.toml"
    f.write_text('command = "true"\n')
    asked = []

    class Fake:
        def call(self, method, *args):
            asked.append((method, args[0]))
            return {"name": "a", "user": "alice", "jobs": 1, "gpus_requested": 1, "priority": 100,
                    "expected_start": None, "expected_why": "unknown: the server is draining (by root)"}

    monkeypatch.setattr(clientmod, "Client", Fake)
    assert ctl.main(["--config", spool.cfg, "submit", "--dry-run", str(f)]) == 0
    out = capsys.readouterr().out
    assert asked == [("Check", "a.toml")] and "valid" in out and "would wait: the server is draining" in out
    assert os.listdir(spool.dir) == []


def test_history_tag_uses_the_tagged_call(monkeypatch, capsys):
    calls = []

    class Fake:
        def call(self, method, *args):
            calls.append((method, *args))
            return {"more": 0, "jobs": []}

    monkeypatch.setattr(clientmod, "Client", Fake)
    assert ctl.main(["history", "--tag", "sweep1", "--user", "alice"]) == 0
    assert calls[0][0] == "HistoryTagged" and calls[0][1] == "alice" and calls[0][4] == "sweep1"
    assert ctl.main(["history"]) == 0 and calls[1][0] == "History"


def test_engine_history_filters_by_tag():
    w = World(gpus=0, duration=lambda job: 1)
    a = w.submit(spec("a", gpus=0, tags=("x",)))
    w.submit(spec("b", gpus=0, tags=("y",)))
    w.run_until(EPOCH + 5)
    found, more = w.engine.finished(None, "", "", 0.0, 100, tag="x")
    assert [j.id for j in found] == [a.id] and more == 0


def test_priority_verb_argument_checks(monkeypatch, capsys):
    calls = []

    class Fake:
        def call(self, method, *args):
            calls.append((method, *args))
            return "priority 100 -> 200"

    monkeypatch.setattr(clientmod, "Client", Fake)
    assert ctl.main(["priority", "12_3", "200"]) == 0
    assert calls == [("Priority", 12, 3, 200)] and capsys.readouterr().out == "job 12[3]: priority 100 -> 200\n"
    assert ctl.main(["priority", "12", "200"]) == 0 and calls[-1] == ("Priority", 12, -1, 200)
    with pytest.raises(SystemExit) as e:
        ctl.main(["priority", "12", str(1 << 40)])
    assert e.value.code == USAGE


def test_jobs_module_lists_every_job_option():
    """A job option given with files is refused: every option jobopts adds must be in the list."""
    p = argparse.ArgumentParser()
    from gpusched.ctl import jobopts
    jobopts.add_options(p)
    assert {a.dest for a in p._actions if a.dest != "help"} == set(jobs._JOB_OPTIONS)


def test_math_inf_is_never_shown():
    assert not math.isinf(expected_start(req(9), [], [], gpus(), NOW).at)
