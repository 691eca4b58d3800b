"""Job arrays (issue 9) in the real service (the systemd box), driven as users drive them: a [sweep] file
through gpuschedctl and the spool, the verbs on an array and on one element, the folded listing, the status
files and the journal."""

from __future__ import annotations

import time

from tests.integration.conftest import SPOOL

SWEEP = ('name = "sweep"\n'
         'command = "echo lr={lr} seed={seed} env=$GPUSCHED_SWEEP_LR,$GPUSCHED_SWEEP_SEED '
         'index=$GPUSCHED_ARRAY_INDEX array=$GPUSCHED_ARRAY_ID > ~/arrays/out-{index}; sleep 1.5"\n'
         'gpus = 1\n[sweep]\nlr = [0.001, "3e-4"]\nseed = [1, 2, 3]\nmax_parallel = 2\n')


def elements(gs, array_id: int, all: bool = True) -> list[dict]:
    return sorted((j for j in gs.list(all=all) if j.get("array_id") == array_id), key=lambda j: j["array_index"])


def wait_all(gs, ids, states, timeout=60) -> list[dict]:
    return [gs.wait(i, states, timeout=timeout) for i in ids]


def test_a_sweep_becomes_its_jobs_with_their_values_and_never_more_than_max_parallel_at_once(gs):
    gs.sh("rm -rf /home/alice/arrays && mkdir /home/alice/arrays", user="alice")
    array = gs.submit("alice", SWEEP)
    jobs = elements(gs, array)
    assert [j["name"] for j in jobs] == [f"sweep[{i}]" for i in range(6)], jobs
    assert [j["array_index"] for j in jobs] == list(range(6)) and jobs[0]["id"] == array
    assert all(j.get("max_parallel") == 2 for j in jobs)
    # folded by default, one line for six jobs; --expand shows each
    folded = gs.sh("gpuschedctl list", user="alice").stdout
    lines = [line for line in folded.splitlines() if line.startswith(f"{array}[")]
    assert len(lines) == 1 and lines[0].startswith(f"{array}[0-5] ") and "sweep " in lines[0], folded
    assert "sweep[3]" not in folded
    assert "sweep[3]" in gs.sh("gpuschedctl list --expand", user="alice").stdout
    # a job after the array by its name waits for all six
    after = gs.submit("alice", 'command = "true"\ngpus = 0\nafter_ok = ["sweep"]\n')
    done = wait_all(gs, [j["id"] for j in jobs], "succeeded")
    st = gs.wait(after, "succeeded", timeout=30)
    assert st["after"] == [["after_ok", array, "sweep"]] and st["started"] >= max(d["ended"] for d in done), st
    # each got its own values: in its command (substituted) and its environment
    expected = [(lr, seed) for lr in ("0.001", "3e-4") for seed in (1, 2, 3)]
    for i, (lr, seed) in enumerate(expected):
        out = gs.sh(f"cat /home/alice/arrays/out-{i}", user="alice").stdout.strip()
        assert out == f"lr={lr} seed={seed} env={lr},{seed} index={i} array={array}", out
    # never more than 2 at once, from the records' own start and end times
    spans = [(st["started"], st["ended"]) for st in done]
    for t, _ in spans:
        assert sum(s <= t < e for s, e in spans) <= 2, spans
    assert len({s for s, _ in spans}) > 2                        # they did run in turns
    folded = gs.sh("gpuschedctl list --all", user="alice").stdout
    assert any(line.startswith(f"{array}[0-5] ") and line.rstrip().endswith("6 succeeded")
               for line in folded.splitlines()), folded
    # one acceptance line for the array in the journal, with its id
    assert f"accepted array {array} 'sweep'" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={array}")


