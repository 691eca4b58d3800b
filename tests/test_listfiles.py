"""The listing files (listfiles.py, listpublish.py): what gpuschedctl reads from them is what the bus would
have said, to each reader as access.py allows, after every kind of change, rendering only what changed,
never per change; and a reader never trusts files that are not the running daemon's."""

import importlib
import json
import os
import subprocess
import sys

import pytest

from gpusched import acl, listfiles
from gpusched.access import Access
from gpusched.api import Manager
from gpusched.listing import HEADER
from gpusched.listpublish import DEBOUNCE, Publisher
from gpusched.model import State
from gpusched.testing import World
from tests.test_arrays import SWEEP, submit_array
from tests.test_engine import spec

ALICE, BOB = 1000, 1001


class Timers:
    """The loop's `later`: records what was armed; fire() runs them."""

    def __init__(self):
        self.armed = []

    def __call__(self, seconds, fn):
        self.armed.append((seconds, fn))

    def fire(self):
        armed, self.armed = self.armed, []
        for _, fn in armed:
            fn()


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(listfiles, "read_root_file", _owned_by_me(listfiles.read_root_file))
    w = World(gpus=2, duration=lambda job: 100)
    timers = Timers()
    p = Publisher(w.engine, timers, lambda *a, **k: None, directory=str(tmp_path / "run" / "listing"))
    p.start()
    assert p.ok
    return w, p, timers


def _owned_by_me(read):
    """The reader insists on root's files; these tests may run as another user, whose files they are."""
    if os.geteuid() == 0:
        return read

    def reread(path, limit=None, head_only=False):
        st = os.lstat(path)
        if st.st_uid != os.geteuid():
            raise listfiles.Unusable("not mine")
        return open(path, "rb").read() if not head_only else open(path, "rb").readline()
    return reread


def bus_table(engine, folded):
    rows, after = [], 0
    while True:
        text, last = engine.page(False, after, Access().caller(0), True, 1 << 20, 1000, fold=folded)
        rows.extend(json.loads(text).split("\n") if json.loads(text) else [])
        if not last:
            return rows
        after = last


def bus_entries(engine, uid):
    out, after = [], 0
    while True:
        text, last = engine.page(False, after, Access().caller(uid), False, 1 << 20, 1000)
        out.extend(json.loads(text))
        if not last:
            return out
        after = last


def file_table(p, folded):
    header, chunks, submitted = listfiles.read(lambda l: (l.header, *l.table(folded, True)), p.directory)
    rows = [r for c in chunks for r in c.decode().split("\n")]
    assert len(submitted) == len(rows)
    return [header] + rows, submitted


def file_entries(p, uid):
    chunks = listfiles.read(lambda l: l.entries(uid), p.directory)
    return json.loads(b"[" + listfiles.ENTRY_SEP.join(chunks) + b"]")


def assert_same_as_bus(w, p):
    for folded in (True, False):
        assert file_table(p, folded)[0] == bus_table(w.engine, folded)
    for uid in (ALICE, BOB, 0):
        assert file_entries(p, uid) == bus_entries(w.engine, uid)


def test_what_the_files_say_is_what_the_bus_says_after_every_kind_of_change(world):
    w, p, timers = world
    m = Manager(w.engine, Access(), p.publish_now)
    w.submit(spec("a"), uid=ALICE)
    w.submit(spec("b"), uid=BOB)
    array = submit_array(w, SWEEP, uid=ALICE)
    w._next_id = listfiles.SEGMENT - 2                  # jobs on both sides of a segment's edge
    for i in range(5):
        w.submit(spec(f"edge{i}", gpus=8), uid=ALICE if i % 2 else BOB)
    late = submit_array(w, SWEEP, uid=BOB)              # an array across no edge, in the second segment
    p.publish()
    assert_same_as_bus(w, p)
    w.settle()                                          # jobs start: rows and folded counts change
    m.element_act("cancel", array[0].id, 5, ALICE)
    m.element_act("hold", late[0].id, 2, BOB)
    m.act("cancel", listfiles.SEGMENT, BOB)
    assert_same_as_bus(w, p)                            # publish_now: no timer needed
    w.run_until(w.clock.time() + 500)                   # jobs end, finished ones leave the live listing
    p.publish()
    assert_same_as_bus(w, p)
    header, submitted = file_table(p, False)
    assert header[0] == HEADER and all(t > 1e9 for t in submitted)


def test_only_changed_segments_are_rendered_again_and_old_files_go(world):
    w, p, _ = world
    w.submit(spec("a"), uid=ALICE)
    w._next_id = listfiles.SEGMENT * 3
    far = w.submit(spec("far", gpus=8), uid=BOB)
    p.publish()
    before = dict(p._current)
    assert sorted(before) == [0, 3]
    w.engine.hold(far, Access().caller(0), True)
    p.publish()
    assert p._current[0] == before[0] and p._current[3][0] > before[3][0]
    names = set(os.listdir(p.directory))
    gen = p._current[3][0]
    assert {f"3.{gen}", f"3.{gen}.json", f"3.{gen}.{BOB}"} <= names
    assert not any(n.startswith(f"3.{before[3][0]}") for n in names)      # the old generation is gone
    p.publish()                                         # nothing changed: nothing rendered
    assert p._current == {0: before[0], 3: p._current[3]}


