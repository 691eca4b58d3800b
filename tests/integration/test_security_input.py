"""What a user's job file may not ask for, tried for real (issue 7, items 2-4 and 14): as alice, against the
service in the box, through the spool and through `gpuschedctl submit`.

Urgency is granted, not claimed (min_user_priority); grace and run time are capped (max_grace,
max_time_limit); tags are capped; a flood of problems gives a short reason and small status files; a workdir
of "~bob" is refused. Root's files, and admins' for priority, are exempt: shown too.
"""

from __future__ import annotations

import time

from tests.integration.conftest import SPOOL, STATE

def _copy_in(gs, user: str, name: str, make: str) -> str:
    """`make` (a shell command run as `user`) writes ~/NAME; it is then copied into the spool, as a user would."""
    gs.sh(f"cd ~ && {make} && cp ~/{name} {SPOOL}/{name}", user=user)
    return name


def _python(code: str, out: str) -> str:
    return f"python3 - > {out} <<'EOF'\n{code}\nEOF\ntrue"


def _rejected(gs, user: str, name: str) -> dict:
    job = gs.job_by_source(user, name, timeout=20)
    return gs.wait(job["id"], "rejected")


def _sha(gs, path: str) -> str:
    return gs.sh(f"sha256sum < '{path}'").stdout.split()[0]


def test_a_user_cannot_claim_urgency_over_others_running_jobs(gs):
    bob = [gs.submit("bob", 'command = "sleep 60"\ngpus = 2\ngrace = "2s"\n') for _ in range(2)]
    for n in bob:
        gs.wait(n, "running")
    text = 'command = "nvidia-smi; sleep 60"\ngpus = 2\npriority = -1000000\n'
    name = gs.drop("alice", text, name="me-first.toml")
    st = _rejected(gs, "alice", name)
    assert st["reason"].startswith("me-first.toml:3: priority: -1000000 is more urgent than this server allows "
                                   "(at most 100;"), st["reason"]
    assert "min_user_priority" in st["reason"]
    kept = f"{SPOOL}/.rejected/{st['id']}-{name}"
    assert gs.sh(f"cat '{kept}'").stdout == text                      # the original, kept as it was
    # through the CLI the same: the daemon's reason, word for word
    gs.sh(f"cat > ~/me-first-2.toml <<'EOF'\n{text}EOF", user="alice")
    p = gs.sh("cd ~ && gpuschedctl submit me-first-2.toml", user="alice", check=False)
    assert p.returncode != 0 and "priority: -1000000 is more urgent than this server allows" in p.stderr, p
    # and bob's jobs never noticed: still running, first attempt, never preempted
    time.sleep(1)                                    # a pass of the scheduler, were anything left to do
    for n in bob:
        st = gs.status(n)
        assert (st["state"], st["attempt"], st.get("preemptions", 0)) == ("running", 1, 0), st
    assert sorted(j["id"] for j in gs.list() if j["state"] == "running") == sorted(bob)


def test_a_user_cannot_ask_for_a_century_of_grace(gs):
    gs.sh("cat > ~/forever.toml <<'EOF'\ncommand = \"trap '' TERM; sleep 600\"\ngpus = 2\ngrace = \"36500d\"\nEOF",
          user="alice")
    p = gs.sh("cd ~ && gpuschedctl submit forever.toml", user="alice", check=False)
    assert p.returncode != 0
    assert "forever.toml:3: grace: 36500d is more than the 10m this server allows (max_grace)" in p.stderr, p
    # gpuschedctl refuses it before writing anything (same limits, same words); dropped in, the daemon does
    gs.sh(f"cp ~/forever.toml {SPOOL}/forever.toml", user="alice")
    st = _rejected(gs, "alice", "forever.toml")
    assert "grace: 36500d is more than the 10m this server allows (max_grace)" in st["reason"]
    assert not [j for j in gs.list() if j["user"] == "alice"]


def test_root_may_be_urgent_and_patient(gs):
    n = gs.submit("root", 'command = "echo root was here"\ngpus = 0\npriority = -1000\ngrace = "2h"\n')
    st = gs.wait(n, "succeeded")
    assert st["priority"] == -1000


