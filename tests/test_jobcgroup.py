"""The job's cgroup, on this machine's real cgroup hierarchies (as root): each way of killing a job's leftovers
against a process that forks and exits in a loop, so that its pid never stays the same."""

import os
import subprocess
import sys
import time
import uuid

import pytest

from gpusched import jobcgroup
from gpusched.jobcgroup import JobCgroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes cgroups")

UNIFIED = next((m for m, t, _ in jobcgroup._mounts() if t == "cgroup2"), None)
FREEZER = next((m for m, t, o in jobcgroup._mounts() if t == "cgroup" and "freezer" in o.split(",")), None)
NAMED = next((m for m, t, o in jobcgroup._mounts() if t == "cgroup" and "name=systemd" in o.split(",")), None)

# forks, the parent exits, the child goes on: a new pid every millisecond, forever
FORK_RUNNER = "import os, time\nwhile True:\n    time.sleep(0.001)\n    if os.fork():\n        os._exit(0)\n"


def writable(d):
    if d is None:
        return False
    probe = os.path.join(d, f"gsprobe-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def start_in(cg: JobCgroup, code: str) -> None:
    """A job's main process in `cg` that starts `code` in the background and exits."""
    p = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
                          f"{code!r}], start_new_session=True)"], preexec_fn=cg.enter)
    p.wait()


def wait_for_pids(cg, n=1, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(cg.pids()) < n:
        assert time.monotonic() < deadline, "the job's processes never showed up in its cgroup"
        time.sleep(0.01)


@pytest.fixture
def made():
    dirs = []
    yield dirs
    for d in reversed(dirs):
        for _ in range(100):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), 9)
                except OSError:
                    pass
                time.sleep(0.05)


def v2_job(made) -> str:
    if not writable(UNIFIED):
        pytest.skip("no writable cgroup v2 hierarchy here")
    scope = os.path.join(UNIFIED, f"gsjobtest-{uuid.uuid4().hex[:8]}.scope")
    os.mkdir(scope)
    made.append(scope)
    job = os.path.join(scope, "job")
    os.mkdir(job)
    made.append(job)
    return job


def test_cgroup_kill_ends_a_fork_runner(made):
    job = v2_job(made)
    if not os.path.exists(os.path.join(job, "cgroup.kill")):
        pytest.skip("this kernel has no cgroup.kill (5.14+)")
    cg = JobCgroup("kill", os.path.join(job, "cgroup.procs"), job)
    start_in(cg, FORK_RUNNER)
    wait_for_pids(cg)
    time.sleep(0.1)                                   # it has changed pids many times by now
    killed, left = cg.kill_all(timeout=5)
    assert (killed >= 1, left) == (True, 0)
    assert cg.pids() == set()
    cg.remove()
    assert not os.path.exists(job)


def test_v2_freeze_then_kill_ends_a_fork_runner(made):
    job = v2_job(made)
    cg = JobCgroup("freeze", os.path.join(job, "cgroup.procs"), job)
    start_in(cg, FORK_RUNNER)
    wait_for_pids(cg)
    killed, left = cg.kill_all(timeout=5)
    assert left == 0 and killed >= 1
    with open(os.path.join(job, "cgroup.events")) as f:
        assert "frozen 0" in f.read()                 # thawed again
    cg.remove()


def test_v1_freezer_then_kill_ends_a_fork_runner(made):
    if not writable(FREEZER):
        pytest.skip("no writable v1 freezer hierarchy here")
    unit = f"gsjobtest-{uuid.uuid4().hex[:8]}.scope"
    parent = os.path.join(FREEZER, jobcgroup.V1_FREEZER_PARENT)
    if not os.path.isdir(parent):
        made.append(parent)
    cg = jobcgroup.prepare(unit)                      # this process is in no scope: v2 is not tried
    made.append(cg.directory)
    assert (cg.mode, cg.v2) == ("freeze", False)
    start_in(cg, FORK_RUNNER)
    wait_for_pids(cg)
    killed, left = cg.kill_all(timeout=5)
    assert left == 0 and killed >= 1
    with open(os.path.join(cg.directory, "freezer.state")) as f:
        assert f.read().strip() == "THAWED"
    cg.remove()


def test_the_sweep_kills_what_is_left_but_the_monitor(made):
    if not writable(NAMED):
        pytest.skip("no writable name=systemd hierarchy here")
    scope = os.path.join(NAMED, f"gsjobtest-{uuid.uuid4().hex[:8]}.scope")
    os.mkdir(scope)
    made.append(scope)
    procs = os.path.join(scope, "cgroup.procs")
    # the scope as the sweep sees it: the job's processes with the "monitor" (here, a sleeper standing in)
    cg = JobCgroup("sweep", procs, scope)
    start_in(cg, "import os, time\nfor _ in range(5):\n    os.fork()\ntime.sleep(60)\n")
    wait_for_pids(cg, 32)
    killed, left = JobCgroup("sweep", procs).kill_all(timeout=5)
    assert (killed, left) == (32, 0)


def test_prepare_outside_a_scope_says_why(made):
    if FREEZER and not os.path.isdir(os.path.join(FREEZER, jobcgroup.V1_FREEZER_PARENT)):
        made.append(os.path.join(FREEZER, jobcgroup.V1_FREEZER_PARENT))
    cg = jobcgroup.prepare("gsjobtest-not-my-unit.scope")
    if cg.mode == "freeze":                           # a v1 freezer cgroup was made for it
        assert cg.v2 is False
        made.append(cg.directory)
    else:
        assert cg.mode == "none"
        assert "no cgroup of gsjobtest-not-my-unit.scope found" in cg.note
