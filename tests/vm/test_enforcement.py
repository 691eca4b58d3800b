"""What the nspawn box can only show as unit properties, enforced by a real kernel: the .deb's service in a
cgroup v2 VM (tests/vm/conftest.py) runs jobs over their limits, and the kernel stops them. Each test names
the limit it shows; docs/reliability.md lists them ("What is enforced, and where it was shown")."""

from __future__ import annotations

import json
import time

import pytest


def _py(src: str) -> str:
    """A job's command line running the Python program `src` (TOML string, JSON-quoted)."""
    return "command = " + json.dumps(["python3", "-c", src]) + "\n"


def _home_file(gs, user: str, name: str) -> str:
    return gs.sh(f"cat /home/{user}/{name}").stdout


def test_a_job_over_limits_memory_is_oom_killed_and_recorded_oom(gs):
    job = gs.submit("alice", _py("x = []\nwhile True: x.append(b'x' * (16 << 20))") + 'gpus = 0\n[limits]\nmemory = "64M"\n')
    st = gs.wait(job, "failed", timeout=120)
    assert st["outcome"] == "oom" and st["signal"] == "SIGKILL", st
    assert st["reason"] == "killed by the kernel: out of memory (limits.memory 64M)", st
    assert st["memory_peak"] <= 80 << 20, st
    assert gs.active()


def test_limits_tasks_stops_a_fork_bomb_and_the_job_is_recorded(gs):
    bomb = ("import os, sys, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(600); os._exit(0)\n        n += 1\nexcept OSError as e:\n"
            "    open(os.path.expanduser('~/bomb'), 'w').write(f'{n} {e.errno}')\n    sys.exit(3)\n")
    job = gs.submit("alice", _py(bomb) + "gpus = 0\n[limits]\ntasks = 16\n")
    st = gs.wait(job, {"failed", "succeeded"}, timeout=120)
    forked, errno = map(int, _home_file(gs, "alice", "bomb").split())
    assert errno == 11 and forked < 16, (forked, errno)        # EAGAIN from the pids controller at the limit
    assert st["state"] == "failed" and st["exit_code"] == 3, st
    # and its 15 sleeping children went with it (the job's end kills its cgroup)
    assert gs.sh("pgrep -u alice -f 'time.sleep' || true").stdout.strip() == ""


def test_limits_cpus_half_holds_a_busy_loop_to_about_half_a_cpu(gs):
    job = gs.submit("alice", _py("while True: pass") + "gpus = 0\n[limits]\ncpus = 0.5\n")
    gs.wait(job, "running", timeout=60)
    cg = "/sys/fs/cgroup" + gs.unit_prop(f"gpusched-job-{job}.scope", "ControlGroup")["ControlGroup"]

    def sample() -> tuple[float, dict[str, int]]:
        out = gs.sh(f"cat /proc/uptime {cg}/cpu.stat").stdout.split("\n")
        stat = dict((k, int(v)) for k, v in (line.split() for line in out[1:] if line.strip()))
        return float(out[0].split()[0]), stat

    time.sleep(2)
    t1, s1 = sample()
    time.sleep(8)
    t2, s2 = sample()
    gs.sh(f"gpuschedctl cancel {job}")
    share = (s2["usage_usec"] - s1["usage_usec"]) / 1e6 / (t2 - t1)
    print(f"cpus = 0.5: {share:.2f} of a CPU over {t2 - t1:.1f} s, throttled {s2['nr_throttled'] - s1['nr_throttled']}"
          " times")
    # the quota is the ceiling; under emulation on a busy host the loop may get less, never much more
    assert 0.2 <= share <= 0.6, share
    assert s2["nr_throttled"] > s1["nr_throttled"], (s1, s2)


PROBE = ("import errno, json, os\nr = {}\nfor p in ['/dev/nvidia0', '/dev/nvidia1', '/dev/nvidia2', "
         "'/dev/nvidia3', '/dev/nvidiactl']:\n    try:\n        os.close(os.open(p, os.O_RDWR))\n        r[p] = 'ok'\n"
         "    except OSError as e:\n        r[p] = errno.errorcode[e.errno]\n"
         "open(os.path.expanduser('~/devices-' + os.environ['GPUSCHED_JOB_ID']), 'w').write(json.dumps(r))\n")