def test_a_change_arms_one_timer_and_an_idle_daemon_none(world):
    w, p, timers = world
    assert timers.armed == []
    for i in range(50):
        w.submit(spec(f"j{i}", gpus=8))
    assert len(timers.armed) == 1 and timers.armed[0][0] >= DEBOUNCE
    renders = p.renders
    timers.fire()
    assert p.renders == renders + 1 and timers.armed == []
    timers.fire()
    assert p.renders == renders + 1                      # idle: no timer, no render


def test_a_costly_render_spaces_the_next(world, monkeypatch):
    w, p, timers = world
    now = [100.0]
    p.clock = lambda: now[0]
    w.submit(spec("a", gpus=8))
    real = p._render

    def slow():
        rendered = real()
        now[0] += 2.0                                    # this render took 2 s
        return rendered
    monkeypatch.setattr(p, "_render", slow)
    timers.fire()
    w.submit(spec("b", gpus=8))
    assert timers.armed[0][0] == pytest.approx(8.0)      # BUDGET (4) times 2 s after it ended


def test_private_entries_go_only_to_their_owner(world):
    w, p, _ = world
    w.submit(spec("mine"), uid=ALICE)
    w.submit(spec("theirs"), uid=BOB)
    p.publish()
    alice = {e["name"]: e for e in file_entries(p, ALICE)}
    assert "source" in alice["mine"] and "log" in alice["mine"]
    assert "source" not in alice["theirs"] and "log" not in alice["theirs"] and "history" not in alice["theirs"]
    gen = p._current[0][0]
    path = os.path.join(p.directory, f"0.{gen}.{ALICE}")
    st = os.stat(path)
    assert st.st_mode & 0o077 == (0o040 if p.private else 0) and st.st_uid == os.geteuid()
    if p.private and os.geteuid() == 0:                  # readable by alice alone, through the ACL
        entries = acl.decode(os.getxattr(path, acl.XATTR))
        assert [e[2] for e in entries if e[0] == acl.USER] == [ALICE]
        assert (acl.OTHER, 0, acl.UNDEFINED_ID) in entries
    public = os.path.join(p.directory, f"0.{gen}.json")
    assert b"mine.toml" not in open(public, "rb").read()    # a source file name is private


def test_an_admin_who_is_not_root_reads_from_the_bus(world, monkeypatch):
    w, p, _ = world
    p.admin_gid = 4242
    w.submit(spec("a"))
    p.publish()
    monkeypatch.setattr(os, "getgroups", lambda: [4242])
    with pytest.raises(listfiles.Unusable, match="admin"):
        listfiles.read(lambda l: l.entries(ALICE), p.directory)


def test_files_of_a_daemon_that_is_gone_or_a_changing_generation_are_not_used(world, monkeypatch):
    w, p, _ = world
    w.submit(spec("a"))
    p.publish()
    index = os.path.join(p.directory, "index")
    d = json.load(open(index))
    json.dump(dict(d, start=d["start"] + 1), open(index, "w"))     # another process with the same pid
    with pytest.raises(listfiles.Unusable, match="gone"):
        listfiles.read(lambda l: l.table(True), p.directory)
    json.dump(d, open(index, "w"))
    os.unlink(os.path.join(p.directory, f"0.{p._current[0][0]}"))  # replaced under every read
    with pytest.raises(listfiles.Unusable, match="changed"):
        listfiles.read(lambda l: l.table(True), p.directory)
    p.close()
    with pytest.raises(listfiles.Unusable, match="no listing files"):
        listfiles.read(lambda l: l.table(True), p.directory)


