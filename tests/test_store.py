import errno
import json
import os
import stat

import pytest

from gpusched import acl, jobfile, lifecycle
from gpusched.atomicfile import atomic_write
from gpusched.model import Gpu, State
from gpusched.store import Store

T0 = 1_700_000_000.25
# save_status gives status copies to root with an ACL for the job's user (or, without ACLs, to the user):
# only root may do that
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid / gid 0 needs root")


def make_store(path) -> Store:
    s = Store(str(path))
    s.init()
    return s


def leftovers(d):
    return [n for n in os.listdir(d) if n.endswith(".tmp")]


# --- atomic writes --------------------------------------------------------------------------------------------

def test_atomic_write_creates_with_mode(tmp_path):
    p = tmp_path / "f"
    atomic_write(str(p), b"hello\n", mode=0o640)
    assert p.read_bytes() == b"hello\n"
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_and_mode_is_not_masked(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"old contents that are longer")
    old = os.umask(0o077)
    try:
        atomic_write(str(p), b"new", mode=0o644)
    finally:
        os.umask(old)
    assert p.read_bytes() == b"new"
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o644


def test_atomic_write_large_data(tmp_path):
    data = os.urandom(3 << 20)
    atomic_write(str(tmp_path / "big"), data)
    assert (tmp_path / "big").read_bytes() == data


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(str(p), "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_does_not_follow_a_planted_temp_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / f".f.{os.getpid()}.tmp")
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "f"), b"evil")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "f").exists()


# --- ids ------------------------------------------------------------------------------------------------------------

def test_init_creates_the_layout(tmp_path):
    s = make_store(tmp_path / "state")
    for d, mode in ((s.jobs_dir, 0o700), (s.status_dir, 0o755), (s.results_dir, 0o700), (s.logs_dir, 0o755)):
        st = os.lstat(d)
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == mode


def test_ids_start_at_one_and_increase(tmp_path):
    s = make_store(tmp_path)
    assert [s.allocate_id() for _ in range(3)] == [1, 2, 3]
    # next-id holds a ceiling reserved ahead of the ids handed out
    assert int((tmp_path / "next-id").read_text()) >= 4


def test_ids_never_repeat_across_a_new_store(tmp_path):
    seen = []
    for _ in range(4):
        s = make_store(tmp_path)
        seen += [s.allocate_id() for _ in range(3)]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)    # increasing, never repeated (gaps allowed)
    assert leftovers(tmp_path) == []


def test_lost_next_id_resumes_after_highest_status_file(tmp_path):
    s = make_store(tmp_path)
    for _ in range(5):
        s.allocate_id()
    (tmp_path / "jobs" / "17.status.toml").write_text("")
    os.unlink(tmp_path / "next-id")
    assert make_store(tmp_path).allocate_id() == 18


def test_next_id_behind_status_files_is_corrected(tmp_path):
    s = make_store(tmp_path)
    (tmp_path / "jobs" / "9.status.toml").write_text("")
    (tmp_path / "jobs" / ".10.status.toml.123.tmp").write_text("")   # an interrupted write is not a job
    (tmp_path / "next-id").write_text("3\n")
    assert make_store(tmp_path).allocate_id() == 10
    assert s.allocate_id() == 1   # the old instance is stale by design; only one store runs at a time


def test_next_id_ahead_is_kept(tmp_path):
    make_store(tmp_path)
    (tmp_path / "next-id").write_text("100\n")
    assert make_store(tmp_path).allocate_id() == 100


# --- results ------------------------------------------------------------------------------------------------------

def test_read_result(tmp_path):
    s = make_store(tmp_path)
    assert s.read_result(1, 1) is None
    with open(s.result_path(1, 1), "w") as f:
        json.dump({"exit_code": 3, "ended": T0}, f)
    assert s.read_result(1, 1) == {"exit_code": 3, "ended": T0}
    with open(s.result_path(1, 2), "w") as f:
        f.write("{truncated")
    assert s.read_result(1, 2) == {"error": "unreadable result file"}


def test_paths(tmp_path):
    s = Store(str(tmp_path))
    assert s.status_path(5) == str(tmp_path / "status" / "5.toml")
    assert s.source_path(5) == str(tmp_path / "jobs" / "5.toml")
    assert s.result_path(5, 2) == str(tmp_path / "results" / "5.2.json")
    assert s.log_path(5) == str(tmp_path / "logs" / "5.log")


