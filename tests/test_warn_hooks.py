"""Issue 9's warnings (warn_signal / warn_before) and hooks (on_finish, notify, [hooks]): the job file's rules,
the config's, the engine on the fakes (when the warning goes, a preemption held back for it, a restart in
between, hooks only at a final end), the main-process finder and the mail's message."""

from __future__ import annotations

import signal

import pytest

from gpusched import cgroups, hooks, notify, timers
from gpusched import config as configmod
from gpusched.access import Caller
from gpusched.jobfile import JobFileError, JobSpec, parse
from gpusched.model import State
from gpusched.policy.classes import JobClass
from gpusched.runner import NoAccount
from gpusched.scopes import SystemdError, SystemdUnavailable
from gpusched.engine import Engine
from gpusched.testing import EPOCH, World

USR1 = int(signal.SIGUSR1)
OWNER = Caller(1000, False)


def spec(name="train", gpus=1, **kw) -> JobSpec:
    return JobSpec(command="python train.py", name=name, gpus=gpus, **kw)


def restart(w: World) -> Engine:
    """A second daemon on the same records, the same scopes (the runner) and the same clock."""
    w.runner.signals.clear()
    w.runner.hooks.clear()
    w.runner.stopped.clear()
    engine = Engine(w.cfg, w.clock, w.recorder, w.runner, w.probe, lambda: None, w.log)
    engine.load()
    engine.recover()
    return engine


def ticking(w: World, until: float) -> None:
    """Run to the wall time `until` with a tick every second, as the daemon's loop does."""
    t = w.clock.time()
    while t < until:
        t = min(until, t + 1)
        w.run_until(t)
        w.engine.tick()


def problems(text: str) -> str:
    with pytest.raises(JobFileError) as e:
        parse(text.encode(), "job.toml", owner_is_root=False)
    return str(e.value)


# --- the job file ------------------------------------------------------------------------------------------

def test_warn_keys_parse_and_warn_before_defaults_to_a_minute():
    s = parse(b'command = "x"\ntime_limit = "1h"\nwarn_signal = "usr1"\nwarn_before = "2m"\n', "j.toml",
              owner_is_root=False)
    assert s.warn_signal == USR1 and s.warn_before == 120
    s = parse(b'command = "x"\nwarn_signal = 12\n', "j.toml", owner_is_root=False)
    assert s.warn_signal == 12 and s.warn_before == 60
    assert parse(b'command = "x"\n', "j.toml", owner_is_root=False).warn_signal is None


@pytest.mark.parametrize("body, expected", [
    ('time_limit = "2m"\nwarn_signal = "SIGUSR1"\nwarn_before = "2m"', "job.toml:4: warn_before: 2m is not shorter than time_limit 2m"),
    ('time_limit = "30s"\nwarn_signal = "SIGUSR1"', "job.toml:3: warn_signal: 1m is not shorter than time_limit 30s"),
    ('warn_signal = "SIGKILL"', "job.toml:2: warn_signal: SIGKILL can't be a warning"),
    ('warn_signal = "SIGSTOP"', "job.toml:2: warn_signal: SIGSTOP can't be a warning"),
    ('warn_signal = "SIGNOPE"', "job.toml:2: warn_signal: no such signal"),
    ('warn_before = "1m"', "job.toml:2: warn_before: is set but warn_signal is not"),
    ('warn_signal = "USR1"\nwarn_before = 0', "job.toml:3: warn_before: must be more than 0"),
    ('on_finish = ""', "job.toml:2: on_finish: the command is empty"),
    ('on_finish = ["a"]', "job.toml:2: on_finish: expected a string"),
    (f'on_finish = "{"x" * 5000}"', "job.toml:2: on_finish: longer than 4096 bytes"),
    ('notify = "sms"', "job.toml:2: notify: 'sms': the only way to notify is \"mail\""),
])
def test_bad_warn_and_hook_keys_are_rejected_with_their_line(body, expected):
    assert expected in problems('command = "x"\n' + body + "\n")


def test_hook_keys_parse():
    s = parse(b'command = "x"\non_finish = "echo $GPUSCHED_STATE"\nnotify = "mail"\n', "j.toml", owner_is_root=False)
    assert s.on_finish == "echo $GPUSCHED_STATE" and s.notify == "mail"