def test_cancel_one_element_then_the_whole_array(gs):
    body = ('name = "long"\ncommand = "sleep 60"\ngpus = 0\ngrace = "2s"\n'
            '[sweep]\nn = [1, 2, 3, 4]\nmax_parallel = 1\n')
    array = gs.submit("alice", body)
    ids = [j["id"] for j in elements(gs, array)]
    gs.wait(ids[0], "running", timeout=20)
    # bob may not touch it, whole or in part
    refused = gs.sh(f"gpuschedctl cancel {array}", user="bob", check=False)
    assert refused.returncode != 0 and "belongs to alice" in refused.stderr, refused
    assert gs.sh(f"gpuschedctl cancel '{array}[2]'", user="bob", check=False).returncode != 0
    out = gs.sh(f"gpuschedctl cancel '{array}[2]'", user="alice").stdout
    assert out.strip() == f"job {array}[2]: cancelled", out
    assert gs.status(ids[2])["state"] == "cancelled" and gs.status(ids[1])["state"] == "queued"
    out = gs.sh(f"gpuschedctl cancel {array}", user="alice").stdout       # the array's id: every element left
    assert f"job {array}: array {array}: " in out and "1 stopping" in out and "2 cancelled" in out, out
    states = [st["state"] for st in wait_all(gs, ids, "cancelled", timeout=30)]
    assert states == ["cancelled"] * 4
    again = gs.sh(f"gpuschedctl cancel {array}", user="alice", check=False)
    assert again.returncode != 0 and "no job of it can be cancelled" in again.stderr, again


def test_hold_and_release_the_whole_array(gs):
    blocker = gs.submit("bob", 'command = "sleep 60"\ngpus = 4\ngrace = "1s"\n')   # every GPU: the array waits
    gs.wait(blocker, "running", timeout=20)
    array = gs.submit("alice", 'name = "wait"\ncommand = "true"\ngpus = 1\n[sweep]\nx = ["a", "b", "c"]\n')
    ids = [j["id"] for j in elements(gs, array)]
    out = gs.sh(f"gpuschedctl hold {array}", user="alice").stdout
    assert out.strip() == f"job {array}: array {array}: 3 held", out
    assert all(gs.status(i).get("held") == "alice" for i in ids)
    gs.sh(f"gpuschedctl cancel {blocker}", user="bob")
    gs.wait(blocker, "cancelled", timeout=20)
    time.sleep(2)                                                    # passes ran: held, so still queued
    assert [gs.status(i)["state"] for i in ids] == ["queued"] * 3
    assert "held by alice" in gs.status(ids[1])["reason"]
    folded = gs.sh("gpuschedctl list", user="alice").stdout
    assert any(line.startswith(f"{array}[0-2] ") and line.rstrip().endswith("3 held") for line in folded.splitlines())
    gs.sh(f"gpuschedctl release {array}", user="alice")
    assert [st["state"] for st in wait_all(gs, ids, "succeeded", timeout=30)] == ["succeeded"] * 3


def test_an_over_large_sweep_is_rejected_with_its_reason_and_kept(gs):
    body = 'command = "echo {a} {b}"\ngpus = 0\n[sweep]\n' \
           f'a = [{", ".join(map(str, range(40)))}]\nb = [{", ".join(map(str, range(30)))}]\n'
    name = gs.drop("alice", body)
    job = gs.job_by_source("alice", name)
    st = gs.wait(job["id"], "rejected")
    assert f"{name}:3: sweep: expands into 1200 jobs; at most 1000 (max_array_size)" in st["reason"], st
    kept = f"{SPOOL}/.rejected/{job['id']}-{name}"
    assert gs.sh(f"cat {kept}").stdout == body
    assert not [j for j in gs.list() if j.get("source") == name]
    assert "expands into 1200 jobs" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job['id']}")


def test_an_array_counts_against_max_queued_per_user(gs):
    with gs.configured("max_queued_per_user = 5\nmax_array_size = 10"):
        gs.sh("gpuschedctl drain")                                   # nothing starts: every job waits
        try:
            body = 'command = "true"\ngpus = 0\n[sweep]\nx = [1, 2, 3, 4]\n'
            first = gs.job_by_source("alice", gs.drop("alice", body))
            assert gs.wait(first["id"], "queued")["array_id"] == first["id"]
            second = gs.job_by_source("alice", gs.drop("alice", body))
            st = gs.wait(second["id"], "rejected")
            assert "its [sweep] makes 4 jobs and alice already has 4 waiting" in st["reason"], st
            assert "max_queued_per_user = 5" in st["reason"]
            ok = gs.job_by_source("alice", gs.drop("alice", 'command = "true"\ngpus = 0\n'))
            assert gs.wait(ok["id"], "queued")["state"] == "queued"         # the fifth job fits
        finally:
            gs.sh("gpuschedctl resume")
