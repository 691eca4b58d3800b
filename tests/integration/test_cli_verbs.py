"""Issue 11's verbs in the real service (the systemd box), as users run them: wait (exit codes, --timeout, a
daemon restart while waiting), submit of a command, of several files and a directory, --dry-run, why,
priority (owners, others, root; kept across a restart), history's filters and config check."""

from __future__ import annotations

import json
import re
import uuid


def ctl(gs, args: str, user: str | None = "alice", check: bool = False):
    home = "/root" if user is None else f"/home/{user}"
    return gs.sh(f"cd {home} && gpuschedctl {args}", user=user, check=check)


def submit_cmd(gs, args: str, user: str = "alice") -> int:
    p = ctl(gs, f"submit {args}", user=user)
    assert p.returncode == 0, p
    return int(p.stdout.strip())


def test_wait_exit_codes_timeout_restart_and_history_filters(gs):
    tag = f"t{uuid.uuid4().hex[:6]}"
    seven = submit_cmd(gs, f"--gpus 0 --tag {tag} --name seven -- sh -c 'sleep 1; exit 7'")
    ok = submit_cmd(gs, f"--gpus 0 --tag {tag} --name fine -- true")
    p = ctl(gs, f"wait {seven}")
    assert p.returncode == 7 and f"job {seven}: failed (exit code 7)" in p.stdout, p
    p = ctl(gs, f"wait {ok} {seven}")
    assert p.returncode == 1, p                                     # one of several failed
    assert ctl(gs, f"wait {ok} --quiet").returncode == 0
    # --timeout: 124, saying what it still waits for; then killed by its stop signal: 128 + 15
    long = submit_cmd(gs, f"--gpus 1 --tag {tag} --name long -- sleep 300")
    p = ctl(gs, f"wait --timeout 1s {long}")
    assert p.returncode == 124 and f"job {long}" in p.stderr and p.stderr.count("\n") == 1, p
    ctl(gs, f"cancel {long}", check=True)
    assert ctl(gs, f"wait {long}").returncode == 143
    # cancelled before it began: 1
    held = submit_cmd(gs, "--gpus 0 --hold -- true")
    ctl(gs, f"cancel {held}", check=True)
    assert ctl(gs, f"wait {held} --json").returncode == 1
    # the daemon goes away while a job runs: wait says so once, waits, and gets the job's own exit code
    job = submit_cmd(gs, "--gpus 0 -- sh -c 'sleep 6; exit 3'")
    gs.sh(f"su - alice -c 'gpuschedctl wait {job} >/tmp/wait.out 2>/tmp/wait.err; echo $? >/tmp/wait.rc' "
          f"</dev/null >/dev/null 2>&1 &")
    gs.sh("sleep 1.5; systemctl stop gpusched; sleep 2.5; systemctl start gpusched")
    gs.wait(job, "failed", timeout=30)
    gs.sh("for i in $(seq 50); do [ -s /tmp/wait.rc ] && break; sleep 0.2; done")
    assert gs.sh("cat /tmp/wait.rc").stdout.strip() == "3"
    err = gs.sh("cat /tmp/wait.err").stdout
    assert err.count("waiting for it to come back") == 1, err
    # history: by tag, with name, state, user and since
    tagged = json.loads(ctl(gs, f"history --tag {tag} --json", check=True).stdout)["jobs"]
    assert {j["id"] for j in tagged} == {seven, ok, long}, tagged
    named = json.loads(ctl(gs, f"history --tag {tag} --name seven --json", check=True).stdout)["jobs"]
    assert [j["id"] for j in named] == [seven]
    failed = json.loads(ctl(gs, f"history --tag {tag} --state failed --since 1h --json", check=True).stdout)["jobs"]
    assert [j["id"] for j in failed] == [seven]
    assert json.loads(ctl(gs, f"history --tag {tag} --since 2000-01-01 --json").stdout)["jobs"]
    assert json.loads(ctl(gs, f"history --tag {tag} --user bob --json", check=True).stdout)["jobs"] == []
    others = json.loads(ctl(gs, f"history --tag {tag} --user alice --json", user="bob", check=True).stdout)["jobs"]
    assert {j["id"] for j in others} == {seven, ok, long} and all("usage" not in j for j in others)
    p = ctl(gs, "history --state finished")
    assert p.returncode == 1 and "not a final state" in p.stderr, p