# --- the config --------------------------------------------------------------------------------------------

def test_config_hooks_and_max_warn_before():
    c = configmod.parse('max_warn_before = "1m"\n[hooks]\non_finish = "/usr/local/bin/h"\nuser = "hk"\n'
                        'timeout = "10s"\n')
    assert (c.max_warn_before, c.hook_on_finish, c.hook_user, c.hook_timeout) == (60, "/usr/local/bin/h", "hk", 10)
    d = configmod.Config()
    assert d.hook_user == "nobody" and d.hook_on_finish == "" and d.max_warn_before == 300
    for text, key in (('[hooks]\nwho = "x"\n', "hooks.who"), ('[hooks]\nuser = "a b"\n', "hooks.user"),
                      ('[hooks]\non_finish = ""\n', "hooks.on_finish"), ('[hooks]\ntimeout = "soon"\n', "hooks.timeout"),
                      ('hooks = 3\n', "hooks")):
        with pytest.raises(configmod.ConfigError, match=key):
            configmod.parse(text)


# --- the time-limit warning --------------------------------------------------------------------------------

def test_the_warning_is_sent_warn_before_the_time_limit_once_and_recorded():
    w = World(gpus=1)
    job = w.submit(spec(time_limit=100, warn_signal=USR1, warn_before=30))
    w.settle()
    assert job.state == State.RUNNING
    w.clock.advance(69)
    w.engine.tick()
    assert w.runner.signals == []                              # not yet
    w.clock.advance(1)
    w.engine.tick()
    w.engine.tick()
    assert w.runner.signals == [(job.id, USR1, EPOCH + 70)]    # once, at started + 100 - 30
    assert job.warned == EPOCH + 70 and w.recorder.records[job.id][0]["warned"] is not None
    assert any(f"sent SIGUSR1 to job {job.id}" in t and "reached in 30s" in t for t in w.log.texts())
    w.run_until(EPOCH + 101)
    assert job.state == State.FAILED and len(w.runner.signals) == 1


def test_no_warning_without_a_time_limit_or_without_warn_signal():
    w = World(gpus=2)
    a = w.submit(spec("a", warn_signal=USR1, warn_before=30))
    b = w.submit(spec("b", time_limit=100))
    w.settle()
    for _ in range(3):
        w.clock.advance(60)
        w.engine.tick()
    assert w.runner.signals == [] and a.warned is None and b.warned is None


def test_a_restart_neither_resends_nor_forgets_the_warning():
    w = World(gpus=1)
    sent = w.submit(spec("sent", time_limit=100, warn_signal=USR1, warn_before=30))
    w.settle()
    w.clock.advance(75)
    w.engine.tick()
    assert len(w.runner.signals) == 1
    e2 = restart(w)
    w.clock.advance(5)
    e2.tick()
    assert e2.jobs[sent.id].state == State.RUNNING
    assert w.runner.signals == [] and e2.jobs[sent.id].warned == EPOCH + 75

    w = World(gpus=1)
    due = w.submit(spec("due", time_limit=100, warn_signal=USR1, warn_before=30))
    w.settle()
    w.clock.advance(50)
    e2 = restart(w)                                           # down when it fell due, back at 80 s
    w.clock.advance(30)
    e2.tick()
    assert e2.jobs[due.id].state == State.RUNNING
    assert w.runner.signals == [(due.id, USR1, EPOCH + 80)]


def test_a_new_attempt_is_warned_again():
    w = World(gpus=1, cfg=configmod.Config(retry_backoff=1))
    job = w.submit(spec(time_limit=100, warn_signal=USR1, warn_before=30, retries=1))
    w.settle()
    ticking(w, EPOCH + 260)
    assert job.state == State.FAILED and job.attempt == 2
    assert len(w.runner.signals) == 2


# --- preemption -------------------------------------------------------------------------------------------

CLASSES = (JobClass("urgent", priority=0, preempts=frozenset({"low"})), JobClass("normal", priority=10),
           JobClass("low", priority=20))


