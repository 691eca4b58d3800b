"""The GPU probe without a GPU: which processes are gpusched's (issue 7, item 6), the simulation file, a fake
NVML, and fd hygiene (fds.py)."""

import os
import subprocess
import sys
import time
import types

import pytest

from gpusched import fds, gpus
from gpusched.config import SimulatedGpu
from gpusched.gpus import job_scope_of, read_simulated_procs, tracked_cgroup

ACTIVE = frozenset({"gpusched-job-7.scope", "gpusched-job-12.scope"})

V1 = """12:pids:/user.slice
9:name=systemd:{path}
1:cpu:/
0::/something/else
"""


# --- which cgroup counts -----------------------------------------------------------------------------------------

def test_tracked_cgroup_prefers_the_unified_line_then_name_systemd():
    # hybrid: the unified line wins (a job can move itself on v1 into its user's manager, not on v2)
    assert tracked_cgroup(V1.format(path="/gpusched.slice/gpusched-job-7.scope")) == "/something/else"
    hybrid = "9:name=systemd:/user.slice/user-1001.slice/user@1001.service\n0::/gpusched.slice/gpusched-job-7.scope/job\n"
    assert tracked_cgroup(hybrid) == "/gpusched.slice/gpusched-job-7.scope/job"
    # pure v1: no unified hierarchy in use ("0::/"), so name=systemd
    pure_v1 = V1.format(path="/gpusched.slice/gpusched-job-7.scope").replace("0::/something/else", "0::/")
    assert tracked_cgroup(pure_v1) == "/gpusched.slice/gpusched-job-7.scope"
    assert tracked_cgroup("0::/gpusched.slice/gpusched-job-7.scope\n") == "/gpusched.slice/gpusched-job-7.scope"
    assert tracked_cgroup("3:memory:/gpusched.slice/gpusched-job-7.scope\n") is None   # a controller: no
    assert tracked_cgroup("") is None
    assert tracked_cgroup("garbage\n0:\n") is None


@pytest.mark.parametrize("path, scope", [
    ("/gpusched.slice/gpusched-job-7.scope", "gpusched-job-7.scope"),
    ("/gpusched.slice/gpusched-job-7.scope/job", "gpusched-job-7.scope"),         # the monitor's sub-cgroup
    ("/gpusched.slice/gpusched-job-12.scope/a/b", "gpusched-job-12.scope"),
    # not an active job's scope
    ("/gpusched.slice/gpusched-job-8.scope", None),
    ("/gpusched.slice/gpusched-job-70.scope", None),
    ("/gpusched.slice/gpusched-job-7.scopeX", None),
    ("/gpusched.slice/fake.scope", None),
    ("/gpusched.slice", None),
    ("/gpusched.slice/", None),
    # the same names below the root: a user's own manager can make these (systemd-run --user --slice=...)
    ("/user.slice/user-1000.slice/user@1000.service/gpusched.slice/gpusched-job-7.scope", None),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/gpusched.slice/gpusched-job-7.scope", None),
    ("/../gpusched.slice/gpusched-job-7.scope", None),          # outside our cgroup namespace
    ("/system.slice/gpusched.service", None),
    ("//gpusched.slice/gpusched-job-7.scope", None),
    ("", None),
    (None, None),
])
def test_job_scope_of(path, scope):
    assert job_scope_of(path, ACTIVE) == scope


def test_nothing_is_ours_without_active_units():
    assert job_scope_of("/gpusched.slice/gpusched-job-7.scope", frozenset()) is None


def test_v1_line_decides_even_if_unified_disagrees():
    text = V1.format(path="/user.slice/user-1000.slice/user@1000.service/gpusched.slice/gpusched-job-7.scope")
    assert job_scope_of(tracked_cgroup(text), ACTIVE) is None


def test_this_process_and_a_missing_one_are_foreign():
    assert not gpus.ours(os.getpid(), ACTIVE)
    assert not gpus.ours(2**22 + 12345, ACTIVE)                 # beyond pid_max: never exists


# --- process facts ---------------------------------------------------------------------------------------------

def test_describe_a_real_process_bounded():
    p = subprocess.Popen(["sh", "-c", "sleep 30", "sh"] + ["x" * 100] * 10)
    try:
        _wait_exec(p.pid, b"sh")
        fp = gpus.describe(p.pid, 123)
    finally:
        p.kill()
        p.wait()
    import pwd
    assert fp.pid == p.pid and fp.gpu_memory == 123
    assert fp.user == pwd.getpwuid(os.getuid()).pw_name
    assert fp.name == "sh"
    assert fp.cmdline.startswith("sh -c sleep 30 sh xxx") and len(fp.cmdline) <= gpus.MAX_CMDLINE
    assert fp.cmdline.endswith("…")


def _wait_exec(pid, prog):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().startswith(prog):
                return
        time.sleep(0.005)


def test_describe_a_gone_process():
    fp = gpus.describe(2**22 + 12345)
    assert fp.user == "?" and fp.name == "?" and fp.cmdline == ""


# --- the simulation file ---------------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the simulation file must be owned by root")


def _write(path, text, mode=0o644, uid=0):
    path.write_text(text)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, 0)