def test_a_job_opens_its_own_gpu_node_and_gets_eperm_on_the_others(gs):
    hold = gs.submit("bob", "command = [\"sleep\", \"600\"]\ngpus = 1\n")   # takes GPU 0, so the probe gets another
    gs.wait(hold, "running", timeout=60)
    job = gs.submit("alice", _py(PROBE) + "gpus = 1\n")
    st = gs.wait(job, {"succeeded", "failed"}, timeout=120)
    assert st["state"] == "succeeded", st
    mine = st["gpus"][0]["index"]
    seen = json.loads(_home_file(gs, "alice", f"devices-{job}"))
    print(f"job on GPU {mine}: {seen}")
    # the device cgroup lets the job's own node and the control node through: no driver, so ENXIO, not EPERM
    assert seen[f"/dev/nvidia{mine}"] == "ENXIO" and seen["/dev/nvidiactl"] == "ENXIO", seen
    assert all(v == "EPERM" for k, v in seen.items() if k not in (f"/dev/nvidia{mine}", "/dev/nvidiactl")), seen
    assert mine != 0
    gs.sh(f"gpuschedctl cancel {hold}")


def test_a_cpu_only_job_gets_eperm_on_every_gpu_node(gs):
    job = gs.submit("alice", _py(PROBE) + "gpus = 0\n")
    gs.wait(job, "succeeded", timeout=120)
    seen = json.loads(_home_file(gs, "alice", f"devices-{job}"))
    assert set(seen.values()) == {"EPERM"}, seen
    # the same opens outside any job: the nodes are there and only the driver is missing
    assert "No such device or address" in gs.sh("cat /dev/nvidia0 2>&1 || true").stdout


def test_time_limit_stops_the_job_through_runtimemaxsec_and_it_is_recorded(gs):
    job = gs.submit("alice", "command = [\"sleep\", \"600\"]\ngpus = 0\ntime_limit = \"5s\"\n")
    gs.wait(job, "running", timeout=60)
    assert gs.unit_prop(f"gpusched-job-{job}.scope", "RuntimeMaxUSec")["RuntimeMaxUSec"] == "5s"
    st = gs.wait(job, {"failed", "succeeded", "cancelled"}, timeout=90)
    assert st["state"] == "failed" and "time limit 5s reached" in st["reason"], st


def test_leftovers_die_with_the_job_and_its_keyring_is_its_own(gs):
    cmd = ("setsid sleep 4242 < /dev/null > /dev/null 2>&1 & "
           "keyctl add user gs-vm-key secret @s > ~/key-$GPUSCHED_JOB_ID && "
           "keyctl rdescribe @s >> ~/key-$GPUSCHED_JOB_ID")
    job = gs.submit("alice", "command = " + json.dumps(["bash", "-c", cmd]) + "\ngpus = 0\n")
    st = gs.wait(job, {"succeeded", "failed"}, timeout=60)
    assert st["state"] == "succeeded", st
    time.sleep(1)
    assert gs.sh("pgrep -f 'slee[p] 4242' || true").stdout.strip() == ""      # gone with the job's cgroup
    key, desc = _home_file(gs, "alice", f"key-{job}").split("\n")[:2]
    uid = gs.sh("id -u alice").stdout.strip()
    assert key.strip().isdigit() and desc.startswith(f"keyring;{uid};"), (key, desc)   # alice's own keyring
    # another job of alice's has a fresh keyring: the key is not there
    look = "keyctl search @s user gs-vm-key > ~/look-$GPUSCHED_JOB_ID 2>&1; echo $? >> ~/look-$GPUSCHED_JOB_ID"
    other = gs.submit("alice", "command = " + json.dumps(["bash", "-c", look]) + "\ngpus = 0\n")
    gs.wait(other, {"succeeded", "failed"}, timeout=60)
    assert _home_file(gs, "alice", f"look-{other}").split()[-1] == "1"


@pytest.mark.parametrize("how", ["restart", "SIGKILL"])
def test_the_daemon_restarted_or_killed_readopts_a_running_job(gs, how):
    job = gs.submit("alice", "command = [\"bash\", \"-c\", \"sleep 20; exit 7\"]\ngpus = 1\n")
    gs.wait(job, "running", timeout=60)
    before = gs.main_pid()
    if how == "restart":
        gs.sh("systemctl restart gpusched")
    else:
        gs.sh("systemctl kill --kill-whom=main -s SIGKILL gpusched")
        deadline = time.monotonic() + 60
        while not (gs.active() and gs.main_pid() not in ("0", before)) and time.monotonic() < deadline:
            time.sleep(0.5)
    assert gs.active() and gs.main_pid() != before
    assert gs.sh(f"systemctl is-active gpusched-job-{job}.scope").stdout.strip() == "active"
    st = gs.wait(job, {"failed", "succeeded"}, timeout=90)
    assert st["exit_code"] == 7, st                             # its real exit code, seen by the new daemon
