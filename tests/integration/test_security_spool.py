"""Issue 7, items 1 (the daemon's side), 6 and 11, tried for real against the service in the box:

- spool names of any bytes each get exactly one id and a status within 2 s, and no id is burnt by a rescan;
- a job holds no inotify fd of the daemon's, and every fd the daemon holds is close-on-exec;
- someone who gets hold of the daemon's inotify fd and adds (or removes) a watch on it kills nothing and
  sees no later spool event: submissions are still taken at once;
- a user's own process in a cgroup that merely looks like gpusched's (`systemd-run --user
  --slice=gpusched.slice`, even named like a running job's scope) is foreign: its GPU is not handed out.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from gpusched.spool import source_name
from tests.integration.conftest import SPOOL

SIM_PROCS = "/run/gpusched/simulate-gpu-procs"
O_CLOEXEC = 0o2000000


def _py(gs, script: str, *args: str, user: str | None = None) -> str:
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)
    return gs.box.run(f"python3 - {quoted}", user=user, input=script).stdout


def _epoch(v) -> float:
    return v.timestamp() if hasattr(v, "timestamp") else float(v)


def _jobs_from(gs, user: str, sources: set[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in sources}
    for j in gs.list(all=True):
        if j["user"] == user and j.get("source") in out:
            out[j["source"]].append(j)
    return out


DROP = r"""
import json, os, sys, time
out = []
for h in sys.argv[1:]:
    fd = os.open(b"/var/spool/gpusched/" + bytes.fromhex(h), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'command = "true"\n')
    os.close(fd)                    # the daemon takes the file at this close
    out.append(time.time())
print(json.dumps(out))
"""


# --- item 11: names of any bytes --------------------------------------------------------------------------------

def test_every_spool_name_gets_one_id_and_a_status_within_2s(gs):
    tag = uuid.uuid4().hex[:8].encode()
    names = {
        ("é" * 125 + ".toml").encode(): None,                       # 255 bytes: "<id>-" + it is too long
        b"caf\xff-" + tag + b".toml": "not valid UTF-8",            # not UTF-8
        tag + b"a" * (255 - len(tag) - 5) + b".toml": None,         # 255 bytes of ASCII
        b"new\nline-" + tag + b".toml": "control characters",
        b"esc\x1b[31mred-" + tag + b".toml": "control characters",
        b"\xe9t\xe9\x1b-" + tag: "not valid UTF-8",                 # both at once
    }
    sources = {source_name(os.fsdecode(n)): why for n, why in names.items()}
    dropped = json.loads(_py(gs, DROP, *(n.hex() for n in names), user="alice"))
    drop_time = dict(zip(sources, dropped))

    deadline = time.monotonic() + 20
    while True:
        found = _jobs_from(gs, "alice", set(sources))
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(found.values()), f"no job for: {[s for s, j in found.items() if not j]}"
    ids = []
    for src, why in sources.items():
        assert len(found[src]) == 1, (src, found[src])
        job_id = found[src][0]["id"]
        ids.append(job_id)
        st = gs.wait(job_id, {"queued", "running", "succeeded", "rejected"})
        # the daemon's own clock says when it recorded the entry: within 2 s of its close
        assert _epoch(st["submitted"]) - drop_time[src] < 2.0, (src, st["submitted"], drop_time[src])
        if why is None:
            assert st["state"] != "rejected", (src, st.get("reason"))
        else:
            assert st["state"] == "rejected" and why in st["reason"], (src, st.get("reason"))
            kept = gs.sh(f"ls {SPOOL}/.rejected/ | grep -c '^{job_id}-'").stdout.strip()
            assert kept == "1", (src, kept)                         # kept byte for byte, under a name that fits
    assert sorted(ids) == list(range(min(ids), min(ids) + len(ids))), ids

    # one rescan later (every 10 s): nothing is left to be retried, no id was burnt
    time.sleep(max(0.0, 15 - (time.time() - max(dropped))))
    left = gs.sh(f"ls -A {SPOOL}; ls -A {SPOOL}/.work").stdout.split()
    assert sorted(left) == [".rejected", ".work"], left
    assert {s: len(j) for s, j in _jobs_from(gs, "alice", set(sources)).items()} == {s: 1 for s in sources}
    after = gs.drop("alice", 'command = "true"\n')
    assert gs.job_by_source("alice", after)["id"] == max(ids) + 1


# --- item 1, the daemon's side: no fd reaches a job ---------------------------------------------------------------

JOB_FDS = r'''command = """
python3 - <<'EOF'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for n in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        print("FD", n, os.readlink("/proc/self/fd/" + n))
    except OSError:
        pass
