"""No file in the state directory is a user's (issue 7, red team): a job's log and status copy are root's with a
POSIX ACL `user:<uid>:r--`, so their user reads them (cat, gpuschedctl logs) but can't write, chmod or grow
them: before, the log was the user's own, and `dd ... >> $GPUSCHED_LOG` went past max_log_size and
log_min_free and could fill the state filesystem. Every attempt here is alice's or bob's, for real."""

from __future__ import annotations

import json

from gpusched import acl

STATE = "/var/lib/gpusched"


def job(command: str) -> str:
    return f"gpus = 0\ncommand = {json.dumps(command)}\n"          # a JSON string is a TOML basic string


def acl_of(gs, path: str) -> list[tuple[int, int, int]]:
    out = gs.sh(f"/usr/bin/python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], \"{acl.XATTR}\").hex())' {path}")
    return acl.decode(bytes.fromhex(out.stdout.strip()))


def owner_mode(gs, path: str) -> list[str]:
    return gs.sh(f"stat -c '%U %a' {path}").stdout.split()


def state_fs_has_acls(gs) -> bool:
    # the box's state directory is an overlay over tmpfs: say plainly if it has no ACLs
    probe = gs.sh(f"/usr/bin/python3 -c 'import sys; from gpusched import acl; print(acl.supported(sys.argv[1]))' "
                  f"{STATE}/logs", check=False)
    return probe.stdout.strip() == "True"


def test_the_state_filesystem_has_acls_in_the_box(gs):
    assert state_fs_has_acls(gs), ("no POSIX ACLs on the box's state directory: logs and status copies fall "
                                   "back to being their users' (see the journal's GPUSCHED_EVENT=acl line)")
    assert "no POSIX ACLs" not in gs.journal("GPUSCHED_EVENT=acl")


def test_a_job_can_not_grow_its_own_log_or_status_copy(gs):
    n = gs.submit("alice", job(
        "echo start; dd if=/dev/zero bs=1M count=20 >> $GPUSCHED_LOG; echo rc=$?; "
        "chmod u+w $GPUSCHED_LOG; echo chmod=$?; "
        f"ln $GPUSCHED_LOG ~/kept.log; echo ln=$?; "
        f"echo x >> {STATE}/status/$GPUSCHED_JOB_ID.toml; echo status=$?; "
        "cat $GPUSCHED_LOG > /dev/null; echo read=$?"))
    st = gs.wait(n, {"succeeded", "failed"})
    assert st["state"] == "succeeded", st
    log = gs.sh(f"cat {st['log']}", user="alice").stdout
    assert "Permission denied" in log and "rc=1" in log, log
    assert "Operation not permitted" in log and "chmod=1" in log, log
    assert "ln=1" in log and "status=1" in log, log          # protected_hardlinks: she may not link it
    assert "read=0" in log                                    # the job reads its own log
    assert int(gs.sh(f"stat -c %s {st['log']}").stdout) < 64 * 1024
    assert owner_mode(gs, st["log"]) == ["root", "640"]      # 4: the ACL's mask, group::--- in the ACL
    uid = int(gs.sh("id -u alice").stdout)
    assert acl_of(gs, st["log"]) == acl.decode(acl.read_only_for(uid, 6))


def test_alice_reads_her_files_and_can_not_write_them_bob_reads_neither(gs):
    n = gs.submit("alice", job("echo hello from alice"))
    st = gs.wait(n, "succeeded")
    status, log = f"{STATE}/status/{n}.toml", st["log"]
    assert owner_mode(gs, status) == ["root", "440"]
    uid = int(gs.sh("id -u alice").stdout)
    assert acl_of(gs, status) == acl.decode(acl.read_only_for(uid, 4))
    # alice: reads, through cat and gpuschedctl
    assert "hello from alice" in gs.sh(f"cat {log}", user="alice").stdout
    assert f"id = {n}" in gs.sh(f"cat {status}", user="alice").stdout
    assert "hello from alice" in gs.sh(f"gpuschedctl logs {n}", user="alice").stdout
    # ... and nothing more
    for attempt in (f"chmod u+w {status}", f"chmod u+w {log}", f"echo x >> {log}", f"echo x >> {status}",
                    f"truncate -s 0 {log}", f"dd if=/dev/zero bs=1M count=20 >> {log}", f"rm -f {log}",
                    f"/usr/bin/python3 -c 'import os; os.setxattr("
                    f"\"{log}\", \"{acl.XATTR}\", bytes.fromhex(\"{acl.read_only_for(uid, 6).hex()}\"))'"):
        assert gs.sh(attempt, user="alice", check=False).returncode != 0, attempt
    assert owner_mode(gs, status) == ["root", "440"] and owner_mode(gs, log) == ["root", "640"]
    assert "hello from alice" in gs.sh(f"cat {log}").stdout
    # bob: nothing
    assert gs.sh(f"cat {log}", user="bob", check=False).returncode != 0
    assert gs.sh(f"cat {status}", user="bob", check=False).returncode != 0
    assert gs.sh(f"gpuschedctl logs {n}", user="bob", check=False).returncode != 0


def test_files_an_older_version_left_to_users_become_roots_after_the_upgrade(gs):
    n = gs.submit("alice", job("echo before the upgrade"))
    st = gs.wait(n, "succeeded")
    status, log = f"{STATE}/status/{n}.toml", st["log"]
    # as the version before ACLs left them: alice's own, and no sweep done yet
    gs.sh(f"/usr/bin/python3 -c 'import os, sys; [os.removexattr(p, \"{acl.XATTR}\") for p in sys.argv[1:]]' "
          f"{status} {log}")
    gs.sh(f"chown alice:root {status} {log} {STATE}/jobs/{n}.toml && chmod 400 {status} && chmod 600 {log} "
          f"&& rm {STATE}/rights")
    gs.sh(f"echo still hers >> {log}", user="alice")                   # the hole, before the upgrade's sweep
    gs.sh("systemctl restart gpusched")                               # READY=1 comes after the sweep
    # the restart has swept them: root's, read-only for alice
    assert owner_mode(gs, log) == ["root", "640"] and owner_mode(gs, status) == ["root", "440"]
    assert owner_mode(gs, f"{STATE}/jobs/{n}.toml") == ["root", "400"]
    assert "still hers" in gs.sh(f"cat {log}", user="alice").stdout
    assert gs.sh(f"echo x >> {log}", user="alice", check=False).returncode != 0
    assert gs.sh(f"chmod u+w {status}", user="alice", check=False).returncode != 0
    assert gs.sh(f"cat {log}", user="bob", check=False).returncode != 0
    assert gs.sh(f"cat {STATE}/rights").stdout == "acl\n"
