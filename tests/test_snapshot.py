"""The snapshot of job records: a cache for a fast start that never wins over a record file it didn't see."""

import json
import os
import time

import pytest

from gpusched import jobfile, lifecycle, snapshot
from gpusched.model import Gpu, State
from gpusched.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="status copies are given to the job's user: root")

SOURCES = [
    b'command = "python train.py"\ngpus = 2\ntags = ["a", "b"]\n[limits]\nmemory = "4G"\n',
    b'command = ["python", "-c", "print(1)"]\nname = "argv"\ngpu_ids = [0, "GPU-x"]\nenv = {A = "1"}\n',
    b'command = "true"\ngpus = 0\ntime_limit = "1h"\ngrace = "5s"\nstop_signal = "SIGINT"\n',
]


def old(store: Store, job_id: int, seconds: float = 10) -> None:
    """Make a record look written `seconds` ago (a snapshot only trusts records older than its margin)."""
    t = time.time() - seconds
    os.utime(store.record_path(job_id), (t, t))


def fill(tmp_path) -> tuple[Store, dict[int, object]]:
    store = Store(str(tmp_path), say=lambda t: None)
    store.init()
    jobs = {}
    for i, src in enumerate(SOURCES, 1):
        spec = jobfile.parse(src, f"{i}.toml", owner_is_root=True)
        job = lifecycle.accepted(i, spec, "nobody", 65534, 65534, f"{i}.toml", 1_700_000_000.5 + i)
        store.save_source(i, src)
        store.save_status(job)
        jobs[i] = job
    lifecycle.starting(jobs[1], [Gpu(0, "GPU-0", "Sim", 1, 1), Gpu(1, "GPU-1", "Sim", 1, 1)],
                       "gpusched-job-1.scope", store.log_path(1), 1_700_000_100.0, token="t0k")
    store.save_status(jobs[1])
    rejected = lifecycle.rejected(4, "nobody", 65534, "bad.toml", "bad.toml: line 1: nope", 1_700_000_200.0)
    store.save_status(rejected)
    jobs[4] = rejected
    for i in jobs:
        old(store, i)
    return store, jobs


def load(store: Store) -> dict[int, object]:
    errors = []
    got = {j.id: j for j in store.load_jobs_safely(lambda name, e: errors.append((name, e)))}
    assert not errors
    return got


def test_a_snapshot_gives_back_exactly_what_the_records_hold(tmp_path):
    store, jobs = fill(tmp_path)
    from_files = load(store)
    assert store.write_snapshot() == 4
    calls = []
    real = store.load_job
    store.load_job = lambda name: calls.append(name) or real(name)
    from_snapshot = load(store)
    assert calls == []                                      # nothing parsed: all from the snapshot
    assert from_snapshot == from_files
    assert from_snapshot[1].state == State.STARTING and from_snapshot[1].spec.limits.memory == 4 << 30
    assert from_snapshot[2].spec.command == ("python", "-c", "print(1)")
    assert from_snapshot[4].spec is None


def test_a_record_changed_after_the_snapshot_is_read_from_its_file(tmp_path):
    store, jobs = fill(tmp_path)
    load(store)
    store.write_snapshot()
    job = load(store)[3]
    lifecycle.cancel_queued(job, "cancelled by root", 1_700_000_300.0)
    store.save_status(job)                                 # after the snapshot (and within its margin)
    calls = []
    real = store.load_job
    store.load_job = lambda name: calls.append(name) or real(name)
    got = load(store)
    assert calls == ["3.status.toml"] and got[3].state == State.CANCELLED


def test_a_record_the_snapshot_saw_only_just_written_is_read_again(tmp_path):
    store, jobs = fill(tmp_path)
    os.utime(store.record_path(2))                          # written "now": within the snapshot's margin
    load(store)
    store.write_snapshot()
    calls = []
    real = store.load_job
    store.load_job = lambda name: calls.append(name) or real(name)
    load(store)
    assert calls == ["2.status.toml"]


def test_removed_records_stay_removed_and_new_ones_appear(tmp_path):
    store, jobs = fill(tmp_path)
    load(store)
    store.write_snapshot()
    store.remove_jobs([4])
    src = b'command = "true"\n'
    job = lifecycle.accepted(5, jobfile.parse(src, "5.toml", owner_is_root=True), "nobody", 65534, 65534,
                             "5.toml", 1_700_000_400.0)
    store.save_source(5, src)
    store.save_status(job)
    assert sorted(load(store)) == [1, 2, 3, 5]


@pytest.mark.parametrize("damage", ["garbage", "fingerprint", "truncated", "wrong id"])
def test_a_damaged_or_foreign_snapshot_is_ignored(tmp_path, damage):
    store, jobs = fill(tmp_path)
    truth = load(store)
    store.write_snapshot()
    path = os.path.join(str(tmp_path), snapshot.NAME)
    body = open(path, "rb").read()
    header, *rows = body.splitlines(keepends=True)
    if damage == "garbage":
        body = b"\x00not json"
    elif damage == "truncated":
        body = body[: len(body) // 2]
    elif damage == "fingerprint":
        body = json.dumps({**json.loads(header), "fingerprint": "another version"}).encode() + b"\n" + b"".join(rows)
    else:
        ino, size, mtime, row = json.loads(rows[0])
        row[0] = 99 if row[0] != 99 else 98
        rows[0] = json.dumps([ino, size, mtime + 1, row]).encode() + b"\n"
        body = header + b"".join(rows)
    with open(path, "wb") as f:
        f.write(body)
    assert load(store) == truth


def test_stale_people_copies_are_found(tmp_path):
    store, jobs = fill(tmp_path)
    os.unlink(store.status_path(2))
    t = os.stat(store.record_path(3)).st_mtime - 5
    os.utime(store.status_path(3), (t, t))
    load(store)
    assert store.stale_copies == {2, 3}


def test_without_acls_every_live_copy_is_rewritten_after_a_start(tmp_path):
    store, jobs = fill(tmp_path)
    load(store)
    store.write_snapshot()
    store.users_own_copies = True                 # as fix_rights finds on a filesystem without ACLs
    load(store)
    assert store.stale_copies == {1, 2, 3}        # not 4: a rejected job's copy is final
