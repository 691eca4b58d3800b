"""The spine's acceptance tests (issue 2), against the real gpusched.service in the systemd box."""

from __future__ import annotations

import hashlib
import os
import time
import tomllib

from tests.integration.conftest import SPOOL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dropped_file_runs_as_owner_in_its_scope_with_limits(gs):
    name = gs.drop("alice", '''
command = """
echo "user=$(id -un) cuda=$CUDA_VISIBLE_DEVICES order=$CUDA_DEVICE_ORDER job=$GPUSCHED_JOB_ID"
sleep 2
"""
gpus = 2
time_limit = "1h"
grace = "20s"
stop_signal = "SIGINT"
[limits]
memory = "2G"
cpus = 1.5
tasks = 64
''')
    job = gs.job_by_source("alice", name)
    n = job["id"]
    st = gs.wait(n, "running")
    unit = f"gpusched-job-{n}.scope"
    assert st["unit"] == unit
    props = gs.unit_prop(unit, "Slice", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax", "RuntimeMaxUSec",
                         "TimeoutStopUSec", "KillSignal", "DevicePolicy", "DeviceAllow", "ActiveState")
    assert props["Slice"] == "gpusched.slice"
    assert props["ActiveState"] == "active"
    assert props["MemoryMax"] == str(2 << 30)
    assert props["CPUQuotaPerSecUSec"] == "1.500000s"
    assert props["TasksMax"] == "64"
    assert props["RuntimeMaxUSec"] == "1h"
    assert props["TimeoutStopUSec"] == "20s"
    assert props["KillSignal"] == "2"
    assert props["DevicePolicy"] == "closed"
    gpu_nodes = sorted(f"/dev/nvidia{g['index']}" for g in st["gpus"])
    for node in gpu_nodes + ["/dev/nvidiactl", "/dev/nvidia-uvm"]:
        assert node in props["DeviceAllow"]
    others = {f"/dev/nvidia{i}" for i in range(4)} - set(gpu_nodes)
    assert not any(f"{o} " in props["DeviceAllow"] for o in others), props["DeviceAllow"]

    # the job's processes run as alice, inside the scope's cgroup
    pids = gs.sh(f"systemctl show -p ControlGroup --value {unit}").stdout.strip()
    procs = gs.sh(f"cat /sys/fs/cgroup/systemd{pids}/cgroup.procs 2>/dev/null || "
                  f"cat /sys/fs/cgroup/unified{pids}/cgroup.procs").stdout.split()
    users = {gs.sh(f"ps -o user= -p {p}", check=False).stdout.strip() for p in procs} - {""}
    assert "alice" in users and users <= {"alice", "root"}   # root: the monitor

    st = gs.wait(n, "succeeded")
    assert st["exit_code"] == 0
    assert st["user"] == "alice" and st["source"] == name
    uuids = ",".join(g["uuid"] for g in st["gpus"])
    expect = f"user=alice cuda={uuids} order=PCI_BUS_ID job={n}"
    assert expect in gs.journal("-u", unit)
    assert expect in gs.journal(f"GPUSCHED_JOB_ID={n}")
    assert expect in gs.sh(f"cat {st['log']}").stdout
    # root's, readable by alice through an ACL (the group bits show its mask): tests/integration/test_security_files.py
    assert gs.sh(f"stat -c '%U %a' {st['log']}").stdout.split() == ["root", "640"]
    assert gs.sh(f"stat -c '%U %a' /var/lib/gpusched/status/{n}.toml").stdout.split() == ["root", "440"]
    # alice reads her own status file and log; bob reads neither
    gs.sh(f"cat /var/lib/gpusched/status/{n}.toml {st['log']}", user="alice")
    assert gs.sh(f"cat {st['log']}", user="bob", check=False).returncode != 0
    assert gs.sh(f"cat /var/lib/gpusched/status/{n}.toml", user="bob", check=False).returncode != 0
    for field in ("id", "name", "user", "state", "exit_code", "gpus", "unit", "submitted", "started", "ended",
                  "log", "source"):
        assert field in st, field