def preempting(max_warn_before=300.0, warn_before=20.0, warn=True):
    w = World(gpus=1, cfg=configmod.Config(classes=CLASSES, max_warn_before=max_warn_before))
    low = w.submit(spec("low", job_class="low", **({"warn_signal": USR1, "warn_before": warn_before} if warn else {})))
    w.settle()
    assert low.state == State.RUNNING
    w.clock.advance(10)
    urgent = w.submit(spec("urgent", job_class="urgent"), uid=2000)
    w.settle()
    return w, low, urgent


def test_a_preempted_job_is_warned_and_stopped_warn_before_later():
    w, low, urgent = preempting()
    assert w.runner.signals == [(low.id, USR1, EPOCH + 10)]
    assert low.state == State.STOPPING and low.stop_due == EPOCH + 30 and w.runner.stopped == []
    w.clock.advance(19)
    w.engine.tick()
    assert w.runner.stopped == [] and urgent.state == State.QUEUED
    w.clock.advance(1)
    w.engine.tick()
    assert w.runner.stopped == [low.unit] and low.stop_due is None
    w.run_until(EPOCH + 31)
    assert low.state == State.QUEUED and low.preemptions == 1 and urgent.state == State.RUNNING
    texts = w.log.texts()
    assert texts.index(next(t for t in texts if "sent SIGUSR1" in t)) < texts.index(
        f"job {low.id}: its warning time is over; stopping it")


def test_the_preemption_wait_is_capped_by_max_warn_before_and_none_without_warn_signal():
    w, low, _ = preempting(max_warn_before=5, warn_before=600)
    assert low.stop_due == EPOCH + 15
    w, low, _ = preempting(max_warn_before=0)
    assert w.runner.signals == [] and w.runner.stopped == [low.unit]
    w, low, _ = preempting(warn=False)
    assert w.runner.signals == [] and w.runner.stopped == [low.unit]


def test_a_restart_in_the_window_still_stops_it_when_due():
    w, low, _ = preempting()
    e2 = restart(w)
    assert e2.jobs[low.id].state == State.STOPPING and e2.jobs[low.id].stop_due == EPOCH + 30
    assert w.runner.stopped == []                    # not at once: its warning still has its time
    w.clock.advance(25)
    e2.tick()
    assert w.runner.stopped == [low.unit] and w.runner.signals == []


def test_a_preemption_with_no_main_process_to_warn_stops_at_once():
    w = World(gpus=1, cfg=configmod.Config(classes=CLASSES))
    low = w.submit(spec("low", job_class="low", warn_signal=USR1, warn_before=20))
    w.settle()
    w.runner.signal = lambda job, sig: None          # it hasn't exec'd yet, or has just ended
    w.submit(spec("urgent", job_class="urgent"), uid=2000)
    w.settle()
    assert low.state == State.STOPPING and low.stop_due is None and w.runner.stopped == [low.unit]
    assert any(f"job {low.id}: no main process to send SIGUSR1 to" in t for t in w.log.texts())


def test_cancel_during_the_window_stops_at_once_and_cancels():
    w, low, _ = preempting()
    w.engine.cancel(low, OWNER)
    assert w.runner.stopped == [low.unit] and low.stop_due is None and low.stop_intent == "cancel"
    w.run_until(EPOCH + 11)
    assert low.state == State.CANCELLED


def test_cancel_and_requeue_by_a_person_send_no_warning():
    w = World(gpus=2)
    a = w.submit(spec("a", warn_signal=USR1, warn_before=20))
    b = w.submit(spec("b", warn_signal=USR1, warn_before=20))
    w.settle()
    w.engine.cancel(a, OWNER)
    w.engine.requeue(b, OWNER)
    assert w.runner.signals == [] and sorted(w.runner.stopped) == sorted([a.unit, b.unit])


# --- hooks --------------------------------------------------------------------------------------------------

