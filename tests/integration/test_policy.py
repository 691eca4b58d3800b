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