def test_exit_code_and_signal_are_recorded(gs):
    a = gs.submit("alice", 'command = "echo bye; exit 3"\ngpus = 0\n')
    b = gs.submit("alice", 'command = "kill -SEGV $$"\ngpus = 0\n')
    st = gs.wait(a, "failed")
    assert st["exit_code"] == 3 and "exited with code 3" in st["reason"]
    st = gs.wait(b, "failed")
    assert st["signal"] == "SIGSEGV" and "exit_code" not in st


def test_five_one_gpu_jobs_on_four_gpus(gs):
    ids = [gs.submit("alice", 'command = "echo gpu=$CUDA_VISIBLE_DEVICES; sleep 3"\ngpus = 1\n')
           for _ in range(5)]
    seen_waiting = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = {j["id"]: j for j in gs.list(all=True) if j["id"] in ids}
        holding = [g["uuid"] for j in jobs.values() if j["state"] in ("starting", "running", "stopping")
                   for g in j.get("gpus", [])]
        assert len(holding) == len(set(holding)), f"a GPU was given twice: {jobs}"
        assert len(holding) <= 4
        waiting = [j for j in jobs.values() if j["state"] == "queued"]
        if len(holding) == 4 and waiting:
            seen_waiting = waiting[0]
        if all(j["state"] in ("succeeded", "failed") for j in jobs.values()) and len(jobs) == 5:
            break
        time.sleep(0.2)
    assert seen_waiting is not None, "never saw 4 running and 1 waiting"
    assert "waiting for 1 GPU(s), 0 free" in seen_waiting["reason"]
    for n in ids:
        assert gs.wait(n, "succeeded")["exit_code"] == 0
    # the waiting job started only once another had ended
    st = {n: gs.status(n) for n in ids}
    last = max(ids, key=lambda n: st[n]["started"])
    assert any(st[n]["ended"] <= st[last]["started"] for n in ids if n != last)


def test_cancel_queued_and_running(gs):
    big = gs.submit("alice", 'command = "sleep 60"\ngpus = 4\ngrace = "5s"\n')
    gs.wait(big, "running")
    small = gs.submit("alice", 'command = "echo never"\ngpus = 1\n')
    assert "waiting" in gs.wait(small, "queued")["reason"]
    gs.sh(f"gpuschedctl cancel {small}", user="alice")
    st = gs.wait(small, "cancelled")
    assert "cancelled by alice" in st["reason"]
    gs.sh(f"gpuschedctl cancel {big}", user="alice")
    st = gs.wait(big, "cancelled")
    assert st["signal"] == "SIGTERM"
    assert not gs.sh(f"systemctl is-active gpusched-job-{big}.scope", check=False).stdout.strip() == "active"


def test_grace_is_honoured_and_enforced(gs):
    polite = gs.submit("alice", '''
command = "trap 'echo got TERM, saving; sleep 1; echo saved; exit 7' TERM; sleep 60 & wait"
gpus = 0
grace = "20s"
''')
    stubborn = gs.submit("alice", '''
command = "trap '' TERM; echo ignoring TERM; sleep 60"
gpus = 0
grace = "2s"
''')
    gs.wait(polite, "running")
    gs.wait(stubborn, "running")
    time.sleep(0.5)
    t0 = time.monotonic()
    gs.sh(f"gpuschedctl cancel {polite} {stubborn}", user="alice")
    st = gs.wait(polite, "cancelled", timeout=30)
    assert st["exit_code"] == 7
    log = gs.sh(f"cat {st['log']}").stdout
    assert "got TERM, saving" in log and "saved" in log
    st = gs.wait(stubborn, "cancelled", timeout=30)
    took = time.monotonic() - t0
    assert st["signal"] == "SIGKILL" and "after its grace period" in st["reason"]
    assert took >= 2.0


