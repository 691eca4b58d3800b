"""Issue 9's time windows and GPUs used outside gpusched: the window rules alone (gpusched/windows.py), the
config and job-file keys, and the engine on the fakes' clock (a job's `window`, a class's boost, foreign =
"wait" | "preempt" with its grace). No sleeps: the clock is moved by hand."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from gpusched import config as configmod
from gpusched import jobfile, windows
from gpusched.jobfile import JobSpec
from gpusched.model import ForeignProcess, State
from gpusched.testing import World
from gpusched.windows import Window

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz=UTC) -> float:
    """"2026-11-23 22:00" (a Monday) on the wall clock of tz -> epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz).timestamp()


NIGHT = Window("night", 22 * 60, 7 * 60)                        # every day 22:00 -> 07:00
WEEKNIGHTS = Window("wk", 22 * 60, 7 * 60, windows.parse_days(["mon", "tue", "wed", "thu", "fri"]))
DAY = Window("day", 9 * 60, 17 * 60, windows.parse_days(["sat"]))


# --- the rules -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("w, when, open_", [
    (NIGHT, "2026-11-23 21:59", False), (NIGHT, "2026-11-23 22:00", True), (NIGHT, "2026-11-24 06:59", True),
    (NIGHT, "2026-11-24 07:00", False), (NIGHT, "2026-11-24 12:00", False),
    # days name the day the window OPENS: Friday night runs into Saturday morning, Saturday night is closed
    (WEEKNIGHTS, "2026-11-28 03:00", True), (WEEKNIGHTS, "2026-11-28 23:00", False),
    (WEEKNIGHTS, "2026-11-23 03:00", False),     # Monday 03:00 belongs to Sunday's night: not opened
    (DAY, "2026-11-28 09:00", True), (DAY, "2026-11-28 17:00", False), (DAY, "2026-11-27 12:00", False),
])
def test_is_open_on_the_wall_clock_with_windows_that_cross_midnight(w, when, open_):
    assert windows.is_open(w, at(when), UTC) is open_


def test_a_window_with_start_equal_to_end_is_a_whole_day_from_start():
    w = Window("all", 6 * 60, 6 * 60, windows.parse_days(["sun"]))
    assert windows.is_open(w, at("2026-11-29 06:00"), UTC) and windows.is_open(w, at("2026-11-30 05:59"), UTC)
    assert not windows.is_open(w, at("2026-11-30 06:00"), UTC) and not windows.is_open(w, at("2026-11-29 05:59"), UTC)


def test_next_open_and_the_reason_a_job_waits():
    t = at("2026-11-24 12:00")                                  # Tuesday noon
    assert windows.next_open(NIGHT, t, UTC) == at("2026-11-24 22:00")
    assert windows.next_open(DAY, t, UTC) == at("2026-11-28 09:00")
    assert windows.next_open(NIGHT, at("2026-11-24 23:00"), UTC) == at("2026-11-24 23:00")    # open: now
    # Saturday 08:00: the weeknights window next opens on Monday evening
    assert windows.next_open(WEEKNIGHTS, at("2026-11-28 08:00"), UTC) == at("2026-11-30 22:00")
    reason, due = windows.waiting_reason("night", NIGHT, t, UTC)
    assert reason == "waits for window night (opens 22:00 Tue)" and due == at("2026-11-24 22:00")
    assert windows.waiting_reason("night", NIGHT, at("2026-11-24 23:00"), UTC) == ("", None)
    gone, due = windows.waiting_reason("night", None, t, UTC)
    assert "not in the config" in gone and due is None
    assert windows.next_close(NIGHT, at("2026-11-24 23:00"), UTC) == at("2026-11-25 07:00")
    assert windows.next_close(NIGHT, at("2026-11-25 03:00"), UTC) == at("2026-11-25 07:00")
    assert windows.next_close(NIGHT, t, UTC) is None