@needs_root
def test_simulated_procs_file_is_read_only_when_only_root_can_write_it(tmp_path):
    f = tmp_path / "procs"
    _write(f, "0 100\n0 101 # comment\n2 300\nbad line\n1\n-1 5\n3 x\n")
    assert read_simulated_procs(str(f)) == {0: [100, 101], 2: [300]}
    _write(f, "0 100\n", mode=0o666)
    assert read_simulated_procs(str(f)) == {}                   # writable by others
    _write(f, "0 100\n", mode=0o664)
    assert read_simulated_procs(str(f)) == {}                   # writable by the group
    _write(f, "0 100\n", uid=1234)
    assert read_simulated_procs(str(f)) == {}                   # not root's
    _write(f, "0 100\n")
    os.symlink(f, tmp_path / "link")
    assert read_simulated_procs(str(tmp_path / "link")) == {}   # never followed
    assert read_simulated_procs(str(tmp_path / "missing")) == {}


@needs_root
def test_simulated_probe_classifies_listed_pids(tmp_path, monkeypatch):
    f = tmp_path / "procs"
    p = subprocess.Popen(["sleep", "30"])
    try:
        _wait_exec(p.pid, b"sleep")
        _write(f, f"0 {p.pid}\n3 {p.pid}\n9 {p.pid}\n")
        monkeypatch.setattr(gpus, "SIMULATED_PROCS", str(f))
        probe = gpus.SimulatedGpus([SimulatedGpu("Sim", 1 << 30)] * 4)
        out = probe.probe(ACTIVE)
        assert [g.foreign_pids for g in out] == [(p.pid,), (), (), (p.pid,)]
        assert out[0].foreign[0].name == "sleep" and out[0].foreign[0].pid == p.pid
        # the same pid in an active job's scope is ours: pretend by classifying it so
        monkeypatch.setattr(gpus, "ours", lambda pid, units: pid == p.pid and "gpusched-job-7.scope" in units)
        assert all(not g.foreign for g in probe.probe(ACTIVE))
        assert probe.probe(frozenset())[0].foreign_pids == (p.pid,)
    finally:
        p.kill()
        p.wait()
    f.unlink()
    assert all(not g.foreign for g in probe.probe(ACTIVE))


# --- NVML, faked ------------------------------------------------------------------------------------------------

class _Err(Exception):
    pass


def fake_pynvml(procs_by_gpu, leak_fd):
    m = types.SimpleNamespace(NVMLError=_Err)
    opened = []

    def leak():
        fd = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(fd, True)                            # as a C library's open() without O_CLOEXEC
        opened.append(fd)
        leak_fd.append(fd)

    m.nvmlInit = leak
    m.nvmlDeviceGetCount = lambda: len(procs_by_gpu)
    m.nvmlDeviceGetHandleByIndex = lambda i: (leak(), i)[1]     # NVML opens /dev/nvidia<N> lazily
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30, free=70 << 30)
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100"
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    m.nvmlDeviceGetMinorNumber = lambda h: h
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=pid, usedGpuMemory=mem)
                                                        for pid, mem in procs_by_gpu[h]]
    return m


def test_nvml_probe_reports_foreign_processes_and_leaves_no_inheritable_fd(monkeypatch):
    leaked: list[int] = []
    me = os.getpid()
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([[(me, 5 << 20)], [(me, 2**64 - 1)], []], leaked))
    try:
        probe = gpus.NvmlGpus()
        assert fds.inheritable_fds() == []
        out = probe.probe(ACTIVE)
        assert fds.inheritable_fds() == []
        assert [g.foreign_pids for g in out] == [(me,), (me,), ()]
        assert out[0].foreign[0].gpu_memory == 5 << 20
        assert out[1].foreign[0].gpu_memory is None             # NVML's "not available"
        assert out[0].name == "NVIDIA H100" and out[0].uuid == "GPU-0"
    finally:
        for fd in leaked:
            os.close(fd)


def test_nvml_error_is_a_probe_error_and_fds_are_still_fixed(monkeypatch):
    leaked: list[int] = []
    m = fake_pynvml([[]], leaked)

    def fail():
        m.nvmlInit()
        raise _Err("GPU is lost")
    monkeypatch.setitem(sys.modules, "pynvml", m)
    try:
        probe = gpus.NvmlGpus()
        m.nvmlDeviceGetCount = fail
        with pytest.raises(gpus.GpuProbeError, match="GPU is lost"):
            probe.probe()
        assert fds.inheritable_fds() == []
    finally:
        for fd in leaked:
            os.close(fd)


# --- fds --------------------------------------------------------------------------------------------------------

def test_cloexec_all_marks_every_fd_and_a_child_inherits_none():
    r, w = os.pipe()
    os.set_inheritable(r, True)
    os.set_inheritable(w, True)
    try:
        assert r in fds.inheritable_fds()
        assert fds.cloexec_all() >= 2
        assert fds.inheritable_fds() == []
        out = subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True, close_fds=False).stdout
        assert str(r) not in out.split() and str(w) not in out.split()
    finally:
        os.close(r)
        os.close(w)


def test_many_foreign_processes_are_all_counted_and_few_described(monkeypatch):
    monkeypatch.setattr(gpus, "describe", lambda pid, mem=None: gpus.ForeignProcess(pid, "u", "n", "", mem))
    pids, described = gpus.foreign_of([(p, None) for p in range(5000, 4000, -1)] + [(4500, 7)], ACTIVE)
    assert pids == tuple(range(4001, 5001))
    assert [d.pid for d in described] == list(range(4001, 4001 + gpus.MAX_DESCRIBED))
    assert gpus.foreign_of([(4500, 7), (4500, None)], ACTIVE)[1][0].gpu_memory == 7
