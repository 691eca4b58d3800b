"""Hostile input and rights (issue 3): each entry is rejected with a reason or handled safely, its bytes are
kept, nobody gains rights, and the daemon keeps running."""

from __future__ import annotations

import hashlib
import json

from tests.integration.conftest import SPOOL

# name in the spool -> (shell command run as alice to create it, or None; words the reason must contain)
ENTRIES = {
    "link-shadow.toml": ("ln -s /etc/shadow {p}", "symbolic link"),
    "link-bob.toml": ("ln -s /home/bob/secret.toml {p}", "symbolic link"),
    "fifo.toml": ("mkfifo {p}", "FIFO"),
    "socket.toml": ("python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' {p}", "socket"),
    "dir.toml": ("mkdir {p}", "directory"),
    "sparse.toml": ("truncate -s 1G {p}", "larger than"),
    "random.toml": ("head -c 4096 /dev/urandom > {p}", ""),
    "latin1.toml": ("printf 'command = \"caf\\351\"\\n' > {p}", "not UTF-8"),
    "bomb-arrays.toml": ("python3 -c 'print(\"x = \" + \"[\" * 100000)' > {p}", "invalid TOML"),
    "bomb-tables.toml": ("python3 -c 'print(\"x = \" + \"{a=\" * 100000)' > {p}", "invalid TOML"),
    "bomb-dotted.toml": ("python3 -c 'print(\"a\" + \".a\" * 200000 + \" = 1\")' > {p}", "dotted key"),
    "long-name.toml": ("python3 -c 'print(\"command = \\\"true\\\"\\nname = \\\"\" + \"n\" * 4096 + \"\\\"\")' > {p}",
                       "name"),
    "newline-name.toml": ("printf 'command = \"true\"\\nname = \"a\\\\nb\"\\n' > {p}", "control"),
    "root-user.toml": ("printf 'command = \"id\"\\nuser = \"root\"\\n' > {p}", "only a file owned by root"),
    "env-cuda.toml": ("printf 'command = \"true\"\\n[env]\\nCUDA_VISIBLE_DEVICES = \"0,1,2,3\"\\n' > {p}",
                      "can't be overridden"),
    "env-home.toml": ("printf 'command = \"true\"\\n[env]\\nHOME = \"/root\"\\n' > {p}", "can't be overridden"),
}


def test_hostile_spool_entries_are_rejected_and_kept(gs):
    pid = gs.sh("systemctl show -p MainPID --value gpusched").stdout.strip()
    gs.sh("echo 'command = \"cat /etc/shadow\"' > /home/bob/secret.toml; chmod 600 /home/bob/secret.toml",
          user="bob")
    # made in alice's home, then moved in: kept copies of the regular files tell what the bytes were
    gs.sh("rm -rf ~/h ~/h-copy; mkdir ~/h ~/h-copy", user="alice")
    for name, (cmd, _) in ENTRIES.items():
        gs.sh(cmd.replace("{p}", f"/home/alice/h/{name}"), user="alice")
    gs.sh("cd ~/h && for f in *; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && [ $(stat -c %s \"$f\") -lt 2000000 ] "
          "&& cp \"$f\" ~/h-copy/; done; true", user="alice")
    # mv of many may look again at an entry it has just moved, which the daemon may have taken already
    # ("cannot stat"); what counts is that every entry left ~/h (each one's outcome is checked below)
    gs.sh("mv ~/h/* /var/spool/gpusched/ || true; test -z \"$(ls -A ~/h)\"", user="alice")
    # made by root on an attacker's behalf: a hard link to bob's file, a device node, a newline in the name
    stage = "/var/spool/stage"                      # same filesystem: moved in whole, as alice's
    gs.sh(f"mkdir -p {stage}; mknod {stage}/device.toml c 1 3; printf 'command = \"true\"\\n' > "
          f"$'{stage}/new\\nline.toml'; chown alice {stage}/*; mv {stage}/* {SPOOL}/; "
          f"ln /home/bob/secret.toml {SPOOL}/hardlink.toml")
    want = {name: why for name, (_, why) in ENTRIES.items()}
    want.update({"device.toml": "device node", "new\nline.toml": "control characters"})
    kept_sha = {n: gs.sh(f"sha256sum < /home/alice/h-copy/{n}").stdout.split()[0]
                for n in ("random.toml", "latin1.toml", "bomb-arrays.toml", "long-name.toml", "root-user.toml")}
    for name, why in want.items():
        job = gs.job_by_source("alice", name, timeout=20)
        st = gs.wait(job["id"], "rejected")
        assert why in st["reason"], (name, st["reason"])
        kept = f"{SPOOL}/.rejected/{job['id']}-{name.replace(chr(10), '?')}"
        assert gs.sh(f"test -e '{kept}' || test -L '{kept}'", check=False).returncode == 0, (name, kept)
        if name in kept_sha:
            assert gs.sh(f"sha256sum < '{kept}'").stdout.split()[0] == kept_sha[name]
    job = gs.job_by_source("bob", "hardlink.toml", timeout=20)
    st = gs.wait(job["id"], "rejected")
    assert "hard links" in st["reason"]
    # nothing was read through the links, nobody's file moved, the sparse file was never read
    assert gs.sh("cat /home/bob/secret.toml", user="bob").stdout.startswith("command")
    assert gs.sh("test -e /etc/shadow").returncode == 0
    assert gs.active()
    assert gs.sh("systemctl show -p MainPID --value gpusched").stdout.strip() == pid, "the daemon never died"
    n = gs.submit("alice", 'command = "echo fine"\ngpus = 0\n')
    gs.wait(n, "succeeded")