def test_urgent_job_preempts_and_the_victim_is_requeued(gs):
    # urgency over other users' jobs is a class's (issue 8): a priority orders only its user's own jobs
    with gs.configured('classes = { urgent = { priority = 0, preempts = ["normal"] }, normal = { priority = 10 } }'):
        low = gs.submit("alice", 'command = "echo low attempt $GPUSCHED_ATTEMPT; sleep 4"\ngpus = 4\n'
                                 'priority = 200\ngrace = "5s"\n')
        gs.wait(low, "running")
        urgent = gs.submit("bob", 'command = "echo urgent; sleep 1"\ngpus = 2\nclass = "urgent"\n')
        st = gs.wait(urgent, "succeeded", timeout=30)
        assert st["exit_code"] == 0
        st = gs.wait(low, "succeeded", timeout=60)
        assert st["id"] == low and st["preemptions"] == 1 and st["attempt"] == 2
        assert st["history"][0]["preempted"] is True and "preempted by job" not in st.get("reason", "")
        log = gs.sh(f"cat {st['log']}").stdout
        assert "low attempt 1" in log and "low attempt 2" in log
        assert f"preempted by job {urgent}" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={low}")


def test_daemon_sigkill_loses_nothing_and_starts_nothing_twice(gs):
    running = [gs.submit("alice", f'command = "echo start {i}; sleep {s}; exit {e}"\ngpus = 2\n')
               for i, (s, e) in enumerate([(3, 5), (12, 0)])]
    for n in running:
        gs.wait(n, "running")
    queued = [gs.submit("bob", 'command = "echo start q; sleep 1"\ngpus = 1\n') for _ in range(3)]
    for n in queued:
        gs.wait(n, "queued")
    gs.sh("systemctl kill -s SIGKILL gpusched; systemctl stop gpusched")
    assert not gs.active()
    gs.wait(running[0], {"running"}, timeout=1)          # the status file still says so: nobody updated it
    time.sleep(4)                                        # the short job ends while the daemon is down
    gs.sh("systemctl reset-failed gpusched; systemctl start gpusched")
    st = gs.wait(running[0], "failed", timeout=15)
    assert st["exit_code"] == 5 and st["attempt"] == 1
    st = gs.wait(running[1], "succeeded", timeout=30)
    assert st["attempt"] == 1
    for n in queued:
        assert gs.wait(n, "succeeded", timeout=30)["attempt"] == 1
    for n in running + queued:
        st = gs.status(n)
        assert gs.sh(f"cat {st['log']}").stdout.count("start ") == 1, f"job {n} started twice"
    # restarting the daemon cleanly doesn't touch a running job either
    n = gs.submit("alice", 'command = "sleep 3; echo survived"\ngpus = 1\n')
    gs.wait(n, "running")
    gs.sh("systemctl restart gpusched")
    assert gs.wait(n, "succeeded", timeout=30)["attempt"] == 1


def _invalid_examples() -> list[tuple[str, bytes]]:
    d = os.path.join(ROOT, "examples/jobs/invalid")
    return [(f, open(os.path.join(d, f), "rb").read()) for f in sorted(os.listdir(d))
            if f.endswith(".toml") and f != "expectations.toml"]


def test_bad_files_are_rejected_kept_and_explained(gs):
    # alice's earlier tests' rejections must not bring her to max_rejected_per_user here: past it the journal
    # names her rejections once a minute (test_security_input tests that), not each one
    with gs.configured("max_rejected_per_user = 0"):
        _bad_files_are_rejected_kept_and_explained(gs)


