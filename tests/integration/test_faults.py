"""Faults (issue 3): the daemon killed at random under load, killed mid-stop, daemon-reload and a journald
restart, a full state directory, a failing GPU probe. Against the real service in the box."""

from __future__ import annotations

import json
import random
import re
import threading
import time

from tests.integration.conftest import SPOOL

WRITER = r'''
import os, random, sys, time
user, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for i in range(n):
    if i % 25 == 7:
        tag = f"{user}-{i}-bad"
        body = f'command = "echo run {tag}"\ngpu = 1\n'            # invalid: unknown key
    else:
        code = rng.choice([0, 0, 0, 1, 3])
        tag = f"{user}-{i}-exit{code}"
        gpus = 1 if i % 10 == 0 else 0
        body = f'command = "echo run {tag}; sleep 0.{rng.randint(0, 3)}; exit {code}"\ngpus = {gpus}\n'
    tmp = f"{SPOOL}/.{tag}.tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.rename(tmp, f"{SPOOL}/{tag}.toml")
    time.sleep(rng.uniform(0, 0.04))
'''.replace("{SPOOL}", SPOOL)


def _expected(name: str) -> int | None:
    """What a file of WRITER should end as, from its name: its exit code, or None for a rejected file."""
    m = re.search(r"-exit(\d+)\.toml$", name)
    return int(m.group(1)) if m else None