# --- status round trip ----------------------------------------------------------------------------------------------

SOURCE = b'''command = ["python", "train.py"]
name = "resnet"
gpus = 2
gpu_type = "A100"
priority = 20
tags = ["vision", "sweep-3"]
time_limit = "2h"

[env]
WANDB_MODE = "offline"
'''


def gpu(i):
    return Gpu(index=i, uuid=f"GPU-{i}-abcd", name="A100", memory_total=1 << 30, memory_free=1 << 30)


def load_all(s):
    errors = []
    jobs = list(s.load_jobs_safely(lambda name, e: errors.append((name, e))))
    return jobs, errors


def assert_same(a, b):
    for f in ("id", "user", "uid", "gid", "source", "state", "reason", "exit_code", "signal", "gpus", "unit", "log",
              "attempt", "preemptions", "stop_intent", "spec"):
        assert getattr(a, f) == getattr(b, f), f
    for f in ("submitted", "started", "ended", "stop_requested"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert y == pytest.approx(x, abs=1e-5), f
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history):
        assert ha.keys() == hb.keys()
        for k in ha:
            assert hb[k] == pytest.approx(ha[k]) if isinstance(ha[k], float) else hb[k] == ha[k]


@needs_root
def test_status_round_trip_through_load_jobs_safely(tmp_path):
    s = make_store(tmp_path)
    job_id = s.allocate_id()
    spec = jobfile.parse(SOURCE, "resnet.toml", owner_is_root=False)
    job = lifecycle.accepted(job_id, spec, "alice", 1000, 1000, "resnet.toml", T0)
    s.save_source(job_id, SOURCE, 1000)
    s.save_status(job)
    (loaded,), errors = load_all(s)
    assert errors == []
    assert_same(job, loaded)

    # a job with a history: started, preempted, restarted, running
    lifecycle.starting(job, [gpu(0), gpu(1)], "gpusched-job-1.scope", s.log_path(job_id), T0 + 10.5)
    lifecycle.running(job)
    lifecycle.stopping(job, "preempt", "preempted by job 9 (priority 0)", T0 + 20.125)
    lifecycle.ended(job, {"signal": "SIGTERM", "ended": T0 + 21.5}, T0 + 22)
    lifecycle.starting(job, [gpu(3), gpu(1)], "gpusched-job-1.scope", s.log_path(job_id), T0 + 30.75)
    lifecycle.running(job)
    s.save_status(job)
    (loaded,), errors = load_all(s)
    assert errors == []
    assert loaded.state == State.RUNNING
    assert loaded.preemptions == 1 and loaded.attempt == 2
    assert_same(job, loaded)


@needs_root
def test_final_job_round_trip(tmp_path):
    s = make_store(tmp_path)
    job_id = s.allocate_id()
    spec = jobfile.parse(b'command = "exit 3"\n', "fail.toml", owner_is_root=False)
    job = lifecycle.accepted(job_id, spec, "bob", 1001, 1001, "fail.toml", T0)
    lifecycle.starting(job, [], "gpusched-job-1.scope", s.log_path(job_id), T0 + 1)
    lifecycle.running(job)
    lifecycle.ended(job, {"exit_code": 3, "ended": T0 + 2}, T0 + 3)
    s.save_source(job_id, b'command = "exit 3"\n', 1001)
    s.save_status(job)
    (loaded,), _ = load_all(s)
    assert loaded.state == State.FAILED and loaded.exit_code == 3
    assert loaded.name == "fail"
    assert_same(job, loaded)


@needs_root
def test_no_file_is_the_users_the_status_copy_is_readable_by_its_user_through_an_acl(tmp_path):
    s = make_store(tmp_path)
    job = lifecycle.accepted(s.allocate_id(), jobfile.parse(b'command = "x"\n', "x.toml", owner_is_root=False),
                             "alice", 1000, 1000, "x.toml", T0)
    s.save_source(job.id, b'command = "x"\n', 1000)
    s.save_status(job)
    st = os.lstat(s.source_path(job.id))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o400)
    st = os.lstat(s.status_path(job.id))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o440)     # 4: the ACL's mask
    assert acl.decode(os.getxattr(s.status_path(job.id), acl.XATTR)) == acl.decode(acl.read_only_for(1000, 4))
    assert leftovers(s.status_dir) == [] and leftovers(s.jobs_dir) == []