def test_a_directory_others_may_write_is_not_used(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    said = []
    p = Publisher(World().engine, Timers(), lambda text, *a: said.append(text), directory=str(d / "listing"))
    p.start()
    assert not p.ok and "no listing files" in said[0]


def test_start_clears_an_earlier_daemons_files(tmp_path):
    d = tmp_path / "run" / "listing"
    d.mkdir(parents=True)
    (d / "index").write_text("{}")
    (d / "7.3").write_text("old")
    p = Publisher(World().engine, Timers(), lambda *a: None, directory=str(d))
    p.start()
    assert os.listdir(d) == []


def test_a_segment_file_is_checked(tmp_path):
    data = listfiles.encode_segment({"gen": 1, "seg": 0}, {k: b"x" for k in listfiles.PARTS})
    header, parts = listfiles.decode_segment(data)
    assert parts["rows"] == b"x" and header["gen"] == 1
    with pytest.raises(listfiles.Unusable):
        listfiles.decode_segment(data[:-1])


def test_the_client_starts_without_the_bus_the_config_or_the_policy():
    """gpuschedctl list reads files: importing PyGObject, pydbus, the config, the job-file parser, the job
    model or dataclasses would cost more than the read itself (docs/performance.md)."""
    from gpusched import config
    assert importlib.import_module("gpusched.ctl.main").DEFAULT_CONFIG == config.DEFAULT_PATH
    out = subprocess.run([sys.executable, "-c", "import sys, gpusched.ctl.main; print(sorted(k for k in sys.modules "
                          "if k.split('.')[0] in ('gi', 'pydbus') or k in ('gpusched.policy', 'gpusched.config', 'gpusched.jobfile', "
                          "'gpusched.model', 'dataclasses')))"],
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "[]"


def test_queued_jobs_of_a_state_are_listed_in_it(world):
    w, p, _ = world
    job = w.submit(spec("a", gpus=8))
    p.publish()
    rows, _ = file_table(p, False)
    assert job.state == State.QUEUED and " queued " in rows[1]


def test_a_change_renders_that_job_alone_and_keeps_the_others_lines_from_the_files(world, monkeypatch):
    """No per-job cache in the daemon: a segment is rendered again from its previous files, with only the
    jobs that changed rendered anew (listpublish._kept)."""
    from gpusched import listpublish
    w, p, _ = world
    jobs = [w.submit(spec(f"j{i}", gpus=8), uid=(ALICE, BOB, 0)[i % 3]) for i in range(30)]
    p.publish()
    rendered = []
    real = listpublish.listing.lines
    monkeypatch.setattr(listpublish.listing, "lines", lambda job: rendered.append(job.id) or real(job))
    w.engine.hold(jobs[7], Access().caller(0), True)
    p.publish()
    assert rendered == [jobs[7].id]
    assert_same_as_bus(w, p)
    w.engine.cancel(jobs[3], Access().caller(0))        # a job leaves the segment: nothing rendered
    w.submit(spec("new", gpus=8), uid=BOB)
    rendered.clear()
    p.publish()
    assert rendered == [w._next_id - 1]
    assert_same_as_bus(w, p)
    assert not p._fresh and len(p._current[0].ids) == 30


def test_a_segment_whose_files_disagree_is_rendered_again_from_its_jobs(world):
    w, p, _ = world
    said = []
    p.log = lambda text, *a: said.append(text)
    jobs = [w.submit(spec(f"j{i}", gpus=8), uid=(ALICE, BOB)[i % 2]) for i in range(10)]
    p.publish()
    gen = p._current[0].gen
    path = os.path.join(p.directory, f"0.{gen}.{ALICE}")     # one of alice's entries lost
    data = open(path, "rb").read()
    os.chmod(path, 0o600)
    open(path, "wb").write(data[:data.rindex(listfiles.ENTRY_SEP)])
    w.engine.hold(jobs[1], Access().caller(0), True)
    p.publish()
    assert "rendered again from its jobs" in said[0]
    assert_same_as_bus(w, p)


def test_after_a_failed_write_every_segment_is_written_again(world, monkeypatch):
    from gpusched import listpublish
    w, p, timers = world
    said = []
    p.log = lambda text, *a: said.append(text)
    w.submit(spec("a", gpus=8), uid=ALICE)
    w._next_id = listfiles.SEGMENT * 2
    w.submit(spec("b", gpus=8), uid=BOB)
    timers.fire()
    real = listpublish.atomic_write

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(listpublish, "atomic_write", full)
    w.submit(spec("c", gpus=8), uid=BOB)
    timers.fire()
    assert "can't write the listing files" in said[0] and os.listdir(p.directory) == []
    with pytest.raises(listfiles.Unusable):
        listfiles.read(lambda l: l.table(True), p.directory)
    monkeypatch.setattr(listpublish, "atomic_write", real)
    timers.fire()                                       # the retry: every segment, found again from the jobs
    assert sorted(p._current) == [0, 2]
    assert_same_as_bus(w, p)


def test_the_files_follow_many_random_changes(world):
    """Jobs of several owners interleaved across segment edges, arrays, holds, cancels, starts and ends: after
    each round the files say what the bus says, to each reader."""
    import random
    w, p, timers = world
    m = Manager(w.engine, Access(), p.publish_now)
    rnd = random.Random(7)
    owners = (ALICE, BOB, 0)
    w._next_id = listfiles.SEGMENT - 20
    jobs = []
    for round in range(8):
        for _ in range(rnd.randrange(1, 15)):
            if rnd.random() < 0.15:
                jobs.extend(submit_array(w, SWEEP, uid=rnd.choice((ALICE, BOB))))
            else:
                jobs.append(w.submit(spec(f"r{round}", gpus=rnd.choice((1, 8))), uid=rnd.choice(owners)))
        for job in rnd.sample(jobs, min(len(jobs), 4)):
            if job.id in w.engine.live:
                act = rnd.choice(("hold", "release", "cancel"))
                try:
                    m.act(act, job.id, 0)
                except Exception:  # noqa: BLE001 - an act that does not apply to this job's state
                    pass
        w.run_until(w.clock.time() + rnd.choice((0, 50, 150)))
        timers.fire()
        assert_same_as_bus(w, p)
