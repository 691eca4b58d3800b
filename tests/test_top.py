"""gpuschedctl top: the screen and the keys (topview, pure), the snapshot and the actions (top, with a fake
client), and what the daemon answers (topfeed and Manager.top on the engine with fakes, gpu_table's
utilisation). The real terminal, daemon and access rules: tests/integration/test_top.py."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from gpusched import topfeed
from gpusched.access import Access
from gpusched.api import Api, Manager
from gpusched.ctl import client as clientmod
from gpusched import ctl
from gpusched.ctl import top as topmod
from gpusched.ctl import topview
from gpusched.ctl.common import UNREACHABLE, CtlError
from gpusched.ctl.topview import Action, View, cells, draw, handle, text_of
from gpusched.jobfile import JobSpec
from gpusched.model import State
from gpusched.testing import World
from gpusched.usage import GpuSample
from tests.test_ctl import FakeClient

EVIL = "x\x1b]0;pwned\x07\x1b[2J\r\u202ey"
RAW = ("\x1b", "\x07", "\r", "\u202e")
ME, OTHER = 1000, 1001
NOW = 1_800_000_000.0


def gpu(index, state="free", job=None, util=None, foreign=(), name="Simulated A100 80GB"):
    return {"index": index, "name": name, "memory_total": 80 << 30, "memory_free": 70 << 30,
            "memory_used": 10 << 30, "utilization": util, "state": state, "job": job, "contested": False,
            "foreign_pids": [p["pid"] for p in foreign], "foreign": list(foreign)}


def job(i, state="queued", uid=ME, user="alice", name=None, **more):
    d = {"id": i, "user": user, "uid": uid, "name": name or f"job{i}", "state": state,
         "gpus": [0] if state == "running" else [], "gpus_requested": 1, "priority": 100,
         "submitted": NOW - 65}
    if state == "running":
        d["started"] = NOW - 3725
    d.update(more)
    return d


def snapshot(running=(), waiting=(), gpus=None, queued=None):
    running, waiting = list(running), list(waiting)
    return {"gpus": {"gpus": gpus if gpus is not None else [gpu(0, "job 1", 1, 45.0), gpu(1)],
                     "simulated": True, "error": None},
            "counts": {"running": len(running), "queued": len(waiting) if queued is None else queued, "held": 0},
            "draining": None, "running": running, "waiting": waiting}


def evil_snapshot():
    foreign = {"pid": 4242, "user": EVIL, "name": "python", "cmdline": "python " + EVIL, "gpu_memory": 1 << 30}
    return snapshot(running=[job(1, "running", name=EVIL, reason=EVIL)],
                    waiting=[job(2, uid=OTHER, user=EVIL, name=EVIL, reason="needs 4 GPUs " + EVIL),
                             job(3, name="宽" * 40, held=EVIL)],
                    gpus=[gpu(0, "job 1", 1, 45.0, name=EVIL), gpu(1, "foreign", util=99.0, foreign=[foreign])])


def screen(top, view=None, width=120, height=30, **kw):
    return [text_of(line) for line in draw(top, view or View(), width, height, me=ME, now=NOW, **kw)]


# --- the screen -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,height", [(200, 50), (120, 30), (80, 24), (40, 10), (12, 5), (1, 1)])
def test_every_line_is_escaped_and_fits_the_terminal(width, height):
    for view in (View(), View(help=True), View(confirm=job(2, user=EVIL, name=EVIL)), View(message=EVIL)):
        lines = draw(evil_snapshot(), view, width, height, me=ME, now=NOW)
        assert len(lines) <= height
        for line in lines:
            for text, _attr in line:
                assert not any(c in text for c in RAW), text
            assert cells(text_of(line)) <= width, (text_of(line), width)
    wide = screen(evil_snapshot(), width=80)
    assert any("宽" in line and line.endswith("…") for line in wide)        # cut by cells: a wide char is two


def test_the_screen_shows_gpus_with_use_and_holder_foreign_processes_and_jobs_with_reasons():
    top = snapshot(running=[job(1, "running", name="train")],
                   waiting=[job(2, uid=OTHER, user="bob", reason="needs 4 GPUs; 2 free"), job(3, held="alice")],
                   gpus=[gpu(0, "job 1", 1, 45.0),
                         gpu(1, "foreign", util=99.0,
                             foreign=[{"pid": 4242, "user": "carol", "name": "python", "cmdline": "python x.py",
                                       "gpu_memory": 1 << 30}]),
                         gpu(2)])
    lines = screen(top)
    text = "\n".join(lines)
    assert lines[0].startswith("gpusched top") and "1 running, 2 queued, GPUs 1/3 free" in lines[0]
    g0 = next(line for line in lines if line.startswith("0   "))
    assert "45%" in g0 and "10G/80G" in g0 and "job 1: alice train" in g0
    assert "pid 4242  carol  1G  python x.py" in text
    assert any(line.startswith("2 ") and " - " in line and line.rstrip().endswith("free") for line in lines)
    r = next(line for line in lines if line[2:].startswith("1 "))
    assert r.startswith(">*") and "train" in r and "running" in r and "1:02:05" in r   # selected, mine
    w = next(line for line in lines if line[2:].startswith("2 "))
    assert w.startswith("  ") and "bob" in w and "1:05" in w and w.rstrip().endswith("needs 4 GPUs; 2 free")
    assert next(line for line in lines if line[2:].startswith("3 ")).rstrip().endswith("held by alice")
    assert lines[-1] == topview.fit(topview.KEYS, 120)


def test_a_queue_longer_than_the_answer_says_how_many_are_shown():
    top = snapshot(waiting=[job(i) for i in range(2, 12)], queued=100_000)
    text = "\n".join(screen(top))
    assert "WAITING  100000 (the first 10 shown)" in text
    mine = "\n".join(screen(top, View(mine=True)))
    assert "WAITING  yours: 10 shown of 100000 queued" in mine


def test_the_selected_job_stays_on_a_small_screen_and_the_selection_follows_its_id():
    top = snapshot(waiting=[job(i) for i in range(2, 60)])
    view = View(selected=50)
    lines = screen(top, view, height=20)
    assert len(lines) == 20 and any(line.startswith(">") and line[2:].startswith("50 ") for line in lines)
    reordered = snapshot(waiting=[job(i) for i in range(40, 60)])
    lines = screen(reordered, view, height=20)
    assert next(line for line in lines if line.startswith(">"))[2:].startswith("50 ")
    gone = snapshot(waiting=[job(i) for i in range(40, 50)])        # it left: the row nearest where it was
    screen(gone, view, height=20)
    assert view.selected == 49


def test_a_snapshot_has_every_line_and_no_keys_and_an_error_stays_on_the_status_line():
    top = snapshot(waiting=[job(i) for i in range(2, 80)])
    lines = screen(top, height=None)
    assert len(lines) > 80 and topview.KEYS not in lines
    live = screen(top, error="gpusched is not on the system bus")
    assert live[-2].startswith("gpusched unreachable, retrying: gpusched is not on the system bus")
    assert screen(None)[0].startswith("gpusched top")               # before the first answer


def test_the_summary_says_draining_and_a_failing_probe():
    top = snapshot()
    top["draining"] = "root"
    top["gpus"]["error"] = "NVML: " + EVIL
    text = "\n".join(screen(top))
    assert "draining (by root)" in text and "GPU probe failing: NVML: x\\x1b]0;pwned" in text


# --- the keys -----------------------------------------------------------------------------------------------

def two():
    return snapshot(running=[job(1, "running")], waiting=[job(2, held="alice"), job(3, uid=OTHER, user="bob")])


def test_moving_the_selection():
    top, view = two(), View()
    assert handle(view, "down", top) is None and view.selected == 2
    handle(view, "j", top)
    assert view.selected == 3
    handle(view, "j", top)
    assert view.selected == 3                                        # the last row stays
    handle(view, "k", top)
    handle(view, "up", top)
    assert view.selected == 1
    handle(view, "end", top)
    assert view.selected == 3
    handle(view, "home", top)
    assert view.selected == 1


def test_cancel_asks_first_and_only_y_confirms():
    top, view = two(), View(selected=3)
    assert handle(view, "c", top) is None and view.confirm["id"] == 3
    assert "Cancel job 3 (bob, job3)? y/n" in "\n".join(screen(top, view))
    assert handle(view, "y", top) == Action("act", job(3, uid=OTHER, user="bob"), "cancel")
    assert view.confirm is None
    handle(view, "c", top)
    assert handle(view, "n", top) is None and view.message == "job 3 not cancelled"
    handle(view, "c", top)
    assert handle(view, "q", top) is None                            # q answers the question, doesn't quit


def test_hold_toggles_and_a_running_job_is_refused_on_the_status_line():
    top = two()
    assert handle(View(selected=2), "h", top).verb == "release"     # held: released
    assert handle(View(selected=3), "h", top).verb == "hold"
    view = View(selected=1)
    assert handle(view, "h", top) is None and view.error and "only a queued job can be held" in view.message


def test_log_show_help_mine_refresh_and_quit():
    top = two()
    assert handle(View(selected=2), "l", top) == Action("log", job(2, held="alice"))
    assert handle(View(selected=2), "enter", top).kind == "show"
    view = View()
    assert handle(view, "?", top) is None and view.help
    assert handle(view, "q", top) is None and not view.help         # any key closes the help
    assert handle(view, "m", top) == Action("refresh") and view.mine
    assert handle(view, "r", top) == Action("refresh")
    assert handle(view, "q", top) == Action("quit")
    empty = View()
    assert handle(empty, "c", snapshot()) is None and empty.message == "no job selected"


def test_an_arrays_element_is_named_by_its_array():
    assert topview.target(job(13, array_id=12, array_index=1)) == "12[1]"
    assert topview.target(job(13)) == "13"


# --- the command: snapshot, JSON, actions ---------------------------------------------------------------------

@pytest.fixture
def client(monkeypatch):
    FakeClient.calls, FakeClient.replies = [], {}
    monkeypatch.setattr(clientmod, "Client", FakeClient)
    return FakeClient


def test_not_on_a_terminal_top_prints_one_snapshot_and_json_is_versioned(client, capsys):
    client.replies["Top"] = evil_snapshot()
    assert ctl.main(["top"]) == 0
    out = capsys.readouterr().out
    assert "RUNNING" in out and "WAITING" in out and not any(c in out for c in RAW)
    assert topview.KEYS not in out and client.calls == [("Top", topmod.SNAPSHOT_WAITING, False)]
    assert not any(line.startswith(">") for line in out.splitlines())    # nothing is selected in a snapshot
    assert ctl.main(["top", "--json", "--mine"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["version"] == 1 and payload["top"]["running"][0]["name"] == EVIL     # exact
    assert client.calls[-1] == ("Top", topmod.SNAPSHOT_WAITING, True)


def test_a_daemon_never_reached_exits_3(client, capsys):
    client.replies["Top"] = CtlError("can't reach gpusched on the system bus", UNREACHABLE)
    with pytest.raises(SystemExit) as e:
        ctl.main(["top"])
    assert e.value.code == UNREACHABLE and "can't reach gpusched" in capsys.readouterr().err


def test_actions_use_the_verbs_of_cancel_hold_release_and_an_elements_own(client):
    src = topmod.Source()
    client.replies.update(Cancel="stopping", Hold="held", ElementAct="cancelled")
    assert src.act(job(5), "cancel") == ("job 5: stopping", False)
    assert src.act(job(6), "hold") == ("job 6: held", False)
    assert src.act(job(13, array_id=12, array_index=1), "cancel") == ("job 12[1]: cancelled", False)
    assert client.calls == [("Cancel", 5), ("Hold", 6), ("ElementAct", "cancel", 12, 1)]
    client.replies["Release"] = CtlError("job 7 belongs to bob; only its owner, root or an admin may release it")
    assert src.act(job(7), "release") == ("job 7 belongs to bob; only its owner, root or an admin may "
                                          "release it", True)


def test_a_refresh_that_fails_keeps_the_error_and_reconnects_when_unreachable(client):
    src = topmod.Source()
    client.replies["Top"] = CtlError("gpusched did not answer Top: not on the bus", UNREACHABLE)
    assert src.fetch(20, False) is None and "not on the bus" in src.error and src._client is None
    client.replies["Top"] = snapshot()
    assert src.fetch(20, False) == snapshot() and src.error == ""


def test_the_delay_is_held_between_one_second_and_an_hour_and_must_be_a_number():
    assert topmod.delay("0.1") == topmod.MIN_DELAY and topmod.delay("2.5") == 2.5
    assert topmod.delay("1e9") == topmod.MAX_DELAY
    for bad in ("inf", "nan", "-1", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            topmod.delay(bad)


def test_no_color_whatever_its_value(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert topmod.colour_wanted()
    for value in ("1", "", "0"):
        monkeypatch.setenv("NO_COLOR", value)
        assert not topmod.colour_wanted()


# --- the daemon's side ---------------------------------------------------------------------------------------

def spec(**kw):
    kw.setdefault("gpus", 1)
    return JobSpec(command="sleep 1000", name=kw.pop("name", "train"), **kw)


def test_top_is_bounded_public_and_counts_the_whole_queue():
    w = World(gpus=2)
    running = [w.submit(spec(), uid=ME, user="alice") for _ in range(2)]
    w.settle()
    theirs = [w.submit(spec(name="t" * 1000), uid=OTHER, user="bob") for _ in range(300)]
    mine = w.submit(spec(hold=True), uid=ME, user="alice")
    w.settle()
    assert all(j.state == State.RUNNING for j in running) and mine.held
    m = Manager(w.engine, Access())
    top = m.top(OTHER, 20, False)
    assert [j["id"] for j in top["running"]] == [j.id for j in running]
    assert [j["id"] for j in top["waiting"]] == [j.id for j in theirs[:20]]
    assert top["counts"] == {"running": 2, "queued": 301}
    assert all(len(j["name"]) <= topfeed.NAME for j in top["waiting"])
    assert all(j["reason"] for j in top["waiting"])                  # why each waits
    assert not any(k in j for j in top["running"] for k in ("log", "source", "history", "spec"))
    assert [j["id"] for j in m.top(ME, 20, True)["waiting"]] == [mine.id]     # mine: alice's own queued
    assert len(m.top(OTHER, 10_000, False)["waiting"]) == topfeed.MAX_WAITING
    assert len(Api(m, _Bus()).Top(20, False, dbus_context=_ctx())) < 40_000


def test_the_scan_is_reused_for_a_second_and_the_entries_are_current():
    w = World(gpus=1)
    a = w.submit(spec())
    w.settle()
    m = Manager(w.engine, Access())
    assert [j["id"] for j in m.top(0, 5, False)["running"]] == [a.id]
    b = w.submit(spec())
    assert m.top(0, 5, False)["waiting"] == []                       # the scan of a moment ago
    w.clock.advance(topfeed.SCAN_EVERY)
    assert [j["id"] for j in m.top(0, 5, False)["waiting"]] == [b.id]


def test_gpu_table_has_utilisation_of_gpus_in_use_held_or_foreign():
    w = World(gpus=3)
    w.probe.usage = {0: GpuSample(45.0, 12 << 30, None), 1: GpuSample(99.0, 30 << 30, None),
                     2: GpuSample(0.0, 0, None)}
    w.probe.gpus[1] = dataclasses.replace(w.probe.gpus[1], foreign_pids=(4242,))
    w.engine.probe_gpus()
    w.submit(spec())
    w.settle()
    w.clock.advance(1)
    w.engine.tick()
    table = {g["index"]: g for g in w.engine.gpu_table()}
    assert table[0]["utilization"] == 45.0 and table[0]["memory_used"] == 12 << 30
    assert table[1]["utilization"] == 99.0 and table[1]["memory_used"] == 30 << 30    # foreign: sampled too
    assert table[2]["utilization"] is None and table[2]["memory_used"] == 0          # free: not sampled
    w.clock.advance(3600)                                            # no sample since: none shown as current
    assert w.engine.gpu_table()[0]["utilization"] is None


class _DBus:
    def GetConnectionUnixUser(self, sender):
        return OTHER


class _Bus:
    def get(self, name, path):
        return _DBus()


def _ctx():
    return type("Ctx", (), {"sender": ":1.bob"})()


def test_the_engines_indexes_agree_with_its_jobs_through_starts_stops_requeues_and_ends():
    w = World(gpus=2, duration=lambda job: 30.0 if job.spec.name == "short" else None)
    root = Access().caller(0)
    jobs = [w.submit(spec(name="short" if i % 2 else "long", gpus=i % 3), uid=ME + i % 2) for i in range(12)]

    def agree():
        live = w.engine.live.values()
        assert w.engine.active_ids() == {j.id for j in live if j.state in (State.STARTING, State.RUNNING,
                                                                            State.STOPPING)}
        assert sorted(w.engine.queued_ids()) == sorted(j.id for j in live if j.state == State.QUEUED)
        running, queued = len(w.engine.active_ids()), w.engine.queued_count()
        assert w.engine.status_line().startswith(f"{running} running, {queued} queued")
    w.settle()
    agree()
    w.engine.requeue(next(j for j in jobs if j.state == State.RUNNING), root)
    agree()
    w.runner.fire()
    w.settle()
    agree()
    w.engine.cancel(next(j for j in jobs if j.state == State.QUEUED), root)
    w.run_until(w.clock.time() + 100)
    agree()
    for j in [j for j in jobs if j.state not in (State.CANCELLED, State.SUCCEEDED)]:
        w.engine.cancel(j, root)
    w.runner.fire()
    w.settle()
    agree()
    assert not w.engine.active_ids() and w.engine.queued_count() == 0


def test_the_details_screen_escapes_every_key_and_value_and_keeps_a_commands_lines():
    lines = topview.detail_lines({"id": 3, "name": EVIL, EVIL: 1, "gpus": [{"index": 0, "uuid": "GPU-1"}],
                                  "spec": {"command": f"echo 1\n{EVIL}"}})
    assert not any(c in line for line in lines for c in RAW)
    assert "            gpus: 0" in lines
    i = next(i for i, line in enumerate(lines) if line.endswith("command: echo 1"))
    assert lines[i + 1].startswith(" " * 18 + "x\\x1b]0;pwned")
    view = View(detail=lines)
    assert all(cells(text_of(line)) <= 30 for line in draw(snapshot(), view, 30, 10, me=ME, now=NOW))
