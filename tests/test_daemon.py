"""The daemon's parts wired as app.build wires them, with fakes for systemd, the GPUs and the monitor spawner
(real store, spool, runner and engine in tmp_path): errors are contained per job, per-user caps hold jobs
back, leftovers keep a job's GPUs. Fakes only stand in for side effects; the real thing is tested in
tests/integration/, the engine alone in tests/test_engine.py."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess

import pytest

from gpusched import config as configmod
from gpusched.app import Gpusched, build
from gpusched.model import Gpu, State
from gpusched.policy.classes import JobClass
from gpusched.spool import Spool
from gpusched.store import Store
from gpusched.systemd import SystemdError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the spool must be root-owned: needs root")


class FakeUnits:
    def __init__(self, fail_for: set[str] = frozenset()):
        self.fail_for = set(fail_for)
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.killed: list[tuple[str, int]] = []

    def start_scope(self, unit, pid, properties):
        if unit in self.fail_for:
            raise RuntimeError(f"a bug while starting {unit}")      # not a SystemdError: an unexpected one
        self.started.append(unit)

    def stop(self, unit):
        self.stopped.append(unit)
        return True

    def alive(self, unit):
        return unit in self.started

    def kill(self, unit, sig):
        self.killed.append((unit, sig))
        return True


class FakeSpawner:
    """Stands in for the zygote: a real, harmless process per 'monitor' (the daemon watches it by pidfd)."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def spawn(self, spec_fd, result_path):
        p = subprocess.Popen(["sleep", "30"], stdin=spec_fd)      # holds the spec pipe's read end, as a monitor
        self.procs.append(p)
        return p.pid

    def reap(self):
        pass


class FourGpus:
    simulated = True

    def probe(self, active_units=frozenset()):
        return [Gpu(i, f"GPU-{i}", "Sim", 80 << 30, 80 << 30, simulated=True) for i in range(4)]


