"""The daemon's calls for the web dashboard (webcalls.py) over the real Manager and engine on fakes: only the
web service's user may call, and each verb answers exactly what access.py allows the uid it names."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest

from gpusched import people, webcalls
from gpusched.access import Access
from gpusched.api import Manager
from gpusched.config import Config
from gpusched.errors import Invalid, NotAllowed
from gpusched import jobfile
from gpusched.jobfile import JobSpec
from gpusched.model import State
from gpusched.testing import World

WEB, ALICE, BOB, POSTGRES = 990, 1000, 1001, 101
ACCOUNTS = {WEB: "gpusched-web", ALICE: "alice", BOB: "bob", 0: "root", POSTGRES: "postgres"}


@pytest.fixture(autouse=True)
def accounts(monkeypatch):
    def entry(uid):
        if uid not in ACCOUNTS:
            raise KeyError(uid)
        return SimpleNamespace(pw_uid=uid, pw_gid=uid, pw_name=ACCOUNTS[uid])
    by_name = {v: k for k, v in ACCOUNTS.items()}
    fake = SimpleNamespace(getpwuid=entry, getpwnam=lambda name: entry(by_name.get(name, -1)))
    monkeypatch.setattr(webcalls, "pwd", fake)
    monkeypatch.setattr(webcalls, "group_names", lambda user, gid: [])


def setup(tmp_path, **cfg):
    w = World(gpus=2, duration=lambda job: 600, cfg=replace(Config(), spool_dir=str(tmp_path), **cfg))
    w.settle()
    m = Manager(w.engine, Access())
    return w, webcalls.WebCalls(m, "gpusched-web", person=lambda uid: people.in_range(uid, (1000, 60000)))


def test_only_the_web_user_may_call(tmp_path):
    w, calls = setup(tmp_path)
    for bus_uid in (ALICE, 0, BOB):
        with pytest.raises(NotAllowed, match="only the web dashboard's user"):
            calls.call(bus_uid, ALICE, "whoami", "[]")
    assert calls.call(WEB, ALICE, "whoami", "[]") == {"uid": ALICE, "name": calls.m.access.caller(ALICE).name,
                                                       "admin": False}
    with pytest.raises(NotAllowed, match="the web calls are off"):
        webcalls.WebCalls(calls.m, "no-such-user").call(WEB, ALICE, "whoami", "[]")


def test_bad_requests_are_refused(tmp_path):
    w, calls = setup(tmp_path)
    for verb, args in (("rm", "[]"), ("show", "{}"), ("show", "not json"), ("show", '["1"]'), ("show", "[-1]"),
                       ("show", "[1, 2, 3]"), ("show", "[" + "1," * 5000 + "1]")):
        with pytest.raises((Invalid, NotAllowed)):
            calls.call(WEB, ALICE, verb, args)
    with pytest.raises(NotAllowed, match="no account"):
        calls.call(WEB, 4242, "whoami", "[]")


def test_only_for_people_but_the_gpu_history_for_all(tmp_path):
    w, calls = setup(tmp_path)
    job = w.submit(JobSpec(name="train", command="true", gpus=1), uid=ALICE, user="alice")
    w.settle()
    for uid in (0, POSTGRES):
        for verb, args in (("whoami", "[]"), ("act", f'["cancel", {job.id}]'), ("log", f"[{job.id}, 0]")):
            with pytest.raises(NotAllowed, match="acts for people only"):
                calls.call(WEB, uid, verb, args)
    assert job.state == State.RUNNING
    assert calls.call(WEB, WEB, "gpu_history", "[]") == calls.call(WEB, ALICE, "gpu_history", "[]")


def test_a_job_file_as_large_as_the_cli_takes(tmp_path):
    w, calls = setup(tmp_path)
    text = 'command = """\n' + "echo 'a line of a long inline script'\n" * 2000 + '"""\n'   # 72 KiB
    if os.geteuid() != 0:
        with pytest.raises(PermissionError):           # checked, then written: giving it to alice needs root
            calls.call(WEB, ALICE, "submit", json.dumps([text, "long"]))
        return
    entry = calls.call(WEB, ALICE, "submit", json.dumps([text, "long"]))
    assert (tmp_path / entry["name"]).read_text() == text
    with pytest.raises(Invalid, match="larger than"):
        calls.call(WEB, ALICE, "submit", json.dumps(["#" * (jobfile.MAX_BYTES + 1), "big"]))


def test_show_and_act_follow_access_rules(tmp_path):
    w, calls = setup(tmp_path)
    job = w.submit(JobSpec(name="train", command="true", gpus=1), uid=ALICE, user="alice")
    w.settle()
    assert job.state == State.RUNNING
    assert "log" in calls.call(WEB, ALICE, "show", f"[{job.id}]")
    assert "log" not in calls.call(WEB, BOB, "show", f"[{job.id}]")        # bob sees the public part
    with pytest.raises(NotAllowed, match="belongs to alice"):
        calls.call(WEB, BOB, "act", f'["cancel", {job.id}]')
    assert job.state == State.RUNNING
    calls.call(WEB, ALICE, "act", f'["cancel", {job.id}]')
    assert job.state == State.STOPPING
    with pytest.raises(Invalid, match="no such action"):
        calls.call(WEB, ALICE, "act", f'["rm -rf", {job.id}]')
    page = calls.call(WEB, BOB, "page", "[false, 0]")
    assert [j["id"] for j in page["ok"]] == [job.id] and "log" not in page["ok"][0]


def test_log_chunks_for_the_owner_only(tmp_path):
    w, calls = setup(tmp_path)
    job = w.submit(JobSpec(name="train", command="true", gpus=1), uid=ALICE, user="alice")
    w.settle()
    log = tmp_path / "7.log"
    log.write_bytes(b"x" * (webcalls.LOG_CHUNK + 10))
    job.log = str(log)
    first = calls.call(WEB, ALICE, "log", f"[{job.id}, 0]")
    assert len(base64.b64decode(first["data"])) == webcalls.LOG_CHUNK and first["state"] == "running"
    second = calls.call(WEB, ALICE, "log", f"[{job.id}, {first['offset']}]")
    assert base64.b64decode(second["data"]) == b"x" * 10 and second["offset"] == webcalls.LOG_CHUNK + 10
    assert calls.call(WEB, ALICE, "log", f"[{job.id}, {10 ** 9}]")["reset"] is True    # compacted under its cap
    with pytest.raises(NotAllowed, match="its log is for its owner"):
        calls.call(WEB, BOB, "log", f"[{job.id}, 0]")
    os.unlink(log)
    os.symlink("/etc/shadow", log)                     # never followed
    with pytest.raises(Invalid, match="can't read its log"):
        calls.call(WEB, ALICE, "log", f"[{job.id}, 0]")


def test_submit_checks_like_the_cli_and_drops_the_file_as_the_user(tmp_path):
    w, calls = setup(tmp_path, max_grace=300.0)
    for uid in (0, POSTGRES):              # root and system accounts: never (not a person's account)
        with pytest.raises(NotAllowed, match="acts for people only"):
            calls.call(WEB, uid, "submit", '["command = \\"true\\"", "x"]')
    with pytest.raises(Invalid, match=r"web-x-\w+\.toml:2: grace"):
        calls.call(WEB, ALICE, "submit", '["command = \\"true\\"\\ngrace = \\"1h\\"", "x"]')
    assert os.listdir(tmp_path) == []
    if os.geteuid() != 0:
        pytest.skip("giving the file to its user needs root")
    entry = calls.call(WEB, ALICE, "submit", '["command = \\"true\\"\\ngpus = 1", "../../etc/evil"]')
    assert entry["name"].startswith("web-etcevil-") and "/" not in entry["name"]
    st = os.lstat(tmp_path / entry["name"])
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777, st.st_ino) == (ALICE, ALICE, 0o600, entry["inode"])
    assert (tmp_path / entry["name"]).read_text() == "command = \"true\"\ngpus = 1"