def test_hooks_start_at_a_final_end_with_the_outcome_and_only_once():
    cfg = configmod.Config(hook_on_finish="/usr/local/bin/report", hook_user="gshooks", hook_timeout=7)
    w = World(gpus=1, cfg=cfg, duration=lambda job: 5, exit_code=lambda job: 3)
    job = w.submit(spec(on_finish="echo $GPUSCHED_STATE", notify="mail"))
    w.run_until(EPOCH + 10)
    assert job.state == State.FAILED and job.hooks == ""
    units = [h.unit for h in w.runner.hooks]
    assert units == [f"gpusched-hook-{job.id}-1.service", f"gpusched-hook-{job.id}-1-admin.service",
                     f"gpusched-notify-{job.id}-1.service"]
    mine, admin, mail = w.runner.hooks
    assert mine.user == "user1000" and mine.argv == ("/bin/bash", "-c", "echo $GPUSCHED_STATE")
    assert admin.user == "gshooks" and admin.argv[-1] == "/usr/local/bin/report"
    assert mail.user == "user1000" and mail.argv[1:] == ("-m", "gpusched.notify")
    env = mine.env
    assert (env["GPUSCHED_STATE"], env["GPUSCHED_EXIT_CODE"], env["GPUSCHED_ATTEMPT"], env["GPUSCHED_JOB_ID"]) == \
        ("failed", "3", "1", str(job.id))
    assert env["GPUSCHED_SIGNAL"] == "" and "exited with code 3" in env["GPUSCHED_REASON"]
    assert w.recorder.records[job.id][0].get("hooks") is None      # started: no longer pending on disk
    w.run_until(EPOCH + 100)
    assert len(w.runner.hooks) == 3


def test_no_hooks_when_a_retry_or_a_preemption_requeues_the_job():
    w = World(gpus=1, cfg=configmod.Config(retry_backoff=1), duration=lambda job: 5,
              exit_code=lambda job: 1 if job.attempt == 1 else 0)
    job = w.submit(spec(on_finish="true", retries=2))
    w.run_until(EPOCH + 6)
    assert job.state == State.QUEUED and w.runner.hooks == []
    ticking(w, EPOCH + 30)
    assert job.state == State.SUCCEEDED and [h.env["GPUSCHED_ATTEMPT"] for h in w.runner.hooks] == ["2"]

    w, low, _ = preempting()
    ticking(w, EPOCH + 40)
    assert low.state == State.QUEUED and low.preemptions == 1 and w.runner.hooks == []


def test_hooks_of_a_job_cancelled_while_queued_and_of_a_dependency_failure():
    w = World(gpus=1)
    first = w.submit(spec("first", on_finish="echo"))
    queued = w.submit(spec("q", on_finish="echo"))
    w.settle()
    w.engine.cancel(queued, OWNER)
    dep = w.submit(spec("dep", after_ok=(999,), on_finish="echo"))
    w.settle()
    states = {h.env["GPUSCHED_JOB_ID"]: h.env["GPUSCHED_STATE"] for h in w.runner.hooks}
    assert states == {str(queued.id): "cancelled", str(dep.id): "dependency_failed"}
    assert first.state == State.RUNNING


def test_hook_failures_are_said_and_not_retried_but_a_lost_bus_is():
    w = World(gpus=1, duration=lambda job: 5)
    a = w.submit(spec("a", on_finish="x", notify="mail"))
    w.runner.hook_fail[f"gpusched-hook-{a.id}-1.service"] = SystemdError("StartTransientUnit: refused")
    w.runner.mail = False
    w.run_until(EPOCH + 6)
    texts = w.log.texts()
    assert any("on_finish hook not started: StartTransientUnit: refused" in t for t in texts)
    assert any("no /usr/sbin/sendmail on this server" in t for t in texts)
    assert a.hooks == "" and w.runner.hooks == []

    w = World(gpus=1, duration=lambda job: 5)
    b = w.submit(spec("b", on_finish="x"))
    w.runner.hook_fail[f"gpusched-hook-{b.id}-1.service"] = SystemdUnavailable("reconnecting")
    w.run_until(EPOCH + 6)
    assert b.hooks == "pending" and w.runner.hooks == []
    w.engine.tick()
    assert b.hooks == "" and [h.unit for h in w.runner.hooks] == [f"gpusched-hook-{b.id}-1.service"]

    w = World(gpus=1, duration=lambda job: 5, cfg=configmod.Config(hook_on_finish="x", hook_user="gone"))
    c = w.submit(spec("c"))
    w.runner.hook_fail[f"gpusched-hook-{c.id}-1-admin.service"] = NoAccount("no such user: gone")
    w.run_until(EPOCH + 6)
    assert any("config on_finish hook not started: no such user: gone" in t for t in w.log.texts())