def test_windows_follow_the_wall_clock_across_daylight_saving_changes():
    # Berlin: 2026-03-29 02:00 -> 03:00 (spring), 2026-10-25 03:00 -> 02:00 (autumn)
    early = Window("early", 1 * 60, 5 * 60)
    assert windows.is_open(early, at("2026-03-29 04:30", BERLIN), BERLIN)
    assert windows.next_close(early, at("2026-03-29 01:30", BERLIN), BERLIN) == at("2026-03-29 05:00", BERLIN)
    # a start inside the skipped hour opens when the clock jumps past it
    skipped = Window("skipped", 2 * 60 + 30, 4 * 60)
    opens = windows.next_open(skipped, at("2026-03-29 01:00", BERLIN), BERLIN)
    assert opens == at("2026-03-29 03:00", BERLIN) + 30 * 60 - 3600 or opens == at("2026-03-29 03:30", BERLIN)
    assert windows.is_open(skipped, opens + 1, BERLIN)
    # the night of the autumn change lasts one hour longer in real time, from 22:00 to 07:00 by the clock
    start, end = at("2026-10-24 22:00", BERLIN), windows.next_close(NIGHT, at("2026-10-24 22:00", BERLIN), BERLIN)
    assert end - start == 10 * 3600


def test_a_boost_changes_a_class_priority_only_inside_its_window():
    from gpusched.policy.classes import JobClass
    classes = {"normal": JobClass("normal", 10), "low": JobClass("low", 20, boost=("night", 5))}
    inside = windows.effective_classes(classes, {"night": NIGHT}, at("2026-11-24 23:00"), UTC)
    outside = windows.effective_classes(classes, {"night": NIGHT}, at("2026-11-24 12:00"), UTC)
    assert inside["low"].priority == 5 and inside["normal"].priority == 10
    assert outside["low"].priority == 20 and outside is classes
    assert windows.effective_classes(None, {}, 0.0) is None


# --- config --------------------------------------------------------------------------------------------------

def test_config_windows_foreign_and_a_class_boost():
    cfg = configmod.parse('foreign = "preempt"\nforeign_grace = "3s"\n'
                          '[windows.night]\nstart = "22:00"\nend = "07:00"\ndays = ["Mon", "tuesday"]\n'
                          '[classes.normal]\n[classes.low]\npriority = 20\nboost = { window = "night", priority = 5 }\n')
    assert cfg.windows == (Window("night", 1320, 420, frozenset({0, 1})),)
    assert cfg.foreign == "preempt" and cfg.foreign_grace == 3.0
    assert cfg.class_map()["low"].boost == ("night", 5)
    assert cfg.job_limits().windows == {"night"}
    default = configmod.Config()
    assert default.foreign == "wait" and default.windows == () and default.foreign_grace == 10.0


@pytest.mark.parametrize("text, where", [
    ('[windows.night]\nstart = "22:00"\nend = "7am"\n', ":3: windows.night.end: expected a time of day"),
    ('[windows.night]\nstart = "24:00"\nend = "07:00"\n', ":2: windows.night.start: expected a time of day"),
    ('[windows.night]\nstart = "22:00"\n', "windows.night: end is missing"),
    ('[windows.night]\nstart = "22:00"\nend = "07:00"\nday = ["mon"]\n', ":4: windows.night.day: unknown key"),
    ('[windows.night]\nstart = "22:00"\nend = "07:00"\ndays = ["mo"]\n', ":4: windows.night.days: not a day"),
    ('[windows.night]\nstart = "22:00"\nend = "07:00"\ndays = []\n', "windows.night.days: expected a non-empty"),
    ('foreign = "kill"\n', ":1: foreign: expected \"wait\" or \"preempt\""),
    ('foreign_grace = "soon"\n', ":1: foreign_grace:"),
    ('[classes.normal]\nboost = { window = "night", priority = 5 }\n', ":2: classes.normal.boost: window 'night'"),
    ('[windows.night]\nstart = "22:00"\nend = "07:00"\n[classes.normal]\nboost = { window = "night" }\n',
     ":5: classes.normal.boost: expected"),
])
def test_config_errors_name_the_line_and_key(text, where):
    with pytest.raises(configmod.ConfigError) as e:
        configmod.parse(text, "/etc/gpusched/gpusched.toml")
    assert where in str(e.value), str(e.value)