@needs_root
def test_without_acls_the_copy_is_the_users_and_the_journal_is_told_once(tmp_path, monkeypatch):
    said = []
    def no_acls(*a):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    monkeypatch.setattr(acl.os, "setxattr", no_acls)
    s = Store(str(tmp_path), say=said.append)
    s.init()
    for _ in range(2):
        job = lifecycle.accepted(s.allocate_id(), jobfile.parse(b'command = "x"\n', "x.toml", owner_is_root=False),
                                 "alice", 1000, 1000, "x.toml", T0)
        s.save_status(job)
        st = os.lstat(s.status_path(job.id))
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1000, 0o400)
    assert len(said) == 1 and "no POSIX ACLs" in said[0] and "max_log_size" in said[0]


@needs_root
def test_files_left_to_users_by_an_older_version_become_roots_once(tmp_path):
    s = make_store(tmp_path)
    # as the version before ACLs left them: the user's
    for path, mode, data in ((os.path.join(s.status_dir, "5.toml"), 0o400, b"id = 5\n"),
                             (os.path.join(s.logs_dir, "5.log"), 0o600, b"output\n"),
                             (os.path.join(s.jobs_dir, "5.toml"), 0o400, b'command = "x"\n')):
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, 1000, 0)
        os.chmod(path, mode)
    os.symlink("/etc/passwd", os.path.join(s.logs_dir, "6.log"))     # never followed
    os.unlink(os.path.join(s.root, "rights"))                      # as before the upgrade
    s = make_store(tmp_path)
    for path, mode in ((os.path.join(s.status_dir, "5.toml"), 0o440), (os.path.join(s.logs_dir, "5.log"), 0o640)):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode), path
        assert (acl.USER, 4, 1000) in acl.decode(os.getxattr(path, acl.XATTR))
    st = os.lstat(os.path.join(s.jobs_dir, "5.toml"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o400)
    assert os.stat("/etc/passwd").st_uid == 0 and os.path.islink(os.path.join(s.logs_dir, "6.log"))
    with open(os.path.join(s.root, "rights")) as f:
        assert f.read() == "acl\n"
    # done once: a later start doesn't look again
    os.chown(os.path.join(s.logs_dir, "5.log"), 1000, 0)
    assert s.fix_rights() == 0
    assert os.lstat(os.path.join(s.logs_dir, "5.log")).st_uid == 1000


def test_a_full_disk_does_not_stop_the_store_from_starting(tmp_path, monkeypatch):
    said = []
    def full(directory):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(acl, "supported", full)
    s = Store(str(tmp_path), say=said.append)
    s.init()
    assert s.allocate_id() == 1
    assert len(said) == 1 and "retried at the next start" in said[0]
    assert not os.path.exists(os.path.join(s.root, "rights"))


@needs_root
def test_rejected_job_round_trips_without_a_source(tmp_path):
    s = make_store(tmp_path)
    job = lifecycle.rejected(s.allocate_id(), "bob", 1001, "bad.toml", "bad.toml:1: invalid TOML", T0)
    s.save_status(job)
    (loaded,), errors = load_all(s)
    assert errors == []
    assert loaded.state == State.REJECTED and loaded.spec is None
    assert_same(job, loaded)


@needs_root
def test_unreadable_status_files_are_reported_and_skipped(tmp_path):
    s = make_store(tmp_path)
    good = []
    for text in (b'command = "a"\n', b'command = "b"\n'):
        job = lifecycle.accepted(s.allocate_id(), jobfile.parse(text, "j.toml", owner_is_root=False),
                                 "alice", 1000, 1000, "j.toml", T0)
        s.save_source(job.id, text, 1000)
        s.save_status(job)
        good.append(job.id)
    bad_toml = s.allocate_id()
    with open(s.record_path(bad_toml), "w") as f:
        f.write("id = = 3\n")
    no_source = lifecycle.accepted(s.allocate_id(), jobfile.parse(b'command = "c"\n', "c.toml", owner_is_root=False),
                                   "alice", 1000, 1000, "c.toml", T0)
    s.save_status(no_source)
    with open(os.path.join(s.jobs_dir, "notes.txt"), "w") as f:
        f.write("not a status file")
    jobs, errors = load_all(s)
    assert [j.id for j in jobs] == good
    assert sorted(name for name, _ in errors) == sorted([f"{bad_toml}.status.toml", f"{no_source.id}.status.toml"])
    assert all(isinstance(e, Exception) for _, e in errors)


@needs_root
def test_times_just_below_a_whole_second_round_trip(tmp_path):
    s = make_store(tmp_path)
    t = 1_700_000_000.9999996
    job = lifecycle.accepted(s.allocate_id(), jobfile.parse(b'command = "x"\n', "x.toml", owner_is_root=False),
                             "alice", 1000, 1000, "x.toml", t)
    s.save_source(job.id, b'command = "x"\n', 1000)
    s.save_status(job)
    (loaded,), _ = load_all(s)
    assert loaded.submitted == pytest.approx(t, abs=1e-5)


def test_the_peoples_copy_is_never_read_back(tmp_path):
    # the copy in status/ is for people (and on a filesystem without ACLs its user's, who could chmod and
    # edit it): the daemon trusts only its own record in the root-only jobs/ directory
    s = make_store(tmp_path)
    text = b'command = "a"\n'
    job = lifecycle.accepted(s.allocate_id(), jobfile.parse(text, "j.toml", owner_is_root=False),
                             "alice", 1000, 1000, "j.toml", T0)
    s.save_source(job.id, text, 1000)
    s.save_status(job)
    os.chmod(s.status_path(job.id), 0o600)
    with open(s.status_path(job.id), "w") as f:
        f.write(f'id = {job.id}\nuser = "root"\nuid = 0\nstate = "succeeded"\n')
    [loaded] = list(s.load_jobs_safely(lambda name, e: None))
    assert (loaded.uid, loaded.user, loaded.state) == (1000, "alice", "queued")
    assert oct(os.stat(s.jobs_dir).st_mode & 0o777) == "0o700"


# --- expiry: remove_job ---------------------------------------------------------------------------------------

def _finished_job(s: Store, job_id: int, attempts: int = 2):
    spec = jobfile.parse(b'command = "true"\n', "t.toml", owner_is_root=False)
    job = lifecycle.accepted(job_id, spec, "alice", os.getuid(), os.getgid(), "t.toml", T0)
    s.save_source(job_id, b'command = "true"\n', os.getuid())
    for n in range(attempts):
        lifecycle.starting(job, [], f"gpusched-job-{job_id}.scope", s.log_path(job_id), T0 + n, token=f"tok{n}")
        lifecycle.running(job)
        if n < attempts - 1:
            lifecycle.stopping(job, "preempt", "preempted", T0 + n)
            lifecycle.ended(job, {"signal": "SIGTERM", "ended": T0 + n}, T0 + n)
        atomic_write(s.result_path(job_id, job.attempt, job.start_token), b'{"exit_code": 0}')
    lifecycle.ended(job, {"exit_code": 0, "ended": T0 + 9}, T0 + 9)
    s.save_status(job)
    with open(s.log_path(job_id), "wb") as f:
        f.write(b"x" * 100_000)
    return job


def _files_of(s: Store) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), s.root) for d in (s.jobs_dir, s.status_dir, s.results_dir, s.logs_dir)
            for n in os.listdir(d)}


