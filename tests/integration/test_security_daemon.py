"""Issue 7, the daemon's share: a hostile user's flood, load and disk use must not stall anyone else.
Each test makes the attempt as an unprivileged user against the real service in the box."""

from __future__ import annotations

import json
import time
import uuid

SPOOL = "/var/spool/gpusched"


def test_a_flood_of_key_bombs_does_not_stall_a_normal_job(gs):
    """1 MiB files of ~74,000 unknown keys, dropped at once: each is rejected with a short reason, the daemon
    is never killed by its watchdog, and bob's job starts promptly meanwhile."""
    pid = gs.main_pid()
    tag = uuid.uuid4().hex[:8]
    gs.sh("python3 -c \"import sys; sys.stdout.write(''.join("
          "f'k{i:05d} = 1\\n' for i in range(74000)))\" > ~/bomb.toml", user="alice")
    # (cp: each written and closed in place, as users do; a `mv` of many files races the daemon taking them)
    gs.sh(f"for i in $(seq 1 30); do cp ~/bomb.toml /var/spool/gpusched/kb-{tag}-$i.toml; done", user="alice")
    t0 = time.monotonic()
    job = gs.submit("bob", 'command = "echo bob ran"\ngpus = 1\n')
    gs.wait(job, "succeeded", timeout=30)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while True:
        bombs = [j for j in gs.list(all=True) if j["user"] == "alice" and j["source"].startswith(f"kb-{tag}-")]
        if len(bombs) >= 30 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(bombs) == 30
    for j in bombs:
        assert j["state"] == "rejected"
        assert len(j["reason"].encode()) < 5000 and "unknown key" in j["reason"], j["reason"][:300]
    size = int(gs.sh(f"stat -c %s {gs.state}/status/{bombs[0]['id']}.toml").stdout)
    assert size < 16384, f"a rejected bomb's status file is {size} bytes"
    assert gs.main_pid() == pid, "the daemon was restarted (watchdog?) during the flood"
    print(f"bob's job went through the flood in {took:.1f}s")
    assert took < 20


def test_per_user_caps_hold_back_one_users_load(gs):
    with gs.configured("max_cpu_jobs_per_user = 2\nmax_queued_per_user = 6\n"):
        ids = [gs.submit("alice", 'command = "sleep 30"\ngpus = 0\n') for _ in range(5)]
        time.sleep(2)
        mine = {j["id"]: j for j in gs.list() if j["id"] in ids}
        running = [i for i in ids if mine[i]["state"] == "running"]
        assert len(running) == 2, mine
        waiting = [mine[i] for i in ids if i not in running]
        assert all("max_cpu_jobs_per_user is 2" in j["reason"] for j in waiting), waiting
        assert "max_cpu_jobs_per_user" in gs.sh("gpuschedctl list", user="bob").stdout
        # bob is not held back by alice's jobs
        b = gs.submit("bob", 'command = "echo bob"\ngpus = 0\n')
        gs.wait(b, "succeeded", timeout=20)
        # alice has 3 waiting; three more fill her cap of 6, and the next one is rejected, naming it
        more = [gs.drop("alice", 'command = "sleep 30"\ngpus = 0\n') for _ in range(3)]
        for name in more:
            gs.wait(gs.job_by_source("alice", name)["id"], "queued")
        over = gs.drop("alice", 'command = "sleep 30"\ngpus = 0\n')
        st = gs.wait(gs.job_by_source("alice", over)["id"], "rejected")
        assert "max_queued_per_user = 6" in st["reason"]
        gs.sh("for j in $(gpuschedctl list --json | python3 -c 'import json,sys; "
              "print(*[j[\"id\"] for j in json.load(sys.stdin)[\"jobs\"]])'); do gpuschedctl cancel --now $j || "
              "gpuschedctl cancel $j; done", user="alice", check=False)