def test_hostile_but_valid_jobs_run_safely_as_their_owner(gs):
    # a path-like name is only a label; a workdir alice can't enter fails the job, as alice; LD_PRELOAD and
    # PATH from env reach only her job (the monitor, which is root, never uses them)
    gs.sh("mkdir -p /srv/private && chmod 700 /srv/private")
    a = gs.submit("alice", 'command = "id -un; pwd"\ngpus = 0\nname = "../../etc/passwd"\n')
    b = gs.submit("alice", 'command = "ls"\ngpus = 0\nworkdir = "/srv/private"\n')
    c = gs.submit("alice", 'command = "id -un; echo $LD_PRELOAD"\ngpus = 0\n'
                           '[env]\nLD_PRELOAD = "/tmp/evil.so"\nPATH = "/tmp/evil:/usr/bin:/bin"\n')
    st = gs.wait(a, "succeeded")
    assert gs.sh(f"cat {st['log']}").stdout.startswith("alice\n/home/alice")
    assert st["log"].endswith(f"/logs/{a}.log")
    st = gs.wait(b, "failed")
    assert "cannot enter workdir /srv/private: Permission denied" in st["reason"]
    st = gs.wait(c, "succeeded")
    out = gs.sh(f"cat {st['log']}").stdout
    assert "alice\n/tmp/evil.so\n" in out                # ld.so ignores the missing library, with a warning
    assert "cannot be preloaded" in out                  # only the job saw it: the monitor never did
    assert "passwd" not in gs.sh("ls /etc/passwd.*  2>/dev/null || true").stdout


def test_nobody_changes_another_users_job_through_files_or_the_bus(gs):
    n = gs.submit("alice", 'command = "sleep 20; echo done"\ngpus = 1\ngrace = "2s"\n')
    st = gs.wait(n, "running")
    status = f"/var/lib/gpusched/status/{n}.toml"
    # bob: no write, no read, no chmod of alice's files; no cancel over the bus
    assert gs.sh(f"echo x >> {status}", user="bob", check=False).returncode != 0
    assert gs.sh(f"cat {status} {st['log']}", user="bob", check=False).returncode != 0
    assert gs.sh(f"chmod 666 {status}", user="bob", check=False).returncode != 0
    assert gs.sh(f"ls /var/lib/gpusched/jobs /var/lib/gpusched/results {SPOOL}", user="bob",
                 check=False).returncode != 0
    assert gs.sh(f"gpuschedctl cancel {n}", user="bob", check=False).returncode != 0
    shown = gs.sh(f"gpuschedctl show {n} --json", user="bob").stdout
    assert '"log"' not in shown and '"source"' not in shown
    # alice can't edit her own copy of the status either: root's, she reads it through an ACL
    forged = f"printf 'id = {n}\\nuser = \"root\"\\nuid = 0\\nstate = \"succeeded\"\\n' > {status}"
    assert gs.sh(f"chmod 600 {status}", user="alice", check=False).returncode != 0
    assert gs.sh(forged, user="alice", check=False).returncode != 0
    assert gs.sh(f"echo x >> {st['log']}", user="alice", check=False).returncode != 0
    # and if it is edited anyway (by root here; by its user where there are no ACLs, and then the daemon
    # rewrites every live job's copy after a restart): the daemon never reads it back
    gs.sh(f"chmod 600 {status} && {forged}")
    gs.sh("systemctl restart gpusched")
    shown = json.loads(gs.sh(f"gpuschedctl show {n} --json").stdout)["job"]
    assert (shown["state"], shown["user"], shown["uid"]) == ("running", "alice", st["uid"])
    gs.sh(f"gpuschedctl cancel {n}", user="alice")
    st = gs.wait(n, "cancelled")                     # her copy: rewritten from the record at the next change
    assert (st["user"], st["uid"]) == ("alice", shown["uid"])
    # logs and status copies: root's, readable by their user alone through an ACL (group bits: its mask)
    assert gs.sh(f"stat -c '%a %U' {status} {st['log']}").stdout.split() == ["440", "root", "640", "root"]
    gs.sh(f"cat {status} {st['log']}", user="alice")


def test_a_dropped_file_can_not_be_swapped_after_it_is_taken(gs):
    # a file is renamed out of the user's reach before it is opened: what ran is what was taken
    name = gs.drop("alice", 'command = "echo original"\ngpus = 0\n')
    job = gs.job_by_source("alice", name)
    gs.sh(f"printf 'command = \"echo swapped\"\\n' > {SPOOL}/{name}", user="alice", check=False)
    st = gs.wait(job["id"], "succeeded")
    assert "original" in gs.sh(f"cat {st['log']}").stdout
    src = gs.sh(f"cat /var/lib/gpusched/jobs/{job['id']}.toml").stdout
    assert hashlib.sha256(src.encode()).hexdigest() == hashlib.sha256(
        b'command = "echo original"\ngpus = 0\n').hexdigest()