def test_hooks_pending_at_a_crash_are_started_after_the_restart():
    w = World(gpus=1, duration=lambda job: 5)
    job = w.submit(spec(on_finish="echo"))
    w.runner.hook_fail[f"gpusched-hook-{job.id}-1.service"] = SystemdUnavailable("down")
    w.run_until(EPOCH + 6)
    assert w.recorder.records[job.id][0]["hooks"] == "pending"
    e2 = restart(w)
    assert [h.unit for h in w.runner.hooks] == [f"gpusched-hook-{job.id}-1.service"]
    assert e2.jobs[job.id].hooks == "" and w.recorder.records[job.id][0].get("hooks") is None


def test_a_rejected_file_and_a_job_without_hooks_start_none():
    w = World(gpus=1, duration=lambda job: 1)
    w.submit(spec())
    w.engine.reject(99, "user1000", 1000, "bad.toml", "bad.toml: nope")
    w.run_until(EPOCH + 5)
    assert w.runner.hooks == []


def test_the_hook_units_properties_and_a_clean_reason():
    w = World(gpus=1, duration=lambda job: 1, exit_code=lambda job: 2)
    job = w.submit(spec(on_finish="echo hi"))
    w.run_until(EPOCH + 2)
    job.reason = "bad\x1b[31m\nnews " + "x" * 3000
    env = hooks.outcome_env(job)
    assert "\x1b" not in env["GPUSCHED_REASON"] and "\n" not in env["GPUSCHED_REASON"]
    assert len(env["GPUSCHED_REASON"].encode()) <= hooks.MAX_REASON
    props = dict((name, value) for name, _sig, value in hooks.properties(w.runner.hooks[0], job.id, "/home/u", 60))
    assert props["User"] == "user1000" and props["Slice"] == "gpusched.slice"
    assert props["RuntimeMaxUSec"] == 60_000_000 and props["ExecStart"][0][1] == ["/bin/bash", "-c", "echo hi"]
    assert f"GPUSCHED_JOB_ID={job.id}" in props["Environment"] and props["WorkingDirectory"] == "/home/u"
    assert props["DevicePolicy"] == "closed" and props["NoNewPrivileges"] is True and props["PAMName"] == "gpusched"
    assert props["MemoryMax"] == hooks.MEMORY_MAX and props["TasksMax"] == hooks.TASKS_MAX


def test_a_hook_command_is_never_expanded_by_systemd():
    # systemd expands ${VAR} in ExecStart from the unit's Environment: a config hook that names a variable would
    # get a hostile job name pasted into its bash text. Doubled, every $ reaches bash as written.
    job_hook = hooks.Hook("u.service", "nobody", ("/bin/bash", "-c", 'logger "${GPUSCHED_JOB_NAME}" $$ $HOME'),
                          {"GPUSCHED_JOB_NAME": 'x"; id; "'}, "config on_finish")
    props = dict((name, value) for name, _sig, value in hooks.properties(job_hook, 1, "/", 60))
    assert props["ExecStart"][0][1] == ["/bin/bash", "-c", 'logger "$${GPUSCHED_JOB_NAME}" $$$$ $$HOME']


# --- the main process and the mail --------------------------------------------------------------------------

def test_the_main_process_is_the_monitors_child():
    # 10: the monitor (root, parent 5 outside the scope); 11: the job's main process; 12, 13: its children;
    # 14: an orphan of the job, reparented to init (the user's)
    info = {10: (5, 0), 11: (10, 1000), 12: (11, 1000), 13: (12, 1000), 14: (1, 1000)}
    assert cgroups.pick_main(info, top={10}, uid=1000) == 11
    assert cgroups.pick_main(info, top=set(info), uid=1000) == 11     # "sweep" mode: one cgroup for all
    assert cgroups.pick_main({10: (5, 0)}, top={10}, uid=1000) is None     # the job has ended
    assert cgroups.pick_main({11: (10, 1000)}, top=set(), uid=1000) is None
    # the monitor's fork before it became the user and exec'd the job: not yet (a signal would kill it)
    assert cgroups.pick_main({10: (5, 0), 11: (10, 0)}, top={10, 11}, uid=1000) is None
    assert cgroups.pick_main({10: (5, 0), 11: (10, 0)}, top={10}, uid=0) == 11      # a root job