@needs_root
def test_remove_job_removes_everything_of_that_job_only(tmp_path):
    s = make_store(tmp_path)
    _finished_job(s, 7)
    keep = _finished_job(s, 70)                          # 70 and 7: the prefix must match a whole id
    _finished_job(s, 17)
    atomic_write(os.path.join(s.results_dir, ".7.3.tokx.json.999.tmp"), b"{")   # a monitor died mid-write
    before = _files_of(s)
    freed = s.remove_job(7)
    assert freed >= 100_000                               # at least the log's data
    gone = before - _files_of(s)
    assert gone == {"jobs/7.status.toml", "jobs/7.toml", "status/7.toml", "logs/7.log",
                    "results/7.1.tok0.json", "results/7.2.tok1.json", "results/.7.3.tokx.json.999.tmp"}
    assert s.load_job("70.status.toml").id == keep.id
    assert s.remove_job(7) == 0                           # again: nothing left, no error


@needs_root
def test_remove_job_never_follows_links(tmp_path):
    s = make_store(tmp_path)
    _finished_job(s, 3)
    outside = tmp_path / "precious"
    outside.write_bytes(b"keep me")
    os.unlink(s.log_path(3))
    os.symlink(outside, s.log_path(3))                    # the log's owner can't do this, but nothing follows it
    os.link(outside, os.path.join(s.results_dir, "3.1.tok0.json.hard"))   # a hard link frees nothing
    s.remove_job(3)
    assert outside.read_bytes() == b"keep me"
    assert not os.path.lexists(s.log_path(3))


