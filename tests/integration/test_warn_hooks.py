"""Issue 9's warnings and hooks in the real service (the systemd box), driven as users drive it: a job that
traps its warn_signal before its time limit and before a preemption, on_finish hooks as the job's user (and
the config's as its own user), a hook's timeout, and notify = "mail" through a sendmail that captures."""

from __future__ import annotations

import time

# top-level keys only (configured() puts these lines above the box's own config): inline tables
CLASSES = ('classes = { debug = { priority = 0, preempts = ["low"], users = ["bob"], default_time_limit = "5s" }, '
           'normal = { priority = 10 }, low = { priority = 20 } }\n')


def _wait_file(gs, path: str, timeout: float = 20, needle: str = "") -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = gs.sh(f"cat {path}", check=False)
        if done.returncode == 0 and done.stdout and needle in done.stdout:
            return done.stdout
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear in {timeout}s")


def test_the_warning_reaches_the_main_process_before_the_time_limit(gs):
    # the trap runs in the job's main process (bash); a worker that doesn't trap USR1 must live on
    body = ('command = """\n'
            'python3 -c "import time; time.sleep(600)" & worker=$!\n'
            'trap \'echo "warned attempt $GPUSCHED_ATTEMPT; worker $(kill -0 $worker && echo alive)" '
            '> ~/warned-$GPUSCHED_JOB_ID\' USR1\n'
            'while true; do sleep 0.2; done\n"""\n'
            'gpus = 0\ntime_limit = "8s"\nwarn_signal = "SIGUSR1"\nwarn_before = "4s"\ngrace = "2s"\n')
    gs.sh("rm -f /home/alice/warned-*", user="alice")
    job = gs.submit("alice", body)
    st = gs.wait(job, "failed", timeout=40)
    assert "time limit 8s reached" in st["reason"], st
    assert "warned" in st, st
    marker = gs.sh(f"cat /home/alice/warned-{job}", user="alice").stdout
    assert marker.strip() == "warned attempt 1; worker alive", marker
    assert (st["warned"] - st["started"]).total_seconds() < 8, st
    journal = gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job}")
    assert f"sent SIGUSR1 to job {job} (pid " in journal and "its time limit 8s is reached in" in journal, journal


def test_a_preempted_job_gets_its_warning_before_its_stop(gs):
    with gs.configured(CLASSES):
        body = ('command = """\n'
                '[ "$GPUSCHED_ATTEMPT" -gt 1 ] && exit 0\n'
                'trap \'date +%s.%N > ~/preempt-warned-$GPUSCHED_JOB_ID\' USR1\n'
                'echo trapping\n'
                'while true; do sleep 0.2; done\n"""\n'
                'gpus = 4\nclass = "low"\nwarn_signal = "USR1"\nwarn_before = "3s"\ngrace = "2s"\n')
        gs.sh("rm -f /home/alice/preempt-warned-*", user="alice")
        low = gs.submit("alice", body)
        gs.wait(low, "running", timeout=20)
        _wait_file(gs, f"{gs.state}/logs/{low}.log", needle="trapping")        # its trap is set: the warning can't come before
        urgent = gs.submit("bob", 'command = "sleep 60"\ngpus = 2\nclass = "debug"\n')
        st = gs.wait(low, "succeeded", timeout=60)
        assert st["preemptions"] == 1 and st["attempt"] == 2 and st["history"][0]["preempted"] is True, st
        _wait_file(gs, f"/home/alice/preempt-warned-{low}")
        journal = gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={low}")
        sent = journal.index(f"sent SIGUSR1 to job {low}")
        stop = journal.index(f"job {low}: its warning time is over; stopping it")
        assert sent < stop and "it is being preempted" in journal, journal
        assert f"preempted by job {urgent} (class 'debug')" in journal
        gs.wait(urgent, {"failed", "succeeded"}, timeout=30)


def test_on_finish_runs_as_the_user_with_the_outcome_also_for_a_failed_job(gs):
    hook = 'on_finish = "env | grep ^GPUSCHED_ | sort > ~/hook-$GPUSCHED_JOB_ID.env; id -un >> ~/hook-$GPUSCHED_JOB_ID.env"\n'
    gs.sh("rm -f /home/alice/hook-*", user="alice")
    ok = gs.submit("alice", 'name = "fine"\ncommand = "echo done"\ngpus = 0\n' + hook)
    bad = gs.submit("alice", 'name = "broken"\ncommand = "echo oops; exit 3"\ngpus = 0\n' + hook)
    gs.wait(ok, "succeeded")
    gs.wait(bad, "failed")
    for job, state, code in ((ok, "succeeded", "0"), (bad, "failed", "3")):
        path = f"/home/alice/hook-{job}.env"
        text = _wait_file(gs, path)
        owner = gs.sh(f"stat -c %U {path}").stdout.strip()
        assert owner == "alice", owner
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert env["GPUSCHED_JOB_ID"] == str(job) and env["GPUSCHED_STATE"] == state, text
        assert env["GPUSCHED_EXIT_CODE"] == code and env["GPUSCHED_ATTEMPT"] == "1", text
        assert env["GPUSCHED_USER"] == "alice" and env["GPUSCHED_LOG"].endswith(f"/{job}.log"), text
        assert text.splitlines()[-1] == "alice", text
    assert "exited with code 3" in dict(line.split("=", 1) for line in _wait_file(
        gs, f"/home/alice/hook-{bad}.env").splitlines() if "=" in line)["GPUSCHED_REASON"]
    assert f"started gpusched-hook-{bad}-1.service" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={bad}")
    # alice's hooks ran in her own hooks slice, bounded as a whole
    uid = gs.sh("id -u alice").stdout.strip()
    props = gs.unit_prop(f"gpusched-hooks_{uid}.slice", "MemoryMax", "TasksMax", "CPUQuotaPerSecUSec", "LoadState")
    assert props == {"MemoryMax": str(2 << 30), "TasksMax": "512", "CPUQuotaPerSecUSec": "1s",
                     "LoadState": "loaded"}, props
    fields = gs.journal("-u", f"gpusched-hook-{bad}-1.service", "-o", "verbose", "--output-fields=_SYSTEMD_SLICE")
    assert f"_SYSTEMD_SLICE=gpusched-hooks_{uid}.slice" in fields, fields


