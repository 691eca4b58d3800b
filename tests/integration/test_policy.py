"""The scheduling policy as the daemon runs it (issue 8), against the real gpusched.service in the systemd box:
a class granted to some users, preempting a scavenger class, with a default time limit that is enforced."""

from __future__ import annotations

# top-level keys only (configured() puts these lines above the box's own config): inline tables
CLASSES = ('classes = { debug = { priority = 0, preempts = ["low"], users = ["bob"], default_time_limit = "6s" }, '
           'normal = { priority = 10 }, low = { priority = 20 } }\n')


def test_a_debug_class_job_preempts_a_low_class_one_and_its_default_limit_is_enforced(gs):
    with gs.configured(CLASSES):
        low = gs.submit("alice", 'command = "echo low attempt $GPUSCHED_ATTEMPT; sleep 8"\ngpus = 4\n'
                                 'class = "low"\ngrace = "5s"\n')
        gs.wait(low, "running")
        # the class is bob's: alice's file asking for it is refused (gpuschedctl checks as the daemon will)
        refused = gs.sh("cd /home/alice && printf 'command = \"true\"\\nclass = \"debug\"\\n' > dbg.toml && "
                        "gpuschedctl submit dbg.toml", user="alice", check=False)
        assert refused.returncode != 0 and "debug" in refused.stderr + refused.stdout
        urgent = gs.submit("bob", 'command = "echo urgent; sleep 60"\ngpus = 2\nclass = "debug"\n')
        st = gs.wait(urgent, {"succeeded", "failed"}, timeout=40)
        # no time_limit in the file: the class's 6 s, enforced by systemd (RuntimeMaxUSec)
        assert st["state"] == "failed" and "time limit 6s reached" in st["reason"], st
        st = gs.wait(low, "succeeded", timeout=60)
        assert st["preemptions"] == 1 and st["attempt"] == 2 and st["history"][0]["preempted"] is True
        journal = gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={low}")
        assert f"preempted by job {urgent} (class 'debug')" in journal


def test_without_a_class_priority_does_not_preempt_another_users_job(gs):
    """The default policy: priority orders only a user's own jobs; urgency over others is a class's."""
    low = gs.submit("alice", 'command = "sleep 3"\ngpus = 4\npriority = 200\n')
    gs.wait(low, "running")
    other = gs.submit("bob", 'command = "true"\ngpus = 2\npriority = 100\n')
    st = gs.wait(low, "succeeded", timeout=30)
    assert st["preemptions"] == 0
    assert gs.wait(other, "succeeded", timeout=30)["exit_code"] == 0


def test_show_says_what_is_ahead_of_a_waiting_job_and_the_users_fair_share(gs):
    hog = gs.submit("alice", 'command = "sleep 6"\ngpus = 4\n')
    gs.wait(hog, "running")
    first = gs.submit("bob", 'command = "true"\ngpus = 1\n')
    second = gs.submit("bob", 'command = "true"\ngpus = 1\n')
    out = gs.sh(f"gpuschedctl show {second}", user="bob").stdout
    assert f"ahead: 1 job(s): {first}" in out, out
    assert "fair_share: bob is at" in out and "share of recent GPU time" in out, out
    assert "none: it is first in line" in gs.sh(f"gpuschedctl show {first}", user="alice").stdout
    assert gs.wait(second, "succeeded", timeout=30)["exit_code"] == 0


def _t(st: dict, key: str) -> float:
    from datetime import datetime
    v = st[key]                                   # status files are TOML: a datetime already
    return (v if isinstance(v, datetime) else datetime.fromisoformat(v)).timestamp()


def test_a_short_job_backfills_around_a_reservation_and_a_long_one_waits(gs):
    """EASY backfill in the real service: the first job that can't start holds a reservation (from the running
    job's time limit); a later job that ends before it starts now, one that would run past it waits."""
    hold = gs.submit("alice", 'command = "sleep 8"\ngpus = 3\ntime_limit = "10m"\n')
    gs.wait(hold, "running")
    wide = gs.submit("bob", 'command = "sleep 2"\ngpus = 4\ntime_limit = "1m"\n')
    short = gs.submit("alice", 'command = "true"\ngpus = 1\ntime_limit = "5m"\n')
    long = gs.submit("alice", 'command = "true"\ngpus = 1\ntime_limit = "1h"\n')
    st_short = gs.wait(short, "succeeded", timeout=20)
    st_wide, st_long = gs.status(wide), gs.status(long)
    assert st_wide["state"] == "queued" and "expected to start by" in st_wide["reason"], st_wide
    assert st_long["state"] == "queued" and "due to start (backfill)" in st_long["reason"], st_long
    assert str(wide) in st_long["reason"], st_long
    st_wide = gs.wait(wide, "succeeded", timeout=40)
    st_long = gs.wait(long, "succeeded", timeout=40)
    assert _t(st_short, "started") < _t(st_wide, "started")
    assert _t(st_long, "started") >= _t(st_wide, "ended") - 0.5, (st_wide, st_long)


def test_jobs_that_declare_their_gpu_memory_share_a_gpu_and_others_get_one_to_themselves(gs):
    shared = 'command = "echo on $CUDA_VISIBLE_DEVICES; sleep 5"\ngpus = 1\ngpu_memory = "30G"\nshare = true\n'
    a = gs.submit("alice", shared)
    b = gs.submit("bob", shared)
    c = gs.submit("alice", shared)        # a third 30G on an 80G GPU doesn't fit: another GPU
    whole = gs.submit("bob", 'command = "sleep 5"\ngpus = 1\n')
    sts = {j: gs.wait(j, "running", timeout=20) for j in (a, b, c, whole)}
    idx = {j: [g["index"] for g in st["gpus"]] for j, st in sts.items()}
    assert idx[a] == idx[b], idx                          # packed onto one GPU, both running at once
    assert idx[c] != idx[a] and idx[whole] not in (idx[a], idx[c]), idx
    assert gs.status(a)["state"] == gs.status(b)["state"] == "running"
    for j in (a, b, c, whole):
        assert gs.wait(j, "succeeded", timeout=30)["exit_code"] == 0
    log = gs.sh(f"gpuschedctl logs {b}", user="bob").stdout
    uuid = sts[b]["gpus"][0]["uuid"]
    assert f"on {uuid}" in log, log


def test_fair_share_puts_the_user_below_their_share_first(gs):
    """alice has just used the whole server; her jobs queued before bob's wait behind his, equal shares."""
    hog = gs.submit("alice", 'command = "sleep 5"\ngpus = 4\n')
    gs.wait(hog, "running")
    alice = [gs.submit("alice", 'command = "sleep 1"\ngpus = 4\n') for _ in range(2)]
    bob = [gs.submit("bob", 'command = "sleep 1"\ngpus = 4\n') for _ in range(2)]
    ends = {j: gs.wait(j, "succeeded", timeout=60) for j in alice + bob}
    first_alice = min(_t(ends[j], "started") for j in alice)
    assert all(_t(ends[j], "started") < first_alice for j in bob), ends