@needs_root
def test_remove_job_refuses_an_active_or_queued_job(tmp_path):
    s = make_store(tmp_path)
    spec = jobfile.parse(b'command = "true"\n', "t.toml", owner_is_root=False)
    job = lifecycle.accepted(5, spec, "alice", os.getuid(), os.getgid(), "t.toml", T0)
    s.save_source(5, b'command = "true"\n', os.getuid())
    s.save_status(job)
    with pytest.raises(ValueError, match="queued"):
        s.remove_job(5)
    lifecycle.starting(job, [], "gpusched-job-5.scope", s.log_path(5), T0)
    lifecycle.running(job)
    s.save_status(job)
    with pytest.raises(ValueError, match="running"):
        s.remove_job(5)
    assert os.path.exists(s.record_path(5)) and os.path.exists(s.source_path(5))


@needs_root
def test_remove_job_of_a_rejected_job_and_of_one_without_a_record(tmp_path):
    s = make_store(tmp_path)
    s.save_status(lifecycle.rejected(4, "bob", os.getuid(), "bad.toml", "bad", T0))
    assert s.remove_job(4) > 0
    assert not os.path.exists(s.record_path(4)) and not os.path.exists(s.status_path(4))
    with open(s.log_path(9), "wb") as f:                  # leftovers of a record already gone
        f.write(b"y" * 10000)
    assert s.remove_job(9) > 0 and not os.path.exists(s.log_path(9))


@needs_root
def test_remove_jobs_many_at_once(tmp_path):
    s = make_store(tmp_path)
    for i in range(1, 21):
        _finished_job(s, i, attempts=1)
    s.remove_jobs(range(1, 11))
    left = {n.split(".")[0] for n in os.listdir(s.jobs_dir)}
    assert left == {str(i) for i in range(11, 21)}
    assert all(int(n.split(".")[0]) > 10 for n in os.listdir(s.results_dir))


def test_a_reserved_result_lands_on_a_full_filesystem(tmp_path):
    """The room for a job's result is taken when it starts; filling the filesystem afterwards doesn't stop
    the result from landing (a size-limited tmpfs, so the test needs root)."""
    import json
    import subprocess

    import pytest

    from gpusched.atomicfile import Reserved, atomic_write
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        slot = Reserved(str(mnt / "1.1.json"))
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"x" * 65536)
                    f.flush()
            except OSError:
                pass
        with pytest.raises(OSError):
            atomic_write(str(mnt / "2.1.json"), b'{"exit_code": 0}' * 100)
        slot.commit(json.dumps({"exit_code": 3}).encode())
        assert json.loads((mnt / "1.1.json").read_text()) == {"exit_code": 3}
        assert sorted(p.name for p in mnt.iterdir()) == ["1.1.json", "filler"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_failed_next_id_write_hands_out_no_id(tmp_path, monkeypatch):
    from gpusched import store as storemod
    st = storemod.Store(str(tmp_path))
    st.init()
    first = st.allocate_id()
    ceiling = int((tmp_path / "next-id").read_text())

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(storemod, "atomic_write", full)
    handed = [first]
    for _ in range(ceiling + 5):
        try:
            handed.append(st.allocate_id())
        except OSError:
            break
    assert max(handed) < ceiling                     # never past what is on disk
    with pytest.raises(OSError):
        st.allocate_id()                             # and again: still nothing handed out
    monkeypatch.undo()
    assert st.allocate_id() == max(handed) + 1