def test_disk_filled_by_one_users_output_stalls_nobody(gs):
    """A small filesystem as the state directory. alice's jobs print without end: each log stays under
    max_log_size and logging stops at the log_min_free floor. Then the disk fills up completely while bob's
    job runs: his job still ends, its result is recorded (its room was reserved when it started) and its GPU
    freed. Expiry then removes finished jobs' files, never an active job's."""
    small = "/var/lib/gpusched-small"
    how = "loop"
    if gs.sh(f"mkdir -p {small} && truncate -s 64M /var/tmp/small.img && mkfs.ext4 -q -m 0 -F /var/tmp/small.img "
             f"&& mount -o loop /var/tmp/small.img {small}", check=False).returncode != 0:
        how = "tmpfs"                       # no loop devices in this box: the same ENOSPC, from tmpfs
        gs.sh(f"mount -t tmpfs -o size=64m tmpfs {small}")
    print(f"state directory on a 64 MiB {how} filesystem")
    mib = 1024 * 1024

    def free() -> int:
        return int(gs.sh(f"python3 -c 'import os; s = os.statvfs(\"{small}\"); print(s.f_bavail * s.f_frsize)'").stdout)
    try:
        with gs.configured('max_log_size = "20M"\nlog_min_free = "16M"\nkeep_finished = "8s"\n', state_dir=small):
            old = gs.submit("bob", 'command = "echo finished early"\ngpus = 0\n')
            gs.wait(old, "succeeded")
            hogs = [gs.submit("alice", 'command = "yes spam-spam-spam-spam-spam-spam-spam"\ngpus = 1\n')
                    for _ in range(3)]
            for h in hogs:
                gs.wait(h, "running")
            deadline = time.monotonic() + 60
            while free() > 17 * mib:
                assert time.monotonic() < deadline, f"alice's output never reached the floor: {free()} free"
                time.sleep(0.5)
            time.sleep(3)                   # they keep printing: the floor holds
            assert free() >= 12 * mib, f"logging went past the floor: {free()} bytes free"
            for h in hogs:
                size = int(gs.sh(f"stat -c %s {small}/logs/{h}.log").stdout)
                assert size <= 25 * mib + 65536, f"alice's log {h} is {size} bytes"
            assert "log_min_free" in gs.journal("-u", "gpusched-job-%d.scope" % hogs[0]) or \
                "free" in gs.sh(f"tail -c 2000 {small}/logs/{hogs[0]}.log").stdout
            bob = gs.submit("bob", 'command = "sleep 3; echo bob done"\ngpus = 1\n')
            gs.wait(bob, "running")
            gs.sh(f"dd if=/dev/zero of={small}/filler bs=64k 2>/dev/null || true")   # now nothing is left
            assert free() < 256 * 1024
            st = gs.wait(bob, "succeeded", timeout=30)
            assert st["exit_code"] == 0
            gpus = json.loads(gs.sh("gpuschedctl gpus --json").stdout)
            assert not any(g.get("job") == bob for g in gpus["gpus"]), "bob's GPU was not freed"
            gs.sh(f"rm -f {small}/filler")
            # expiry: finished jobs older than 8 s go, the running hogs stay
            deadline = time.monotonic() + 40
            while gs.sh(f"test -e {small}/status/{old}.toml", check=False).returncode == 0:
                assert time.monotonic() < deadline, "a finished job was never expired"
                time.sleep(1)
            for path in (f"jobs/{old}.toml", f"logs/{old}.log"):
                assert gs.sh(f"test -e {small}/{path}", check=False).returncode != 0, path
            for h in hogs:
                assert gs.status(h)["state"] == "running"
                gs.sh(f"gpuschedctl cancel --now {h}", user="alice")
            for h in hogs:
                gs.wait(h, "cancelled", timeout=30)
    finally:
        gs.sh(f"umount {small}; rm -f /var/tmp/small.img", check=False)


def test_a_flood_of_bad_files_neither_fills_the_disk_nor_delays_others(gs):
    """alice drops thousands of small files that are each rejected: past max_rejected_per_user only her newest
    rejections keep a record (every file is kept in .rejected/; the journal names them once a minute); intake
    takes owners in turn, so bob's file is taken at once; the state directory barely grows."""
    with gs.configured("max_rejected_per_user = 50\n"):
        tag = uuid.uuid4().hex[:8]
        before = int(gs.sh(f"du -sk {gs.state}").stdout.split()[0])
        gs.sh("python3 -c 'import os\n"
              "b = \"\".join(\"k%02d_%s = 1\\n\" % (i, \"x\" * 60) for i in range(25)).encode()\n"
              f"for i in range(5000):\n"
              f"    fd = os.open(\"/var/spool/gpusched/fl-{tag}-%05d.toml\" % i, os.O_CREAT | os.O_WRONLY, 0o600)\n"
              "    os.write(fd, b); os.close(fd)'", user="alice")
        t0 = time.monotonic()
        job = gs.submit("bob", 'command = "echo bob ran"\ngpus = 0\n')
        took = time.monotonic() - t0
        gs.wait(job, "succeeded", timeout=30)
        deadline = time.monotonic() + 120
        while gs.sh(f"ls {SPOOL} | grep -c fl-{tag}-", check=False).stdout.strip() not in ("", "0"):
            assert time.monotonic() < deadline, "the flood was never worked through"
            time.sleep(1)
        mine = [j for j in gs.list(all=True) if j["source"].startswith(f"fl-{tag}-")]
        assert len(mine) == 50, len(mine)                # her newest 50 rejections, older ones made room
        assert max(j["id"] for j in mine) == max(j["id"] for j in gs.list(all=True) if j["user"] == "alice")
        assert sum(1 for j in gs.list(all=True) if j["user"] == "alice" and j["state"] == "rejected") == 50
        kept = int(gs.sh(f"ls {SPOOL}/.rejected | grep -c fl-{tag}-").stdout)
        assert kept == 5000, kept
        grown = int(gs.sh(f"du -sk {gs.state}").stdout.split()[0]) - before
        assert grown < 5000, f"the state directory grew by {grown} KiB"
        assert "max_rejected_per_user" in gs.journal("-u", "gpusched", "--since=-3min")
        print(f"bob's submit took {took:.1f}s behind 5000 of alice's files")
        assert took < 10


def test_escapes_in_names_never_reach_the_journal_raw(gs):
    gs.sh("python3 -c 'open(\"/var/spool/gpusched/\x1b]0;PWNED\x07\x1b[2J z.toml\", \"w\").write(\"bogus = 1\")'",
          user="alice")
    deadline = time.monotonic() + 20
    while "PWNED" not in (out := gs.journal("-u", "gpusched", "--since=-1min")):
        assert time.monotonic() < deadline, "no journal line about the file"
        time.sleep(0.5)
    line = next(ln for ln in out.splitlines() if "PWNED" in ln)
    assert "\x1b" not in out and "\x07" not in out, repr(line)
    assert "\\x1b]0;PWNED" in line