def test_submit_dry_run_why_and_priority(gs):
    gs.sh("rm -rf /home/alice/batch /home/alice/one.toml", user="alice")
    gs.sh("mkdir /home/alice/batch && cd /home/alice/batch && "
          "printf 'command = \"sleep 60\"\\ngpus = 1\\ntime_limit = \"10m\"\\nname = \"second\"\\n' > b.toml && "
          "printf 'command = \"sleep 60\"\\ngpus = 1\\ntime_limit = \"10m\"\\nname = \"first\"\\n' > a.toml && "
          "printf 'command = \"true\"\\ngpus = \"many\"\\n' > ../bad.toml && cp b.toml ../one.toml",
          user="alice")
    spool = "ls -A /var/spool/gpusched | grep -v '^\\.' | wc -l"
    # nothing runs: it would start now
    p = ctl(gs, "submit --dry-run one.toml")
    assert p.returncode == 0 and "would start now on GPU(s) 0" in p.stdout, p
    p = ctl(gs, "submit --dry-run bad.toml")
    assert p.returncode == 1 and "gpus" in p.stderr, p
    # one invalid file among several: nothing is submitted
    p = ctl(gs, "submit batch bad.toml")
    assert p.returncode == 1 and "nothing was submitted" in p.stderr, p
    assert gs.sh(spool).stdout.strip() == "0"
    # a job on all four GPUs for an hour at most: then a new one would wait for it
    blocker = submit_cmd(gs, "--gpus 4 --time-limit 1h -- sleep 300")
    gs.wait(blocker, "running", timeout=20)
    p = ctl(gs, "submit --dry-run one.toml")
    assert p.returncode == 0 and "would wait: not enough free GPUs" in p.stdout, p
    assert re.search(r"\(in (59m|1h)", p.stdout), p              # an hour away, less the test's own time
    assert gs.sh(spool).stdout.strip() == "0"                       # the dry run wrote nothing
    # a directory: its *.toml in order, one id per line
    p = ctl(gs, "submit batch", check=True)
    first, second = map(int, p.stdout.split())
    assert gs.status(first)["name"] == "first" and gs.status(second)["name"] == "second"
    # why: place, what blocks it, expected start (alike jobs of one user: in order of arrival)
    p = ctl(gs, f"why {second}", check=True)
    assert f"position: 2 in the queue (after {first})" in p.stdout, p.stdout
    assert "waiting: waiting for 1 GPU(s), 0 free" in p.stdout and "expected start: " in p.stdout, p.stdout
    d = json.loads(ctl(gs, f"why {first} --json", check=True).stdout)["why"]
    assert d["position"] == 1 and d["expected_start"] is not None, d      # by the blocker's time limit
    d = json.loads(ctl(gs, f"why {blocker} --json", user="bob", check=True).stdout)["why"]
    assert d["state"] == "running" and len(d["gpus"]) == 4, d
    # priority: less urgent as owner; not more urgent; not as another user; anything as root
    p = ctl(gs, f"priority {first} 150")
    assert p.returncode == 0 and "priority 100 -> 150" in p.stdout, p
    assert json.loads(ctl(gs, f"why {second} --json", check=True).stdout)["why"]["position"] == 1
    p = ctl(gs, f"priority {first} 120")
    assert p.returncode == 1 and "only make it less urgent" in p.stderr and p.stderr.count("\n") == 1, p
    p = ctl(gs, f"priority {first} 200", user="bob")
    assert p.returncode == 1 and "belongs to alice" in p.stderr, p
    p = ctl(gs, f"priority {second} 5", user=None)
    assert p.returncode == 0 and "priority 100 -> 5" in p.stdout, p
    assert f"job {second}: priority 100 -> 5 by root" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={second}")
    # kept across a restart
    gs.sh("systemctl restart gpusched")
    assert json.loads(ctl(gs, f"show {second} --json", check=True).stdout)["job"]["priority"] == 5
    assert json.loads(ctl(gs, f"show {first} --json", check=True).stdout)["job"]["priority"] == 150
    p = ctl(gs, f"priority {blocker} 300")
    assert p.returncode == 1 and "only a queued job" in p.stderr, p


def test_config_check(gs):
    p = ctl(gs, "config check")
    assert p.returncode == 0 and "/etc/gpusched/gpusched.toml: valid" in p.stdout and "spool_dir" in p.stdout, p
    d = json.loads(ctl(gs, "config check --json", check=True).stdout)
    assert d["valid"] and len(d["config"]["simulated_gpus"]) == 4, d
    gs.sh("printf 'max_running = 2\\nbackfil = true\\n' > /tmp/bad.toml && chmod 644 /tmp/bad.toml")
    p = ctl(gs, "config check /tmp/bad.toml")
    assert p.returncode == 1 and "/tmp/bad.toml" in p.stderr and "backfil" in p.stderr, p
    assert p.stderr.count("\n") == 1, p