home = os.path.expanduser("~").encode()
ok = [fd for fd in range(1024) if libc.inotify_add_watch(fd, home, 0x100) >= 0]
print("WATCHES", ok)
EOF
"""
'''


def test_a_job_holds_no_inotify_fd_and_the_daemon_holds_only_cloexec_fds(gs):
    job = gs.submit("alice", JOB_FDS)
    st = gs.wait(job, {"succeeded", "failed"})
    out = gs.sh(f"cat {st['log']}").stdout
    assert "WATCHES []" in out, out                                # no fd of the job is an inotify instance
    assert "inotify" not in out and SPOOL not in out, out
    pid = gs.sh("systemctl show -p MainPID --value gpusched").stdout.strip()
    flags = gs.sh(f"cd /proc/{pid}/fdinfo && for f in *; do echo $f $(sed -n 's/^flags:\\s*//p' $f) "
                  f"$(readlink ../fd/$f); done").stdout.split("\n")
    leaky = [line for line in flags if line.strip() and int(line.split()[0]) > 2
             and not int(line.split()[1], 8) & O_CLOEXEC]
    assert leaky == [], f"fds of the daemon without O_CLOEXEC: {leaky}"


# --- item 1, robustness: a watch added to (or removed from) the daemon's inotify fd ---------------------------------

STEAL = r"""
import ctypes, json, os, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
pid, mode, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
[n] = [n for n in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{n}") == "anon_inode:inotify"]
try:
    fd = os.open(f"/proc/{pid}/fd/{n}", os.O_RDONLY)        # works for some fds; ENXIO for an anon inode
except OSError:
    fd = libc.syscall(438, os.pidfd_open(pid), int(n), 0)   # pidfd_getfd: a copy of the daemon's fd
assert fd >= 0, ctypes.get_errno()
os.makedirs("/root/watched", exist_ok=True)
if mode == "add":
    wd = libc.inotify_add_watch(fd, b"/root/watched", 0x100)
    assert wd > 0, ctypes.get_errno()
    open("/root/watched/poke-%d" % time.time_ns(), "w").close()  # an event for a watch the daemon never added
else:
    assert libc.inotify_rm_watch(fd, 1) == 0, ctypes.get_errno()  # the daemon's own watch (its first)
time.sleep(0.5)
# alice submits; whoever holds the stolen fd must not see it
subprocess.run(["runuser", "-u", "alice", "--", "sh", "-c",
                f"printf 'command = \"true\"\\n' > {sys.argv[4]}/{name}"], check=True)
dropped = time.time()
time.sleep(0.5)
os.set_blocking(fd, False)
seen = b""
try:
    while chunk := os.read(fd, 65536):
        seen += chunk
except BlockingIOError:
    pass
print(json.dumps({"dropped": dropped, "leaked": name.encode() in seen}))
"""


def _daemon_pid(gs) -> str:
    return gs.sh("systemctl show -p MainPID --value gpusched").stdout.strip()


def test_a_watch_added_to_the_daemons_inotify_fd_kills_nothing(gs):
    pid = _daemon_pid(gs)
    for mode in ("add", "remove"):
        name = f"after-{mode}-{uuid.uuid4().hex[:8]}.toml"
        res = json.loads(_py(gs, STEAL, pid, mode, name, SPOOL))
        job = gs.job_by_source("alice", name)
        st = gs.wait(job["id"], {"queued", "running", "succeeded"})
        # taken from its inotify event, not the 10 s rescan
        assert _epoch(st["submitted"]) - res["dropped"] < 1.0, (mode, st["submitted"], res["dropped"])
        assert not res["leaked"], f"the stolen fd still saw the spool's events ({mode})"
        # and again, with nobody touching the fd
        t0 = time.time()
        name2 = gs.drop("alice", 'command = "true"\n')
        st2 = gs.wait(gs.job_by_source("alice", name2)["id"], {"queued", "running", "succeeded"})
        assert _epoch(st2["submitted"]) - t0 < 1.5
    assert _daemon_pid(gs) == pid and gs.active()
    assert "moved to a fresh inotify instance" in gs.journal("-u", "gpusched", "--since=-120s")


# --- item 6: a process that only looks like gpusched's is foreign -----------------------------------------------------

def _gpus(gs) -> list[dict]:
    return json.loads(gs.sh("gpuschedctl gpus --json").stdout)["gpus"]


def _wait_gpus(gs, want, timeout=15.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        g = _gpus(gs)
        if want(g) or time.monotonic() > deadline:
            return g
        time.sleep(0.2)


def _user_manager(gs, user: str) -> str:
    uid = gs.sh(f"id -u {user}").stdout.strip()
    gs.sh(f"loginctl enable-linger {user}")
    gs.sh(f"for i in $(seq 100); do systemctl is-active -q user@{uid}.service && "
          f"test -S /run/user/{uid}/systemd/private && exit 0; sleep 0.1; done; exit 1")
    return f"XDG_RUNTIME_DIR=/run/user/{uid}"


def test_a_process_that_only_looks_like_a_job_is_foreign(gs):
    gs.sh("mkdir -p /run/gpusched && rm -f " + SIM_PROCS)
    env = _user_manager(gs, "alice")
    real = gs.submit("alice", 'command = "echo $$ > ~/real.pid; exec sleep 300"\ngpus = 1\n')
    jobs = [real]
    st = gs.wait(real, "running")
    real_gpu = st["gpus"][0]["index"]
    deadline = time.monotonic() + 10
    while gs.sh("test -s /home/alice/real.pid", check=False).returncode and time.monotonic() < deadline:
        time.sleep(0.1)
    real_pid = int(gs.sh("cat /home/alice/real.pid").stdout)
    fakes = [f"fake-{uuid.uuid4().hex[:6]}", f"gpusched-job-{real}"]  # the second named like the real job's scope
    try:
        # alice's own processes, in her user manager's gpusched.slice: one service, one scope named like job's
        gs.sh(f"{env} systemd-run --user --quiet --slice=gpusched.slice --unit={fakes[0]} sleep 300", user="alice")
        gs.sh(f"{env} setsid systemd-run --user --quiet --scope --slice=gpusched.slice --unit={fakes[1]} "
              f"sleep 300 </dev/null >/dev/null 2>&1 &", user="alice")
        fake_pids = []
        for unit in (f"{fakes[0]}.service", f"{fakes[1]}.scope"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cg = gs.sh(f"{env} systemctl --user show -p ControlGroup --value {unit}", user="alice").stdout.strip()
                procs = gs.sh(f"cat /sys/fs/cgroup/systemd{cg}/cgroup.procs 2>/dev/null || "
                              f"cat /sys/fs/cgroup{cg}/cgroup.procs", check=False).stdout.split() if cg else []
                if procs:
                    fake_pids.append(int(procs[0]))
                    break
                time.sleep(0.1)
        assert len(fake_pids) == 2, fake_pids
        for fp in fake_pids:
            cg = gs.sh(f"grep name=systemd /proc/{fp}/cgroup").stdout
            assert "/gpusched.slice/" in cg and cg.split(":", 2)[2].startswith("/user.slice/"), cg
        free = [i for i in range(4) if i != real_gpu]
        # root says what is "on" each simulated GPU: the real job's process on its own GPU, alice's on two others
        gs.sh(f"printf '{real_gpu} {real_pid}\\n{free[0]} {fake_pids[0]}\\n{free[1]} {fake_pids[1]}\\n' > {SIM_PROCS}"
              f" && chmod 644 {SIM_PROCS}")
        gpus = _wait_gpus(gs, lambda g: g[free[0]]["state"] == "foreign" and g[free[1]]["state"] == "foreign")
        assert gpus[free[0]]["state"] == "foreign" and gpus[free[0]]["foreign_pids"] == [fake_pids[0]], gpus
        assert gpus[free[1]]["state"] == "foreign" and gpus[free[1]]["foreign_pids"] == [fake_pids[1]], gpus
        # the real job's own process is not foreign
        assert gpus[real_gpu]["state"] == f"job {real}" and gpus[real_gpu]["foreign_pids"] == [], gpus
        for i, fp in ((free[0], fake_pids[0]), (free[1], fake_pids[1])):
            [facts] = gpus[i]["foreign"]
            assert facts["pid"] == fp and facts["user"] == "alice" and facts["name"] == "sleep", facts
            assert facts["cmdline"].endswith("sleep 300"), facts
        assert f"pids {fake_pids[0]}" in gs.sh("gpuschedctl gpus").stdout

        # only the one GPU that is really free is handed out
        a = gs.submit("bob", 'command = "sleep 300"\ngpus = 1\n')
        jobs.append(a)
        assert gs.wait(a, "running")["gpus"][0]["index"] == free[2]
        b = gs.submit("bob", 'command = "sleep 300"\ngpus = 1\n')
        jobs.append(b)
        time.sleep(3)                                      # a few probes and passes: it must stay queued
        s = gs.status(b)
        assert s["state"] == "queued" and "did not start" in s["reason"], s

        # alice's processes go: the GPUs are free again and the waiting jobs start
        gs.sh(f"{env} systemctl --user stop {fakes[0]}.service {fakes[1]}.scope", user="alice")
        assert gs.wait(b, "running", timeout=20)["gpus"][0]["index"] in free[:2]
    finally:
        gs.sh(f"rm -f {SIM_PROCS}; rm -f /home/alice/real.pid")
        gs.sh(f"{env} systemctl --user stop {fakes[0]}.service {fakes[1]}.scope", user="alice", check=False)
        gs.sh("loginctl disable-linger alice", check=False)
        for j in jobs:
            gs.sh(f"gpuschedctl cancel {j}", check=False)