def test_the_mail_says_the_outcome_and_only_a_bounded_tail(tmp_path):
    log = tmp_path / "7.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(5000)) + b"bad \x1b[2J end\n")
    tail = notify.tail(str(log))
    assert len(tail.splitlines()) == notify.TAIL_LINES and "\x1b" not in tail and tail.endswith("bad ?[2J end")
    assert len(tail.encode()) <= notify.TAIL_BYTES
    env = {"GPUSCHED_JOB_ID": "7", "GPUSCHED_JOB_NAME": "train", "GPUSCHED_USER": "alice", "GPUSCHED_STATE": "failed",
           "GPUSCHED_EXIT_CODE": "3", "GPUSCHED_REASON": "exited with code 3", "GPUSCHED_MAIL_TO": "alice"}
    msg = notify.compose(env, tail)
    assert msg["To"] == "alice" and msg["Subject"] == "gpusched: job 7 (train) failed"
    body = msg.get_content()
    assert "exit code: 3" in body and "line 4999" in body and "line 0\n" not in body
    assert "can't be read" in notify.tail(str(tmp_path / "missing.log"))


def test_timers_alone():
    w = World(gpus=1)
    job = w.submit(spec(time_limit=100, warn_signal=USR1))
    assert timers.warning_due(job) is None                          # queued
    w.settle()
    assert timers.warning_due(job) == EPOCH + 40                    # the default minute before
    assert timers.preempt_delay(job, 30) == 30 and timers.preempt_delay(job, 0) == 0
    job.warned = EPOCH
    assert timers.warning_due(job) is None and timers.preempt_delay(job, 30) == 0


def test_the_warn_examples_checkpoint_when_only_their_main_process_is_signalled(tmp_path):
    import os
    import subprocess
    import time
    from pathlib import Path

    from gpusched import launch
    examples = Path(__file__).resolve().parent.parent / "examples" / "jobs"
    for name, said in (("warn_signal.toml", "warned at step"), ("warn_before.toml", "warned: saving")):
        s = parse((examples / name).read_bytes(), name, owner_is_root=False)
        env = {"PATH": launch.CLEAN_PATH, "HOME": str(tmp_path), "LANG": "C.UTF-8"}
        proc = subprocess.Popen(launch.argv_for(s), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(1.3)
        os.kill(proc.pid, s.warn_signal)               # the main process only, as the runner does
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and said in out and "step 3" not in out, out
    assert (tmp_path / "gpusched-warned.ckpt").read_text().strip() in ("1", "2")


def test_each_users_hooks_run_in_a_bounded_slice_of_their_own_made_once():
    # the runner makes the user's hooks slice (a transient slice with the bounds of all their hooks together),
    # takes an existing one as it is, and starts the hook in it
    import os
    import pwd

    from gpusched import hooks
    from gpusched.runner import ScopeRunner
    from gpusched.scopes import UnitExists

    class Units:
        def __init__(self):
            self.started = []

        def start_service(self, unit, props):
            if unit.endswith(".slice") and any(u == unit for u, _ in self.started):
                raise UnitExists(f"StartTransientUnit {unit}: Unit {unit} already exists.")
            self.started.append((unit, dict((k, v) for k, _, v in props)))

    me = pwd.getpwuid(os.getuid())
    units = Units()
    runner = ScopeRunner(None, None, units, None, None, None)
    for n in (1, 2):
        hook = hooks.Hook(f"gpusched-hook-7-{n}.service", me.pw_name, ("/bin/true",), {}, "on_finish")
        runner.start_hook(hook, 7, 60)
    slice_ = f"gpusched-hooks_{me.pw_uid}.slice"
    assert [u for u, _ in units.started] == [slice_, "gpusched-hook-7-1.service", "gpusched-hook-7-2.service"]
    bounds = units.started[0][1]
    assert (bounds["MemoryMax"], bounds["TasksMax"], bounds["CPUQuotaPerSecUSec"]) == (2 << 30, 512, 1_000_000)
    assert units.started[1][1]["Slice"] == units.started[2][1]["Slice"] == slice_
    # a user name with dashes can't nest one user's slice inside another's: the uid names it
    assert hooks.user_slice(1001).count("-") == 1