def test_caps_and_the_admin_group_from_the_config(gs):
    """max_time_limit set to 1d and an admin group with bob in it: the daemon reads them at (re)start."""
    gs.sh("(getent group gsadmin || groupadd gsadmin) && usermod -aG gsadmin bob")
    try:
        with gs.configured('max_time_limit = "1d"\nadmin_group = "gsadmin"'):
            assert gs.active()
            long = gs.drop("alice", 'command = "true"\ngpus = 0\ntime_limit = "2d"\n', name="two-days.toml")
            none = gs.drop("alice", 'command = "true"\ngpus = 0\n', name="no-limit.toml")
            assert _rejected(gs, "alice", long)["reason"] == \
                "two-days.toml:3: time_limit: 2d is more than the 1d this server allows (max_time_limit)"
            assert _rejected(gs, "alice", none)["reason"] == \
                "no-limit.toml: time_limit: required on this server: at most 1d (max_time_limit)"
            assert gs.wait(gs.submit("alice", 'command = "true"\ngpus = 0\ntime_limit = "12h"\n'), "succeeded")
            # an admin may be urgent, but is capped like everyone (only root is not)
            n = gs.submit("bob", 'command = "true"\ngpus = 0\ntime_limit = "1h"\npriority = -1000\n')
            assert gs.wait(n, "succeeded")["priority"] == -1000
            name = gs.drop("bob", 'command = "true"\ngpus = 0\ntime_limit = "30d"\n', name="admin-long.toml")
            assert "more than the 1d this server allows" in _rejected(gs, "bob", name)["reason"]
            # alice is no admin
            name = gs.drop("alice", 'command = "true"\ngpus = 0\ntime_limit = "1h"\npriority = -1000\n',
                           name="a.toml")
            assert "is more urgent than this server allows" in _rejected(gs, "alice", name)["reason"]
            # root is exempt from the time cap
            assert gs.wait(gs.submit("root", 'command = "true"\ngpus = 0\ntime_limit = "30d"\n'), "succeeded")
    finally:
        gs.sh("gpasswd -d bob gsadmin; groupdel gsadmin", check=False)
    assert gs.active()


def test_ten_thousand_tags_are_refused_in_a_line(gs):
    name = _copy_in(gs, "alice", "tags.toml", _python(
        'print("command = \'true\'\\ngpus = 0\\ntags = [" + ", ".join(f"\'t{i}\'" for i in range(10000)) + "]")',
        "tags.toml"))
    st = _rejected(gs, "alice", name)
    assert st["reason"] == "tags.toml:3: tags: 10000 tags; at most 32"


def test_a_flood_of_unknown_keys_gives_a_short_reason_and_small_files(gs):
    make = _python('import sys; sys.stdout.write("command = \'true\'\\n" + '
                   '"".join(f"key{i:05d} = 10\\n" for i in range(74000)))', "flood.toml")
    name = _copy_in(gs, "alice", "flood.toml", make)
    size = int(gs.sh("stat -c %s /home/alice/flood.toml").stdout)
    assert 1_000_000 < size <= 1 << 20
    st = _rejected(gs, "alice", name)
    reason = st["reason"]
    assert len(reason.encode()) < 5 * 1024, len(reason)
    lines = reason.splitlines()
    assert len(lines) <= 21
    assert lines[0] == "flood.toml:2: key00000: unknown key"
    assert lines[-1] == "flood.toml: ... and 73980 more problems (only the first are reported)"
    copy = int(gs.sh(f"stat -c %s {STATE}/status/{st['id']}.toml").stdout)
    record = int(gs.sh(f"stat -c %s {STATE}/jobs/{st['id']}.status.toml").stdout)
    assert copy < 16 * 1024 and record < 16 * 1024, (copy, record)
    # the file itself is kept whole, and the service still answers and runs jobs
    assert _sha(gs, f"{SPOOL}/.rejected/{st['id']}-{name}") == _sha(gs, "/home/alice/flood.toml")
    assert gs.active()
    assert gs.wait(gs.submit("alice", 'command = "true"\ngpus = 0\n'), "succeeded")


def test_workdir_of_another_users_home_is_refused(gs):
    name = gs.drop("alice", 'command = "pwd"\ngpus = 0\nworkdir = "~bob"\n', name="tilde-bob.toml")
    reason = _rejected(gs, "alice", name)["reason"]
    assert reason.startswith("tilde-bob.toml:3: workdir: '~bob': only '~' and '~/...' (the home of the user the "
                             "job runs as) are expanded, never '~bob'"), reason
    gs.sh("cat > ~/tilde.toml <<'EOF'\ncommand = \"pwd\"\ngpus = 0\nworkdir = \"~bob/x\"\nEOF", user="alice")
    p = gs.sh("cd ~ && gpuschedctl submit tilde.toml", user="alice", check=False)
    assert p.returncode != 0 and "never '~bob'" in p.stderr, p
    # what is meant still works
    n = gs.submit("alice", 'command = "pwd"\ngpus = 0\nworkdir = "~/"\n')
    st = gs.wait(n, "succeeded")
    assert gs.sh(f"cat {st['log']}").stdout.splitlines()[0] == "/home/alice"