# --- the job file --------------------------------------------------------------------------------------------

def parse(text: str, windows_: frozenset[str] = frozenset({"night"})) -> JobSpec:
    return jobfile.parse(text.encode(), "job.toml", owner_is_root=False,
                         limits=jobfile.Limits(windows=windows_))


def test_a_job_names_a_configured_window():
    spec = parse('command = "x"\nwindow = "night"\n')
    assert spec.window == "night" and spec.to_dict()["window"] == "night"
    assert "window" not in parse('command = "x"\n').to_dict()
    # read back without the server's limits (a stored file), any well-formed name is kept
    assert jobfile.parse(b'command = "x"\nwindow = "gone"\n', "j.toml", owner_is_root=False).window == "gone"


@pytest.mark.parametrize("text, windows_, message", [
    ('command = "x"\n\nwindow = "nite"\n', frozenset({"night"}), "job.toml:3: window: 'nite': no such time window"),
    ('command = "x"\nwindow = "night"\n', frozenset(), "job.toml:2: window: 'night': this server defines no time"),
    ('command = "x"\nwindow = 3\n', frozenset({"night"}), "job.toml:2: window: expected a window name"),
    ('command = "x"\nwindow = "a b"\n', frozenset({"night"}), "job.toml:2: window: not a window name"),
])
def test_a_window_the_server_does_not_have_is_rejected_with_its_line(text, windows_, message):
    with pytest.raises(jobfile.JobFileError) as e:
        parse(text, windows_)
    assert message in str(e.value), str(e.value)
    if "nite" in text:
        assert "did you mean 'night'" in str(e.value)


# --- the engine: a job's window ------------------------------------------------------------------------------

def world(cfg_text: str = "", gpus: int = 2, start: str = "2026-11-24 12:00", **kw) -> World:
    from gpusched.testing import FakeClock
    w = World(gpus=gpus, cfg=configmod.parse(cfg_text), clock=FakeClock(at(start)), **kw)
    w.engine.tz = UTC
    return w


def spec(name="train", gpus=1, **kw) -> JobSpec:
    return JobSpec(command="python train.py", name=name, gpus=gpus, **kw)


WINDOWS = ('[windows.night]\nstart = "22:00"\nend = "07:00"\n'
           '[windows.lunch]\nstart = "11:30"\nend = "13:00"\n')


def test_a_job_waits_for_its_window_and_starts_when_it_opens_without_an_event():
    w = world(WINDOWS, gpus=3)
    night = w.submit(spec("night", window="night"))
    lunch = w.submit(spec("lunch", window="lunch"))
    plain = w.submit(spec("plain"))
    w.settle()
    assert lunch.state == plain.state == State.RUNNING
    assert night.state == State.QUEUED and night.reason == "waits for window night (opens 22:00 Tue)"
    w.clock.set(at("2026-11-24 21:59"))
    w.engine.tick()
    w.settle()
    assert night.state == State.QUEUED
    # no job ends, no file comes: the opening is a due time, so the tick right after it wakes a pass
    w.clock.set(at("2026-11-24 22:00"))
    w.engine.tick()
    w.settle()
    assert night.state == State.RUNNING
    # running when its window closes: it keeps running (the window gates the start only)
    w.clock.set(at("2026-11-25 08:00"))
    w.engine.tick()
    w.settle()
    assert night.state == State.RUNNING and lunch.state == State.RUNNING


def test_a_job_whose_window_left_the_config_waits_saying_so():
    w = world(WINDOWS)
    job = w.submit(spec(window="weekend"))                      # accepted before the window was removed
    w.settle()
    assert job.state == State.QUEUED and "window weekend, which is not in the config" in job.reason


