"""Issue 9's job lifecycle in the real service (the systemd box), driven as users drive it: job files through
gpuschedctl, the verbs, the status files and the journal."""

from __future__ import annotations


def test_dependencies_by_name_and_id_and_the_cascade_of_a_failure(gs):
    prep = gs.submit("alice", 'name = "prep"\ncommand = "sleep 2; exit 3"\ngpus = 0\n')
    train = gs.submit("alice", 'name = "train"\ncommand = "true"\ngpus = 0\nafter_ok = ["prep"]\n')
    st = gs.status(train)
    assert st["state"] == "queued" and f"waiting for job {prep} to succeed (after_ok)" in st["reason"], st
    listed = {j["id"]: j for j in gs.list()}
    assert "after_ok" in listed[train]["reason"]
    # gpuschedctl submit --after: any outcome
    gs.sh("cd /home/alice && printf 'command = \"echo cleaned\"\\ngpus = 0\\n' > clean.toml", user="alice")
    clean = int(gs.sh(f"cd /home/alice && gpuschedctl submit --after {train} clean.toml", user="alice").stdout)
    st = gs.wait(train, "dependency_failed", timeout=30)
    assert f"job {prep} failed" in st["reason"], st
    assert gs.wait(clean, "succeeded", timeout=30)["exit_code"] == 0
    assert f"job {train} can never start" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={train}")
    # bob can't wait on alice's job: it is not one of his
    theirs = gs.submit("bob", f'command = "true"\ngpus = 0\nafter = [{prep}]\n')
    assert "no such job of yours" in gs.wait(theirs, "dependency_failed", timeout=20)["reason"]


def test_hold_release_requeue_as_owner_and_not_as_another_user(gs):
    job = gs.submit("alice", 'command = "echo attempt $GPUSCHED_ATTEMPT; sleep 30"\ngpus = 1\nhold = true\n'
                             'grace = "2s"\n')
    st = gs.status(job)
    assert st["state"] == "queued" and st["held"] == "alice" and "release" in st["reason"], st
    refused = gs.sh(f"gpuschedctl release {job}", user="bob", check=False)
    assert refused.returncode != 0 and "belongs to alice" in refused.stderr, refused
    gs.sh(f"gpuschedctl release {job}", user="alice")
    gs.wait(job, "running", timeout=20)
    assert gs.sh(f"gpuschedctl hold {job}", user="alice", check=False).returncode != 0   # running: no hold
    gs.sh(f"gpuschedctl requeue {job}", user="alice")
    st = gs.wait(job, "running", timeout=30)
    st = gs.status(job)
    assert st["attempt"] == 2 and st.get("preemptions", 0) == 0 and st["history"][0]["requeued"] is True, st
    refused = gs.sh(f"gpuschedctl requeue --hold {job}", user="bob", check=False)
    assert refused.returncode != 0 and "belongs to alice" in refused.stderr, refused
    gs.sh(f"gpuschedctl requeue --hold {job}", user="alice")
    st = gs.wait(job, "queued", timeout=30)
    assert st["held"] == "alice" and st["attempt"] == 2, st
    gs.sh(f"gpuschedctl release {job}", user="alice")
    gs.wait(job, "running", timeout=20)
    gs.sh(f"gpuschedctl cancel --now {job}", user="alice")
    gs.wait(job, "cancelled", timeout=20)


def test_a_failure_is_retried_after_its_backoff_and_every_attempt_is_kept(gs):
    with gs.configured('retry_backoff = "1s"'):
        body = ('command = "n=$(cat ~/tries 2>/dev/null || echo 0); echo $((n+1)) > ~/tries; '
                '[ $n -ge 2 ] || exit 7"\ngpus = 0\nretries = 3\nretry_on = [7]\n')
        gs.sh("rm -f /home/alice/tries", user="alice")
        job = gs.submit("alice", body)
        st = gs.wait(job, "succeeded", timeout=60)
        assert st["attempt"] == 3 and st["retried"] == 2, st
        assert [h.get("retried", False) for h in st["history"]] == [True, True, False], st
        assert all("exited with code 7" in h["outcome"] for h in st["history"][:2]), st
        started = [h["started"] for h in st["history"]]
        assert (started[1] - started[0]).total_seconds() >= 1 and (started[2] - started[1]).total_seconds() >= 2
        other = gs.submit("alice", 'command = "exit 5"\ngpus = 0\nretries = 3\nretry_on = [7]\n')
        st = gs.wait(other, "failed", timeout=30)
        assert st["attempt"] == 1 and "exited with code 5" in st["reason"], st


def test_singleton_jobs_of_a_name_run_one_at_a_time(gs):
    body = 'name = "nightly"\ncommand = "sleep 2"\ngpus = 0\nsingleton = true\n'
    a, b = gs.submit("alice", body), gs.submit("alice", body)
    gs.wait(a, "running", timeout=20)
    assert "singleton" in gs.status(b)["reason"]
    sa, sb = gs.wait(a, "succeeded", timeout=30), gs.wait(b, "succeeded", timeout=30)
    assert sb["started"] >= sa["ended"], (sa, sb)


def test_drain_and_pause_are_for_admins_and_survive_a_restart(gs):
    refused = gs.sh("gpuschedctl drain", user="bob", check=False)
    assert refused.returncode != 0 and "only root or an admin" in refused.stderr
    try:
        gs.sh("gpuschedctl drain")
        job = gs.submit("bob", 'command = "true"\ngpus = 0\n')
        st = gs.status(job)
        assert st["state"] == "queued" and "draining" in st["reason"], st
        gs.sh("systemctl restart gpusched")
        assert "draining" in gs.sh("systemctl show -p StatusText --value gpusched").stdout
        assert gs.status(job)["state"] == "queued"
        gs.sh("gpuschedctl pause bob")
        gs.sh("gpuschedctl resume")
        assert "paused by root" in gs.wait(job, "queued")["reason"]
        gs.sh("gpuschedctl unpause bob")
        assert gs.wait(job, "succeeded", timeout=20)["exit_code"] == 0
    finally:
        gs.sh("gpuschedctl resume; gpuschedctl unpause bob", check=False)
