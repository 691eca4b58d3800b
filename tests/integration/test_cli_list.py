"""`gpuschedctl list` in the real service (the systemd box): read from the listing files under /run without
the bus, fresh right after submit and cancel, each user's private fields only to them; the read commands
while gpusched is stopped; and what a terminal shows."""

from __future__ import annotations

import json
import re
import time

LISTING = "/run/gpusched/listing"
FAST = "listing files not used"                  # what `--debug` says when it falls back to the bus


def listed(gs, user, args=""):
    p = gs.sh(f"gpuschedctl --debug list {args}", user=user)
    assert FAST not in p.stderr, p.stderr             # answered from the files, not the bus
    return p.stdout


def test_list_reads_the_files_and_shows_a_submission_and_a_cancel_at_once(gs):
    queued = gs.submit("alice", 'name = "waits"\ncommand = "true"\ngpus = 8\n')      # the box has 4 GPUs
    out = listed(gs, "alice")                          # no sleep: the daemon wrote the files before answering
    assert re.search(rf"^{queued} +queued +alice +waits ", out, re.M), out
    # it ignores its stop signal, so it stays `stopping` for its grace after the cancel (sleep inherits the
    # ignored SIGUSR1), however soon the files follow its end
    running = gs.submit("alice", 'name = "runs"\ncommand = "trap \'\' USR1; sleep 300"\ngpus = 0\ngrace = "20s"\n'
                                 'stop_signal = "SIGUSR1"\n')
    gs.wait(running, "running")
    deadline = time.monotonic() + 15                   # changes the daemon made itself: within its pacing
    while not re.search(rf"^{running} +running ", out := listed(gs, "bob"), re.M) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert re.search(rf"^{running} +running ", out, re.M), out
    gs.sh(f"gpuschedctl cancel {queued} {running}", user="alice")
    out = listed(gs, "alice")
    assert not re.search(rf"^{queued} ", out, re.M), out                 # cancelled: no longer in the queue
    assert re.search(rf"^{running} +stopping ", out, re.M), out          # its grace: stopping
    jobs = json.loads(listed(gs, "alice", "--json"))["jobs"]           # (it may have ended by now)
    assert queued not in [j["id"] for j in jobs] and all(j["state"] == "stopping" for j in jobs), jobs


def test_the_files_agree_with_the_bus_and_arrays_fold_as_before(gs):
    ids = [gs.submit(u, f'name = "q{i}"\ncommand = "true"\ngpus = 8\n') for i, u in enumerate(["alice", "bob"] * 2)]
    array = gs.submit("alice", 'name = "sweep"\ncommand = "true"\ngpus = 8\n[sweep]\nlr = [1, 2, 3]\n')
    time.sleep(2)                                      # the first pass's waiting reasons, in both
    files = listed(gs, "bob").splitlines()
    every = gs.sh("gpuschedctl list --all", user="bob").stdout.splitlines()           # --all: the bus
    assert files[0] == every[0] and files[0].startswith("ID")
    ours = tuple(f"{i} " for i in ids) + (f"{array}[",)
    assert files[1:] == [r for r in every[1:] if r.startswith(ours)]
    assert re.search(rf"^{array}\[0-2\] +array +alice +sweep .*3 queued$", "\n".join(files), re.M), files
    expanded = listed(gs, "bob", "--expand")
    assert all(re.search(rf"^{array + i} +queued +alice +sweep\[{i}\]", expanded, re.M) for i in range(3))