def test_a_preempted_windowed_job_waits_again_for_its_window():
    w = world('foreign = "preempt"\nforeign_grace = "0s"\n' + WINDOWS, gpus=1, start="2026-11-24 23:00")
    job = w.submit(spec(window="night", grace=1))
    w.settle()
    assert job.state == State.RUNNING
    w.clock.set(at("2026-11-25 08:00"))
    w.engine.requeue(job, type("Who", (), {"name": "alice"})())
    w.run_until(at("2026-11-25 08:01"))
    assert job.state == State.QUEUED and job.reason == "waits for window night (opens 22:00 Wed)"


def test_a_class_boost_orders_its_jobs_first_only_inside_its_window():
    cfg = WINDOWS + ('[classes.normal]\npriority = 10\n'
                     '[classes.low]\npriority = 20\nboost = { window = "night", priority = 5 }\n')
    for when, first in (("2026-11-24 12:00", "normal"), ("2026-11-24 23:00", "low")):
        w = world(cfg, gpus=1, start=when)
        blocker = w.submit(spec("blocker"), uid=3000)
        w.settle()
        low = w.submit(spec("scavenge", job_class="low"), uid=1000)
        normal = w.submit(spec("work"), uid=2000)
        w.settle()
        ahead = w.engine.explain(normal)["ahead"]
        assert (f"job(s): {low.id}" in ahead) == (first == "low"), ahead
        w.engine.cancel(blocker, type("Who", (), {"name": "root"})())
        w.run_until(w.clock.time() + 1)
        started = low if low.state == State.RUNNING else normal
        assert started.job_class == first and (low.state, normal.state).count(State.RUNNING) == 1


# --- the engine: GPUs used outside gpusched ------------------------------------------------------------------

def foreign_on(w: World, index: int, pid: int = 4242, user: str = "alice", name: str = "python") -> None:
    g = w.probe.gpus[index]
    w.probe.gpus[index] = dataclasses.replace(
        g, foreign_pids=(pid,), foreign=(ForeignProcess(pid, user, name, f"{name} train.py"),))


def gone_from(w: World, index: int) -> None:
    w.probe.gpus[index] = dataclasses.replace(w.probe.gpus[index], foreign_pids=(), foreign=())


def probe_at(w: World, seconds: float) -> None:
    w.clock.advance(seconds)
    w.engine.probe_gpus()
    w.settle()


def test_preempt_stops_a_preemptible_job_once_the_foreign_process_stayed_for_the_grace():
    w = world('foreign = "preempt"\nforeign_grace = "5s"\n', gpus=2)
    job = w.submit(spec(grace=2))
    w.settle()
    assert job.state == State.RUNNING and job.gpus[0].index == 0
    foreign_on(w, 0)
    probe_at(w, 1)
    assert job.state == State.RUNNING                            # seen once: within the grace
    row = w.engine.gpu_table()[0]
    assert row["state"] == f"job {job.id}, contested" and row["contested"] and row["foreign_pids"] == [4242]
    assert w.engine.explain(job)["contested"] == "GPU 0 is used outside gpusched by alice (pid 4242, python)"
    probe_at(w, 5)
    assert job.state == State.STOPPING and job.stop_intent == "preempt"
    w.run_until(w.clock.time() + 3)
    # requeued with the same id, why kept in its history; started again on the GPU nobody else uses
    assert job.preemptions == 1 and job.history[0]["preempted"] is True
    assert job.history[0]["reason"] == "GPU 0 is used outside gpusched by alice (pid 4242, python)"
    assert job.state == State.RUNNING and job.gpus[0].index == 1
    lines = [(m, f) for m, _, f in w.log.lines if f.get("GPUSCHED_EVENT") == "preempt"]
    assert lines and "GPU 0 is used outside gpusched by alice (pid 4242, python)" in lines[0][0]