def _bad_files_are_rejected_kept_and_explained(gs):
    cases = {}
    for fname, data in _invalid_examples():
        cases[gs.drop("alice", data, name=f"bad-{fname}")] = data
    cases[gs.drop("alice", 'command = "id"\nuser = "root"\n', name="sneaky-user.toml")] = \
        b'command = "id"\nuser = "root"\n'
    # non-regular entries and a file that is too big
    gs.sh("ln -s /etc/shadow /var/spool/gpusched/shadow.toml; mkfifo /var/spool/gpusched/fifo.toml; "
          "mkdir /var/spool/gpusched/dir.toml; head -c 1100000 /dev/zero > /var/spool/gpusched/big.toml",
          user="alice")
    why = {"sneaky-user.toml": "only a file owned by root", "shadow.toml": "symbolic link",
           "fifo.toml": "FIFO", "dir.toml": "directory", "big.toml": "larger than"}
    for name in list(cases) + list(why)[1:]:
        job = gs.job_by_source("alice", name)
        st = gs.wait(job["id"], "rejected")
        assert st["reason"], name
        if name in why:
            assert why[name] in st["reason"], (name, st["reason"])
        kept = f"{SPOOL}/.rejected/{job['id']}-{name}"
        if name in cases:
            assert gs.sh(f"sha256sum < {kept}").stdout.split()[0] == hashlib.sha256(cases[name]).hexdigest()
        journal = gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job['id']}")
        assert "rejected" in journal
    # the symlink is kept as a link, never followed
    job = gs.job_by_source("alice", "shadow.toml")
    assert gs.sh(f"readlink {SPOOL}/.rejected/{job['id']}-shadow.toml").stdout.strip() == "/etc/shadow"
    assert gs.active()
    # and the service still works
    n = gs.submit("alice", 'command = "true"\ngpus = 0\n')
    gs.wait(n, "succeeded")


def test_bob_cannot_cancel_alices_job(gs):
    n = gs.submit("alice", 'command = "sleep 30"\ngpus = 1\ngrace = "2s"\n')
    gs.wait(n, "running")
    p = gs.sh(f"gpuschedctl cancel {n}", user="bob", check=False)
    assert p.returncode != 0
    assert "only its owner, root or an admin" in p.stderr
    time.sleep(0.5)
    assert gs.status(n)["state"] == "running"
    gs.sh(f"gpuschedctl cancel {n}")                     # root may
    gs.wait(n, "cancelled")


def test_systemctl_status_shows_the_status_line(gs):
    n = gs.submit("alice", 'command = "sleep 20"\ngpus = 3\ngrace = "2s"\n')
    q = gs.submit("alice", 'command = "sleep 20"\ngpus = 2\n')
    gs.wait(n, "running")
    gs.wait(q, "queued")
    deadline = time.monotonic() + 5
    out = ""
    while time.monotonic() < deadline:
        out = gs.sh("systemctl status gpusched --no-pager", check=False).stdout
        if 'Status: "1 running, 1 queued, GPUs 1/4 free (simulated)"' in out:
            break
        time.sleep(0.2)
    assert 'Status: "1 running, 1 queued, GPUs 1/4 free (simulated)"' in out, out


def test_gpuschedctl_read_commands(gs):
    n = gs.submit("alice", 'command = "echo visible output"\ngpus = 1\nname = "reader"\n')
    gs.wait(n, "succeeded")
    assert "visible output" in gs.sh(f"gpuschedctl logs {n}", user="alice").stdout
    p = gs.sh(f"gpuschedctl logs {n}", user="bob", check=False)
    assert p.returncode != 0 and "readable only by alice and root" in p.stderr
    assert "reader" in gs.sh("gpuschedctl list --all", user="bob").stdout
    show = gs.sh(f"gpuschedctl show {n}", user="alice").stdout
    assert "succeeded" in show and "echo visible output" in show
    gpus = gs.sh("gpuschedctl gpus").stdout
    assert "Simulated A100 80GB" in gpus and "simulated" in gpus
    p = gs.sh("gpuschedctl show 999999", check=False)
    assert p.returncode == 1 and p.stderr.strip() == "gpuschedctl: no job 999999"
    # follow a running job's log to its end
    n = gs.submit("alice", 'command = "for i in 1 2 3; do echo tick $i; sleep 0.5; done"\ngpus = 0\n')
    out = gs.sh(f"gpuschedctl logs -f {n}", user="alice", timeout=30).stdout
    assert "tick 3" in out
    assert tomllib.loads(gs.sh(f"cat /var/lib/gpusched/status/{n}.toml").stdout)["state"] == "succeeded"