def test_private_fields_go_only_to_their_owner(gs):
    mine = gs.submit("alice", 'name = "mine"\ncommand = "true"\ngpus = 8\n')
    theirs = gs.submit("bob", 'name = "theirs"\ncommand = "true"\ngpus = 8\n')
    jobs = {j["id"]: j for j in json.loads(listed(gs, "alice", "--json"))["jobs"]}
    assert jobs[mine]["source"].endswith(".toml") and "log" in jobs[mine]
    assert "source" not in jobs[theirs] and "log" not in jobs[theirs] and jobs[theirs]["user"] == "bob"
    every = {j["id"]: j for j in json.loads(listed(gs, None, "--json"))["jobs"]}
    assert "source" in every[theirs] and "source" in every[mine]                # root sees all
    alice = gs.sh("id -u alice").stdout.strip()
    private = gs.sh(f"ls {LISTING} | grep '\\.{alice}$'").stdout.split()
    assert private
    denied = gs.sh(f"cat {LISTING}/{private[0]}", user="bob", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert json.loads(gs.sh(f"tail -n 1 {LISTING}/{private[0]}", user="alice").stdout)["user"] == "alice"
    public = gs.sh(f"cat {LISTING}/*.json", user="bob").stdout
    assert '"theirs"' in public and '.toml"' not in public                       # no source file names


def test_unusable_files_fall_back_to_the_bus_and_come_back(gs):
    job = gs.submit("alice", 'command = "true"\ngpus = 8\n')
    # the daemon's own change (its reason) reaches the files after its pacing: let it land, or its render would
    # write the index again right after the rm below
    deadline = time.monotonic() + 15
    while "can never run here" not in listed(gs, "alice"):
        assert time.monotonic() < deadline, "the job's reason never reached the listing files"
        time.sleep(0.1)
    time.sleep(0.5)
    gs.sh(f"rm {LISTING}/index")
    p = gs.sh("gpuschedctl --debug list", user="alice")
    assert FAST in p.stderr and re.search(rf"^{job} +queued", p.stdout, re.M), p
    gs.sh(f"gpuschedctl hold {job}", user="alice")                # a change: the files are written again
    assert re.search(rf"^{job} +queued", listed(gs, "alice"), re.M)


def test_read_commands_while_gpusched_is_stopped_use_the_callers_status_files(gs):
    job = gs.submit("alice", 'name = "offline"\ncommand = "echo hello from $USER; sleep 300"\ngpus = 0\n')
    other = gs.submit("bob", 'name = "bobs"\ncommand = "true"\ngpus = 8\n')
    gs.wait(job, "running")
    gs.sh(f"for i in $(seq 50); do grep -q hello {gs.state}/logs/{job}.log && break; sleep 0.1; done")
    gs.sh("systemctl stop gpusched")
    try:
        p = gs.sh("gpuschedctl list", user="alice", check=False)
        assert p.returncode == 0, p
        assert p.stderr.strip() == "gpuschedctl: gpusched is not running; your jobs as their status files last said:"
        assert re.search(rf"^{job} +running +alice +offline", p.stdout, re.M) and f"\n{other} " not in p.stdout
        jobs = json.loads(gs.sh("gpuschedctl list --json", user="alice").stdout)
        assert jobs["offline"] is True and [j["id"] for j in jobs["jobs"]] == [job]
        assert jobs["jobs"][0]["log"].endswith(f"{job}.log")
        show = gs.sh(f"gpuschedctl show {job}", user="alice", check=False)
        assert show.returncode == 0 and re.search(r"state: running", show.stdout), show
        logs = gs.sh(f"gpuschedctl logs {job}", user="alice", check=False)
        assert logs.returncode == 0 and "hello from alice" in logs.stdout, logs
        refused = gs.sh(f"gpuschedctl show {job}", user="bob", check=False)
        assert refused.returncode == 3 and "not yours" in refused.stderr, refused
        bobs = gs.sh("gpuschedctl list --json", user="bob").stdout
        assert [j["id"] for j in json.loads(bobs)["jobs"]] == [other]
        gone = gs.sh("gpuschedctl logs 999999", user="alice", check=False)
        assert gone.returncode == 3
    finally:
        gs.sh("systemctl start gpusched")
    gs.sh(f"gpuschedctl cancel --now {job}", user="alice")


def test_a_terminal_gets_relative_times_colour_and_its_width(gs):
    job = gs.submit("alice", 'name = "a-rather-long-job-name-to-cut"\ncommand = "sleep 300"\ngpus = 0\n')
    gs.wait(job, "running")

    def on_tty(env=""):
        return gs.sh(f"{env} script -qec 'stty cols 90; gpuschedctl list' /dev/null", user="alice").stdout

    deadline = time.monotonic() + 15                 # the files follow a start within their pacing (0.5 s+)
    while True:
        out = on_tty("TERM=xterm")
        row = next(line for line in out.splitlines() if line.startswith(str(job)))
        if "running" in row or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "\x1b[32mrunning\x1b[0m" in row and re.search(r"\d+s ago|just now", row), row
    assert len(re.sub(r"\x1b\[[0-9;]*m", "", row).rstrip("\r")) <= 90
    assert "\x1b" not in on_tty("TERM=xterm NO_COLOR=1")
    piped = listed(gs, "alice")
    assert "\x1b" not in piped and "ago" not in piped and "a-rather-long-job-name-to-cut"[:21] in piped
    gs.sh(f"gpuschedctl cancel --now {job}", user="alice")