@pytest.fixture
def make(tmp_path):
    made = []

    def _make(units=None, **cfg):
        c = configmod.Config(spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state"), **cfg)
        d = build(c, Store(c.state_dir), Spool(c.spool_dir), units or FakeUnits(), FourGpus(), FakeSpawner())
        d.recover()
        made.append(d)
        return d
    yield _make
    for d in made:
        for p in d.runner.spawner.procs:
            p.kill()
            p.wait()


def drop(d: Gpusched, name: str, text: str, uid: int = 0) -> int:
    path = os.path.join(d.intake.spool.root, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)
    d.intake.ingest(name)
    return max(d.engine.jobs)


def test_one_failing_start_does_not_block_the_others(make):
    d = make(units=FakeUnits(fail_for={"gpusched-job-1.scope"}))
    bad = drop(d, "urgent.toml", 'command = "true"\ngpus = 1\npriority = 1\n')
    others = [drop(d, f"j{i}.toml", 'command = "true"\ngpus = 1\n') for i in range(3)]
    d.engine.schedule()
    assert d.engine.jobs[bad].state == State.QUEUED and "internal error" in d.engine.jobs[bad].reason
    assert [d.engine.jobs[j].state for j in others] == [State.RUNNING] * 3
    d.engine.schedule()                                    # and again on every later pass: still contained
    assert d.engine.jobs[bad].state == State.QUEUED


def test_a_monitor_that_died_before_its_spec_requeues_only_that_job(make, monkeypatch):
    d = make()
    real_spawn = d.runner.spawner.spawn
    calls = []

    def spawn(spec_fd, result_path):
        calls.append(result_path)
        if len(calls) == 1:
            # the read end of the spec pipe is closed with the 'monitor': the daemon's write gets EPIPE
            return subprocess.Popen(["true"], stdin=subprocess.DEVNULL).pid
        return real_spawn(spec_fd, result_path)
    monkeypatch.setattr(d.runner.spawner, "spawn", spawn)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    first = drop(d, "first.toml", 'command = "true"\ngpus = 1\npriority = 1\n')
    second = drop(d, "second.toml", 'command = "true"\ngpus = 1\n')
    d.engine.schedule()
    assert d.engine.jobs[first].state == State.QUEUED and "monitor died" in d.engine.jobs[first].reason
    assert d.engine.jobs[second].state == State.RUNNING


def test_per_user_caps_in_the_daemon(make):
    d = make(max_cpu_jobs_per_user=2, max_queued_per_user=5)
    alice = pwd.getpwnam("nobody").pw_uid          # any unprivileged account that exists everywhere
    ids = [drop(d, f"a{i}.toml", 'command = "true"\ngpus = 0\n', uid=alice) for i in range(7)]
    states = [d.engine.jobs[i].state for i in ids]
    assert states[:5] == [State.QUEUED] * 5 and states[5:] == [State.REJECTED] * 2
    assert "max_queued_per_user = 5" in d.engine.jobs[ids[5]].reason
    d.engine.schedule()
    assert sum(d.engine.jobs[i].state == State.RUNNING for i in ids) == 2
    assert "max_cpu_jobs_per_user is 2" in d.engine.jobs[ids[4]].reason
    # root is not held to the queued cap
    assert d.engine.jobs[drop(d, "r.toml", 'command = "true"\n')].state == State.QUEUED


def test_a_put_back_entry_is_not_looked_up(make, monkeypatch):
    d = make()

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(d.intake.store, "save_status", full)
    path = os.path.join(d.intake.spool.root, "x.toml")
    with open(path, "w") as f:
        f.write('command = "true"\n')
    ino = os.stat(path).st_ino
    d.intake.ingest("x.toml")
    assert d.manager.lookup(0, "x.toml", ino) == 0 and not d.engine.jobs


def test_leftover_processes_keep_the_gpus_until_the_scope_is_empty(make, monkeypatch):
    from gpusched import cgroups
    d = make()
    job = d.engine.jobs[drop(d, "j.toml", 'command = "true"\ngpus = 1\n')]
    d.engine.schedule()
    assert job.state == State.RUNNING
    monkeypatch.setattr(d.runner.store, "read_result", lambda *a: {"exit_code": 0, "ended": 1.0})
    left = {os.getpid()}
    monkeypatch.setattr(cgroups, "pids", lambda path: set(left))
    d.engine.reconcile(job)
    assert job.state == State.RUNNING and job.gpus and d.runner.units.killed == [(job.unit, signal.SIGKILL)]
    left.clear()
    d.engine.reconcile(job)
    assert job.state == State.SUCCEEDED


def test_cancel_now_kills_whatever_the_grace(make):
    d = make()
    job = d.engine.jobs[drop(d, "j.toml", 'command = "sleep 100"\ngpus = 1\ngrace = "5m"\n')]
    d.engine.schedule()
    assert d.manager.cancel(job.id, 0, now=True) == "killed"
    assert job.state == State.STOPPING and job.stop_intent == "cancel"
    assert d.runner.units.killed == [(job.unit, signal.SIGKILL)]
    with pytest.raises(PermissionError):
        d.manager.cancel(job.id, 12345, now=True)


def test_expiry_removes_old_finished_jobs_only(make, monkeypatch):
    d = make(keep_finished=3600.0)
    old = d.engine.jobs[drop(d, "old.toml", 'command = "true"\n')]
    d.manager.cancel(old.id, 0)
    old.ended -= 7200
    queued = drop(d, "q.toml", 'command = "true"\ngpus = 9\n')
    removed = []
    monkeypatch.setattr(d.recorder.store, "remove_jobs", lambda ids: removed.extend(ids) or 0)
    monkeypatch.setattr(d.engine, "expire_rejected", lambda cutoff: 0)
    d.engine.expire()
    while d.engine.expire_batch():
        pass
    assert removed == [old.id] and old.id not in d.engine.jobs and queued in d.engine.jobs


def test_typed_systemd_error_fails_only_that_start(make):
    class Failing(FakeUnits):
        def start_scope(self, unit, pid, properties):
            if unit == "gpusched-job-1.scope":
                raise SystemdError("StartTransientUnit: refused")
            super().start_scope(unit, pid, properties)
    d = make(units=Failing())
    a = drop(d, "a.toml", 'command = "true"\ngpus = 1\n')
    b = drop(d, "b.toml", 'command = "true"\ngpus = 1\n')
    d.engine.schedule()
    assert d.engine.jobs[a].state == State.FAILED and d.engine.jobs[b].state == State.RUNNING


def test_past_the_per_user_budget_only_the_newest_rejections_keep_a_record(make):
    d = make(max_rejected_per_user=2)
    nobody = pwd.getpwnam("nobody").pw_uid
    ids = [drop(d, f"bad{i}.toml", "bogus = 1\n", uid=nobody) for i in range(5)]
    recorded = sorted(j.id for j in d.engine.jobs.values() if j.state == State.REJECTED)
    assert recorded == ids[-2:]                       # the newest mistakes are the ones a user looks for
    on_disk = sorted(n for n in os.listdir(d.recorder.store.jobs_dir) if n.endswith(".status.toml"))
    assert on_disk == [f"{i}.status.toml" for i in ids[-2:]]
    assert sorted(os.listdir(d.recorder.store.status_dir)) == [f"{i}.toml" for i in ids[-2:]]
    kept = sorted(os.listdir(d.intake.spool.rejected))
    assert len(kept) == 5 and all(any(n.endswith(f"-bad{i}.toml") for n in kept) for i in range(5))
    # a good file of the same user is still accepted, and root is never held to the budget
    assert d.engine.jobs[drop(d, "good.toml", 'command = "true"\n', uid=nobody)].state == State.QUEUED
    drop(d, "rootbad.toml", "bogus = 1\n")
    assert sum(j.state == State.REJECTED for j in d.engine.jobs.values()) == 3


def test_rejections_that_cant_evict_old_records_get_no_record(make, monkeypatch):
    d = make(max_rejected_per_user=2)
    nobody = pwd.getpwnam("nobody").pw_uid
    for i in range(2):
        drop(d, f"bad{i}.toml", "bogus = 1\n", uid=nobody)

    def broken(ids, results=True):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(d.recorder.store, "remove_jobs", broken)
    for i in range(2, 5):
        drop(d, f"bad{i}.toml", "bogus = 1\n", uid=nobody)
    assert sum(j.state == State.REJECTED for j in d.engine.jobs.values()) == 2
    assert len(os.listdir(d.intake.spool.rejected)) == 5


def test_no_intake_under_the_floor_and_no_id_spent(make, monkeypatch):
    d = make(log_min_free=1 << 40)                  # a floor no test machine's disk is above
    before = d.intake.store._next_id
    path = os.path.join(d.intake.spool.root, "x.toml")
    with open(path, "w") as f:
        f.write('command = "true"\n')
    d.intake.ingest("x.toml")
    assert not d.engine.jobs and d.intake.store._next_id == before and os.path.exists(path)
    d.intake.ingest("x.toml")                               # deferred: not even looked at again for a while
    assert not d.engine.jobs


def test_a_job_that_ends_between_the_result_look_and_the_scope_look_keeps_its_result(make):
    """_reconcile reads the result, then asks whether the scope lives: a short job can write its result and
    end in between. It must be recorded with its exit code, not as 'the monitor was killed'."""
    class EndsWhileAsked(FakeUnits):
        def alive(self, unit):
            job = d.engine.jobs[job_id]
            os.makedirs(d.runner.store.results_dir, exist_ok=True)
            with open(d.runner.store.result_path(job.id, job.attempt, job.start_token), "w") as f:
                f.write('{"exit_code": 0}')
            return False
    units = EndsWhileAsked()
    d = make(units=units)
    job_id = drop(d, "short.toml", 'command = "true"\n')
    d.engine.schedule()
    d.engine.reconcile(d.engine.jobs[job_id])
    job = d.engine.jobs[job_id]
    assert job.state == State.SUCCEEDED and job.exit_code == 0, (job.state, job.reason)


def test_class_grants_are_checked_against_the_files_owner_and_their_groups(make):
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    d = make(classes=(JobClass("normal", 10), JobClass("mine", 0, users=frozenset({"nobody"})),
                      JobClass("ours", 0, groups=frozenset({group})), JobClass("theirs", 0, users=frozenset({"x"}))))
    ids = {c: drop(d, f"{c}.toml", f'command = "true"\ngpus = 0\nclass = "{c}"\n', uid=nobody.pw_uid)
           for c in ("mine", "ours", "theirs")}
    assert d.engine.jobs[ids["mine"]].state == State.QUEUED and d.engine.jobs[ids["mine"]].job_class == "mine"
    assert d.engine.jobs[ids["ours"]].state == State.QUEUED
    assert d.engine.jobs[ids["theirs"]].state == State.REJECTED and "theirs" in d.engine.jobs[ids["theirs"]].reason