def test_a_config_hook_runs_as_its_user_and_a_slow_hook_is_stopped_at_hook_timeout(gs):
    gs.sh("id gshooks >/dev/null 2>&1 || useradd -r -M -d /nonexistent gshooks; rm -rf /var/tmp/gshooks; "
          "mkdir -m 1777 /var/tmp/gshooks; rm -f /home/alice/late-*")
    conf = ("hooks = { on_finish = 'id -un > /var/tmp/gshooks/$GPUSCHED_JOB_ID; echo $GPUSCHED_STATE "
            ">> /var/tmp/gshooks/$GPUSCHED_JOB_ID; printf \"%s\" \"${GPUSCHED_JOB_NAME}\" > "
            "/var/tmp/gshooks/name-$GPUSCHED_JOB_ID', user = \"gshooks\", timeout = \"2s\" }\n")
    with gs.configured(conf):
        # a job name that would be bash code if systemd pasted it into the hook's command (${VAR} in ExecStart)
        hostile = 'x"; touch /var/tmp/gshooks/pwned; echo "'
        bad = gs.submit("alice", f"name = '{hostile}'\ncommand = \"true\"\ngpus = 0\n")
        gs.wait(bad, "succeeded")
        assert _wait_file(gs, f"/var/tmp/gshooks/name-{bad}") == hostile
        assert gs.sh("test -e /var/tmp/gshooks/pwned", check=False).returncode != 0
        job = gs.submit("alice", 'command = "true"\ngpus = 0\non_finish = "sleep 30; touch ~/late-$GPUSCHED_JOB_ID"\n')
        gs.wait(job, "succeeded")
        text = _wait_file(gs, f"/var/tmp/gshooks/{job}")
        assert text.split() == ["gshooks", "succeeded"], text
        assert gs.sh(f"stat -c %U /var/tmp/gshooks/{job}").stdout.strip() == "gshooks"
        unit = f"gpusched-hook-{job}-1.service"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            journal = gs.journal("-u", unit)
            if "timeout" in journal.lower():
                break
            time.sleep(0.5)
        assert "timeout" in journal.lower(), journal
        assert gs.sh(f"systemctl is-active {unit}", check=False).stdout.strip() != "active"
        assert gs.sh(f"test -e /home/alice/late-{job}", check=False).returncode != 0


def test_notify_mail_goes_through_sendmail_and_says_so_when_there_is_none(gs):
    gs.sh("rm -f /usr/sbin/sendmail; rm -rf /var/tmp/gsmail; mkdir -m 1777 /var/tmp/gsmail")
    try:
        none = gs.submit("alice", 'command = "true"\ngpus = 0\nnotify = "mail"\n')
        gs.wait(none, "succeeded")
        deadline = time.monotonic() + 10
        while "no /usr/sbin/sendmail" not in (j := gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={none}")):
            assert time.monotonic() < deadline, j
            time.sleep(0.3)
        gs.sh("printf '#!/bin/sh\\n{ id -un; echo \"$@\"; cat; } > /var/tmp/gsmail/$$\\n' > /usr/sbin/sendmail; "
              "chmod 755 /usr/sbin/sendmail")
        job = gs.submit("alice", 'name = "mailme"\ncommand = "echo the last words; exit 4"\ngpus = 0\nnotify = "mail"\n')
        gs.wait(job, "failed")
        deadline = time.monotonic() + 20
        while not (mail := gs.sh("cat /var/tmp/gsmail/* 2>/dev/null", check=False).stdout):
            assert time.monotonic() < deadline, gs.journal("-u", f"gpusched-notify-{job}-1.service")
            time.sleep(0.3)
        lines = mail.splitlines()
        assert lines[0] == "alice" and lines[1] == "-oi -- alice", mail
        assert f"Subject: gpusched: job {job} (mailme) failed" in mail and "exit code: 4" in mail, mail
        assert "the last words" in mail, mail
    finally:
        gs.sh("rm -f /usr/sbin/sendmail", check=False)