def _wait_all_done(gs, expected_files: int, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    jobs: list[dict] = []
    while time.monotonic() < deadline:
        try:
            jobs = gs.list(all=True)
            left = gs.sh(f"ls {SPOOL} | wc -l").stdout.strip()
        except Exception:  # noqa: BLE001 - the daemon may be restarting
            time.sleep(0.5)
            continue
        if left == "0" and not [j for j in jobs if j["state"] not in ("succeeded", "failed", "rejected",
                                                                      "cancelled")]:
            if len({j.get("source") for j in jobs}) >= expected_files:
                return jobs
        time.sleep(0.5)
    stuck = [(j["id"], j["state"], j.get("reason")) for j in jobs
             if j["state"] not in ("succeeded", "failed", "rejected", "cancelled")]
    spool = gs.sh(f"ls -la {SPOOL} {SPOOL}/.work | head -20", check=False).stdout
    for job_id, _, _ in stuck[:3]:
        unit = f"gpusched-job-{job_id}.scope"
        spool += gs.sh(f"systemctl status {unit} --no-pager; for p in $(systemctl show -p ControlGroup --value "
                       f"{unit} | xargs -I{{}} cat /sys/fs/cgroup/systemd{{}}/cgroup.procs); do "
                       f"ps -o pid,ppid,stat,wchan:32,cmd -p $p; ls -l /proc/$p/fd; done; "
                       f"cat /var/lib/gpusched/jobs/{job_id}.status.toml; ls -l /var/lib/gpusched/results/{job_id}.*;"
                       f"journalctl --no-pager -o short-monotonic GPUSCHED_JOB_ID={job_id}",
                       check=False).stdout
    raise AssertionError(f"not all done after {timeout}s: {len(stuck)} unfinished, e.g. {stuck[:5]}; spool:\n{spool}")


def test_crash_storm_loses_nothing_and_runs_nothing_twice(gs):
    gs.box.add_user("carol")
    users = {"alice": 11, "bob": 22, "carol": 33}
    per_user = 334
    gs.box.run("cat > /var/tmp/writer.py", input=WRITER)
    first_id = max([j["id"] for j in gs.list(all=True)], default=0)
    errors: list[Exception] = []

    def write(user: str, seed: int) -> None:
        try:
            gs.box.run(f"/usr/bin/python3 /var/tmp/writer.py {user} {per_user} {seed}", user=user, timeout=600)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    writers = [threading.Thread(target=write, args=(u, s)) for u, s in users.items()]
    for w in writers:
        w.start()
    rng = random.Random(7)
    kills = 0
    while any(w.is_alive() for w in writers) or kills < 12:
        time.sleep(rng.uniform(0.3, 2.0))
        pid = gs.sh("systemctl show -p MainPID --value gpusched", check=False).stdout.strip()
        if pid and pid != "0":
            gs.sh(f"kill -9 {pid}", check=False)
            kills += 1
        if kills >= 20:                           # stay well under the unit's StartLimitBurst
            break
    for w in writers:
        w.join()
    assert not errors, errors
    # Restart=on-failure brings it back; make sure it is up for the checks
    for _ in range(100):
        if gs.active():
            break
        gs.sh("systemctl reset-failed gpusched; systemctl start gpusched", check=False)
        time.sleep(0.3)
    jobs = _wait_all_done(gs, per_user * len(users))
    jobs = [j for j in jobs if j["id"] > first_id]
    by_file: dict[tuple[str, str], list[dict]] = {}
    for j in jobs:
        by_file.setdefault((j["user"], j["source"]), []).append(j)
    expected = {key: _expected(key[1]) for key in by_file}

    assert kills >= 10
    assert len(by_file) == per_user * len(users), "every file became a job or a rejection"
    assert {u for u, _ in by_file} == set(users)
    duplicates = {k: [j["id"] for j in v] for k, v in by_file.items() if len(v) != 1}
    assert not duplicates, f"files with more than one id: {duplicates}"
    wrong = []
    for key, code in expected.items():
        job = by_file[key][0]
        if code is None:
            if job["state"] != "rejected":
                wrong.append((key, job["state"]))
            continue
        want_state = "succeeded" if code == 0 else "failed"
        if job["state"] != want_state or job.get("exit_code") != code or job.get("attempt") != 1:
            wrong.append((key, job["state"], job.get("exit_code"), job.get("attempt"), job.get("reason")))
    assert not wrong, f"{len(wrong)} jobs with a wrong outcome, e.g. {wrong[:5]}"
    # no job ran twice: each log holds its "run" line once
    counts = gs.sh(r"grep -c '^run ' /var/lib/gpusched/logs/*.log | awk -F: '$2 != 1'", check=False).stdout
    ids = {str(j["id"]) for j in jobs}
    twice = [line for line in counts.splitlines() if re.search(r"/(\d+)\.log", line).group(1) in ids]
    assert not twice, f"logs with the run line not exactly once: {twice[:5]}"
    # no GPU reserved by a job that isn't running
    gpus = json.loads(gs.sh("gpuschedctl gpus --json").stdout)["gpus"]
    assert [g["state"] for g in gpus] == ["free"] * 4
    print(f"crash storm: {len(expected)} files by {len(users)} users, {kills} SIGKILLs of the daemon, "
          f"{sum(1 for c in expected.values() if c is None)} rejected, nothing lost, nothing run twice")


def test_daemon_killed_while_a_job_is_stopping(gs):
    # (systemd keeps signalling the scope while new processes appear, so the trap's first sleep may be
    # killed too: the second one makes the checkpoint take its 3 s either way)
    n = gs.submit("alice", '''
command = "trap 'echo stopping; sleep 3 || sleep 3; echo checkpointed; exit 9' TERM; echo up; sleep 60 & wait"
gpus = 1
grace = "20s"
''')
    gs.wait(n, "running")
    time.sleep(0.5)
    gs.sh(f"gpuschedctl cancel {n}", user="alice")
    gs.wait(n, "stopping")
    gs.sh("systemctl kill -s SIGKILL gpusched; systemctl stop gpusched")
    time.sleep(4)                                   # the stop completes while the daemon is down
    gs.sh("systemctl reset-failed gpusched; systemctl start gpusched")   # (the storm used up restarts)
    st = gs.wait(n, "cancelled", timeout=20)
    assert st["exit_code"] == 9 and "cancelled by alice" in st["reason"]
    assert "checkpointed" in gs.sh(f"cat {st['log']}").stdout
    gpus = json.loads(gs.sh("gpuschedctl gpus --json").stdout)["gpus"]
    assert all(g["state"] == "free" for g in gpus)


def test_daemon_reload_and_journald_restart_lose_nothing(gs):
    n = gs.submit("alice", 'command = "for i in $(seq 1 8); do echo line $i; sleep 0.5; done"\ngpus = 1\n')
    gs.wait(n, "running")
    time.sleep(1)
    gs.sh("systemctl daemon-reload")
    time.sleep(1)
    gs.sh("systemctl restart systemd-journald")
    st = gs.wait(n, "succeeded", timeout=30)
    assert st["exit_code"] == 0
    log = gs.sh(f"cat {st['log']}").stdout
    assert all(f"line {i}" in log for i in range(1, 9))
    journal = gs.journal(f"GPUSCHED_JOB_ID={n}")
    assert "line 8" in journal, "lines after the journald restart reach the journal"
    assert f"job {n} succeeded" in journal
    m = gs.submit("bob", 'command = "echo after reload"\ngpus = 0\n')
    gs.wait(m, "succeeded")


def test_full_state_directory_defers_and_recovers(gs):
    small = "/var/lib/gpusched-small"
    gs.sh(f"systemctl stop gpusched; mkdir -p {small}; mount -t tmpfs -o size=2m tmpfs {small}; "
          f"cp /etc/gpusched/gpusched.toml /etc/gpusched/gpusched.toml.orig; "
          f"sed -i '1i state_dir = \"{small}\"' /etc/gpusched/gpusched.toml; systemctl start gpusched")
    gs.state = small
    try:
        a = gs.submit("alice", 'command = "sleep 4; echo done A"\ngpus = 1\n')
        gs.wait(a, "running")
        gs.sh(f"dd if=/dev/zero of={small}/filler bs=4k 2>/dev/null || true")
        name = gs.drop("alice", 'command = "echo done B"\ngpus = 1\n', name="while-full.toml")
        time.sleep(5)                               # A ends while the disk is full
        assert gs.active()
        journal = gs.journal("-u", "gpusched", "--since=-30s")
        # refused at intake (under the intake floor: no id spent) or, if it got that far, by the write itself
        assert (("can't accept while-full.toml" in journal and "No space left" in journal)
                or "under the intake floor" in journal), journal[-2000:]
        assert name in gs.sh(f"ls {SPOOL}").stdout, "the refused file waits in the spool"
        gs.sh(f"rm {small}/filler")
        st = gs.wait(a, "succeeded", timeout=30)
        assert st["exit_code"] == 0
        b = gs.job_by_source("alice", name, timeout=30)
        assert gs.wait(b["id"], "succeeded", timeout=30)["exit_code"] == 0
        assert "done B" in gs.sh(f"cat {small}/logs/{b['id']}.log").stdout
    finally:
        gs.sh(f"systemctl stop gpusched; mv /etc/gpusched/gpusched.toml.orig /etc/gpusched/gpusched.toml; "
              f"umount {small}; systemctl start gpusched", check=False)


def test_failing_gpu_probe_holds_gpu_jobs_and_spares_running_ones(gs):
    running = gs.submit("alice", 'command = "sleep 5; echo still here"\ngpus = 1\n')
    gs.wait(running, "running")
    gs.sh("mkdir -p /run/gpusched && touch /run/gpusched/simulate-gpu-failure")
    try:
        deadline = time.monotonic() + 10
        while "GPUs unknown" not in gs.sh("systemctl status gpusched --no-pager", check=False).stdout:
            assert time.monotonic() < deadline, "the STATUS line never said the GPUs are unknown"
            time.sleep(0.2)
        held = gs.submit("bob", 'command = "echo gpu job"\ngpus = 1\n')
        cpu = gs.submit("bob", 'command = "echo cpu job"\ngpus = 0\n')
        gs.wait(cpu, "succeeded")
        time.sleep(1)
        st = gs.status(held)
        assert st["state"] == "queued" and "GPU state unknown" in st["reason"]
        assert gs.status(running)["state"] == "running"
        assert gs.active()
    finally:
        gs.sh("rm -f /run/gpusched/simulate-gpu-failure")
    assert gs.wait(held, "succeeded", timeout=15)["exit_code"] == 0
    st = gs.wait(running, "succeeded", timeout=15)
    assert "still here" in gs.sh(f"cat {st['log']}").stdout
    assert "GPU probe recovered" in gs.journal("-u", "gpusched", "--since=-60s")