def test_the_requeued_job_reason_names_the_foreign_user_and_pid_while_it_waits():
    w = world('foreign = "preempt"\nforeign_grace = "0s"\n', gpus=1)
    job = w.submit(spec(grace=1))
    w.settle()
    foreign_on(w, 0, pid=777, user="bob", name="jupyter")
    probe_at(w, 1)
    assert job.state == State.STOPPING and job.stop_intent == "preempt"
    assert job.reason == "GPU 0 is used outside gpusched by bob (pid 777, jupyter)"
    w.run_until(w.clock.time() + 1)
    assert job.state == State.QUEUED
    requeued = [m for m, _, f in w.log.lines if f.get("GPUSCHED_EVENT") == "requeue"]
    assert requeued == [f"job {job.id} queued: preempted (GPU 0 is used outside gpusched by bob (pid 777, jupyter)); "
                        f"killed by SIGTERM; requeued"]
    # it waits while the only GPU is used outside gpusched
    assert "GPU(s) 0 busy with processes gpusched did not start" in job.reason
    assert w.recorder.records[job.id][0]["preemptions"] == 1


def test_a_brief_foreign_blip_does_not_stop_a_job():
    w = world('foreign = "preempt"\nforeign_grace = "5s"\n', gpus=1)
    job = w.submit(spec())
    w.settle()
    for _ in range(3):                                           # seen, gone, seen again: the grace restarts
        foreign_on(w, 0)
        probe_at(w, 1)
        probe_at(w, 3)
        gone_from(w, 0)
        probe_at(w, 1)
    assert job.state == State.RUNNING and job.preemptions == 0
    assert w.engine.gpu_table()[0]["state"] == f"job {job.id}"


@pytest.mark.parametrize("cfg_text, preemptible, why", [
    ('foreign = "wait"\nforeign_grace = "0s"\n', True, 'foreign = "wait"'),
    ('foreign = "preempt"\nforeign_grace = "0s"\n', False, "it is not preemptible"),
])
def test_wait_and_non_preemptible_jobs_keep_running_on_a_contested_gpu(cfg_text, preemptible, why):
    w = world(cfg_text, gpus=2)
    job = w.submit(spec(preemptible=preemptible))
    w.settle()
    foreign_on(w, 0)
    for _ in range(5):
        probe_at(w, 10)
    assert job.state == State.RUNNING and job.preemptions == 0
    assert "contested" in w.engine.gpu_table()[0]["state"]
    said = [m for m, _, f in w.log.lines if f.get("GPUSCHED_EVENT") == "foreign"]
    assert len(said) == 1 and why in said[0] and "pid 4242" in said[0]          # once, not every probe
    # a new job does not go to the contested GPU
    other = w.submit(spec("other"))
    w.settle()
    assert other.state == State.RUNNING and other.gpus[0].index == 1
    third = w.submit(spec("third"))
    w.settle()
    assert third.state == State.QUEUED and third.reason.startswith("waiting for 1 GPU(s), 0 free")


def test_a_failed_probe_changes_nothing():
    w = world('foreign = "preempt"\nforeign_grace = "2s"\n', gpus=1)
    job = w.submit(spec())
    w.settle()
    foreign_on(w, 0)
    probe_at(w, 1)
    w.engine.inventory.gpus = None                               # as after a failed probe
    w.engine._foreign()
    assert job.state == State.RUNNING and w.engine._foreign_since == {0: 1.0}


# --- the rules, for any window and any time --------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

any_window = st.builds(Window, st.just("w"), st.integers(0, 24 * 60 - 1), st.integers(0, 24 * 60 - 1),
                       st.frozensets(st.integers(0, 6), min_size=1))
any_time = st.floats(at("2026-01-01 00:00"), at("2027-01-01 00:00")).map(lambda t: float(int(t)))


@settings(max_examples=200, deadline=None)
@given(w=any_window, t=any_time, tz=st.sampled_from([UTC, BERLIN]))
def test_next_open_is_the_first_open_moment(w, t, tz):
    opens = windows.next_open(w, t, tz)
    assert t <= opens <= t + 8 * 86400
    assert windows.is_open(w, opens, tz)
    # closed at every minute boundary before it (the window only changes on whole minutes of the wall clock)
    probe = t
    while probe < opens:
        assert not windows.is_open(w, probe, tz), (w, t, probe, opens)
        probe = (probe // 60 + 1) * 60
    close = windows.next_close(w, opens, tz)
    assert close is not None and close > opens
    assert close == float("inf") and len(w.days) == 7 and w.start == w.end or not windows.is_open(w, close, tz)
