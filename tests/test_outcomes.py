"""Issue 9's out-of-memory recovery: the GPU out-of-memory patterns, the cgroup readers (on files in tmp_path),
`on_gpu_oom` in job files, the outcome in the job's record and reason, the retries it takes (a GPU of its own,
more GPU memory, kept across a restart), and the real monitor recording outcome, CPU time and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from gpusched import config as configmod
from gpusched import cgroupusage, dependencies, gpuoom, jobfile, lifecycle
from gpusched.jobfile import JobSpec, ResourceLimits
from gpusched.model import Gpu, Job, State, job_from_dict, job_to_dict
from gpusched.policy import inputs
from gpusched.testing import EPOCH, MemoryRecorder, World
from tests.test_monitor import ROOT, _remove_v1_freezer, account

G = 1 << 30


def spec(name="train", gpus=1, **kw) -> JobSpec:
    return JobSpec(command="python train.py", name=name, gpus=gpus, **kw)


# --- the patterns -------------------------------------------------------------------------------------------

# what the libraries really print (copied from their sources and bug reports), one per documented pattern
REAL = {
    "CUDA out of memory": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a "
                          "total capacity of 79.19 GiB of which 3.25 GiB is free.",
    "torch.cuda.OutOfMemoryError": "torch.cuda.OutOfMemoryError: <message cut>",
    "HIP out of memory": "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 2.00 GiB.",
    "CUDA error: out of memory": "RuntimeError: CUDA error: out of memory",
    "cudaErrorMemoryAllocation": "what():  cudaErrorMemoryAllocation: out of memory",
    "CUDA_ERROR_OUT_OF_MEMORY": "E external/xla/xla/stream_executor/cuda/cuda_driver.cc:1234] failed to alloc "
                                "8589934592 bytes on host: CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED": "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                                  "`cublasCreate(handle)`",
    "CUDNN_STATUS_ALLOC_FAILED": "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "CUSOLVER_STATUS_ALLOC_FAILED": "RuntimeError: cusolver error: CUSOLVER_STATUS_ALLOC_FAILED",
    "CUSPARSE_STATUS_ALLOC_FAILED": "RuntimeError: CUDA error: CUSPARSE_STATUS_ALLOC_FAILED when calling `cusparseCreate`",
    "CUFFT_ALLOC_FAILED": "RuntimeError: cuFFT error: CUFFT_ALLOC_FAILED",
    "OOM when allocating": "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating "
                           "tensor with shape[1024,1024,1024] and type float on /job:localhost/replica:0/task:0/"
                           "device:GPU:0 by allocator GPU_0_bfc",
    "RESOURCE_EXHAUSTED: Out of memory": "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory "
                                         "while trying to allocate 85899345920 bytes.",
    "cuda.memory.OutOfMemoryError": "cupy.cuda.memory.OutOfMemoryError: Out of memory allocating 8,000,000,512 "
                                    "bytes (allocated so far: 0 bytes).",
    "NCCL WARN Cuda failure 'out of memory'": "node1:123:456 [0] enqueue.cc:100 NCCL WARN Cuda failure 'out of "
                                              "memory'",
}


def test_every_documented_pattern_matches_what_its_library_prints():
    assert set(REAL) == {text for _, text in gpuoom.PATTERNS}
    for pattern, line in REAL.items():
        assert gpuoom.match(line) == pattern, line


@pytest.mark.parametrize("line", [
    "MemoryError",                                                  # host memory: the kernel's, not the GPU's
    "Exception in thread main java.lang.OutOfMemoryError: Java heap space",
    "Killed",
    "RuntimeError: CUDA error: device-side assert triggered",
    "cuda out of memory",                                           # not how any library writes it
    "loss 0.31, gpu memory 71.2 GiB of 80 GiB",
])
def test_lines_that_are_not_a_gpu_out_of_memory(line):
    assert gpuoom.match(line) is None


def test_the_matcher_keeps_the_first_match_bounded_and_then_stops_looking():
    m = gpuoom.Matcher()
    m.feed(b"epoch 1")
    assert m.found is None
    m.feed(b"x" * 10000 + REAL["OOM when allocating"].encode() + b"y" * 10000)
    assert m.pattern == "OOM when allocating" and m.library == "TensorFlow"
    assert "OOM when allocating" in m.found and len(m.found) <= gpuoom.MAX_LINE_KEPT
    first = m.found
    m.feed(REAL["CUDA out of memory"].encode())
    assert m.found == first
    m2 = gpuoom.Matcher()
    m2.feed("héllo \udcff".encode("utf-8", "surrogateescape") + b"\xff CUDA out of memory.")
    assert m2.found.endswith("CUDA out of memory.")


# --- the cgroup readers -------------------------------------------------------------------------------------

UNIT = "gpusched-job-7.scope"


def _v2(tmp_path, **files):
    scope = tmp_path / "unified" / "gpusched.slice" / UNIT
    (scope / "job").mkdir(parents=True)
    for name, text in files.items():
        (scope if not name.startswith("job_") else scope / "job").joinpath(name.removeprefix("job_")
                                                                           .replace("_", ".", 1)).write_text(text)
    own = {"": f"/gpusched.slice/{UNIT}"}
    mounts = [(str(tmp_path / "unified"), "cgroup2", "rw")]
    return cgroupusage.locate(UNIT, str(scope / "job"), own=own, mounts=mounts)


def test_v2_counts_oom_kills_cpu_time_of_the_job_cgroup_and_the_scopes_peak(tmp_path):
    places = _v2(tmp_path, memory_events="low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n",
                 memory_peak="4294967296\n", job_cpu_stat="usage_usec 2500000\nuser_usec 2000000\n",
                 cpu_stat="usage_usec 9999999\n")
    assert cgroupusage.oom_kills(places) == 2
    assert cgroupusage.cpu_seconds(places) == 2.5                     # the job's own cgroup, not the monitor's too
    assert cgroupusage.memory_peak(places) == 4 * G


def test_v2_without_the_files_reads_nothing_and_the_scopes_cpu_stat_stands_in(tmp_path):
    places = _v2(tmp_path, cpu_stat="usage_usec 1000\n")
    assert cgroupusage.oom_kills(places) is None and cgroupusage.memory_peak(places) is None
    assert cgroupusage.cpu_seconds(places) == 0.001


def test_v1_reads_oom_control_cpuacct_and_max_usage(tmp_path):
    mem = tmp_path / "memory" / "gpusched.slice" / UNIT
    cpu = tmp_path / "cpu,cpuacct" / "gpusched.slice" / UNIT
    mem.mkdir(parents=True)
    cpu.mkdir(parents=True)
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (mem / "memory.max_usage_in_bytes").write_text("123456789\n")
    (cpu / "cpuacct.usage").write_text("3000000000\n")
    own = {"memory": f"/gpusched.slice/{UNIT}", "cpu,cpuacct": f"/gpusched.slice/{UNIT}", "name=systemd": "/x"}
    mounts = [(str(tmp_path / "memory"), "cgroup", "rw,memory"),
              (str(tmp_path / "cpu,cpuacct"), "cgroup", "rw,cpu,cpuacct")]
    places = cgroupusage.locate(UNIT, None, own=own, mounts=mounts)
    assert cgroupusage.oom_kills(places) == 1
    assert cgroupusage.cpu_seconds(places) == 3.0
    assert cgroupusage.memory_peak(places) == 123456789


def test_a_cgroup_that_is_not_the_jobs_scope_is_never_read(tmp_path):
    (tmp_path / "memory.oom_control").write_text("oom_kill 5\n")
    (tmp_path / "cpuacct.usage").write_text("5\n")
    own = {"memory": "/", "cpuacct": "/", "": "/init.scope"}   # the box: controllers not delegated
    mounts = [(str(tmp_path), "cgroup", "rw,memory"), (str(tmp_path), "cgroup", "rw,cpuacct")]
    places = cgroupusage.locate(UNIT, None, own=own, mounts=mounts)
    assert places == cgroupusage.Places()
    assert cgroupusage.oom_kills(places) is None and cgroupusage.cpu_seconds(places) is None


def test_garbage_in_a_cgroup_file_reads_as_unknown(tmp_path):
    places = _v2(tmp_path, memory_events="oom_kill many\n", memory_peak="max\n", job_cpu_stat="usage_usec\n")
    assert cgroupusage.oom_kills(places) is None and cgroupusage.memory_peak(places) is None
    assert cgroupusage.cpu_seconds(places) is None


# --- on_gpu_oom in a job file -------------------------------------------------------------------------------

def parse(text: str) -> JobSpec:
    return jobfile.parse(text.encode(), "job.toml", owner_is_root=False)


@pytest.mark.parametrize("value", jobfile.ON_GPU_OOM)
def test_on_gpu_oom_takes_its_three_values(value):
    assert parse(f'command = "x"\nretries = 2\non_gpu_oom = "{value}"\n').on_gpu_oom == value
    assert parse('command = "x"\n').on_gpu_oom is None


@pytest.mark.parametrize("text, message", [
    ('on_gpu_oom = "retry-exclusiv"\nretries = 1', "job.toml:2: on_gpu_oom: 'retry-exclusiv': must be one of "
                                                  '"fail", "retry-exclusive", "retry-more-memory" (did you mean '
                                                  "'retry-exclusive'?)"),
    ('on_gpu_oom = true', "job.toml:2: on_gpu_oom: expected a string, got a boolean"),
    ('on_gpu_oom = "retry-more-memory"', "job.toml:2: on_gpu_oom: 'retry-more-memory' retries, but retries is 0"),
    ('retries = 2\ngpus = 0\non_gpu_oom = "retry-exclusive"', "job.toml:4: on_gpu_oom: 'retry-exclusive' is set "
                                                               "but the job asks for gpus = 0"),
])
def test_bad_on_gpu_oom_is_rejected_with_file_line_and_key(text, message):
    with pytest.raises(jobfile.JobFileError) as e:
        parse('command = "x"\n' + text + "\n")
    assert str(e.value).startswith(message), str(e.value)


def test_on_gpu_oom_fail_needs_no_retries():
    assert parse('command = "x"\non_gpu_oom = "fail"\n').on_gpu_oom == "fail"


# --- the record and the reason ------------------------------------------------------------------------------

def _running(s: JobSpec, gpus=(0,)) -> Job:
    job = lifecycle.accepted(5, s, "alice", 1000, 1000, "t.toml", EPOCH)
    lifecycle.starting(job, [Gpu(i, f"GPU-{i}", "A100", 80 * G, 80 * G) for i in gpus], "u", "l", EPOCH + 1)
    lifecycle.running(job)
    return job


def test_a_kernel_oom_is_its_own_outcome_with_the_limit_in_the_reason():
    job = _running(spec(limits=ResourceLimits(memory=4 * G)))
    lifecycle.ended(job, {"signal": "SIGKILL", "outcome": "oom", "ended": EPOCH + 9, "cpu_seconds": 7.5,
                          "memory_peak": 4 * G}, EPOCH + 9)
    assert job.state == State.FAILED and job.outcome == "oom" and job.signal == "SIGKILL"
    assert job.reason == "killed by the kernel: out of memory (limits.memory 4G)"
    assert job.history[-1]["kind"] == "oom" and job.history[-1]["cpu_seconds"] == 7.5
    assert job.cpu_seconds == 7.5 and job.memory_peak == 4 * G
    d = job_to_dict(job)
    assert d["outcome"] == "oom" and d["cpu_seconds"] == 7.5 and d["memory_peak"] == 4 * G
    # a job whose shell survived the kill of its child still says what happened
    other = _running(spec())
    lifecycle.ended(other, {"exit_code": 137, "outcome": "oom"}, EPOCH + 5)
    assert other.reason == "killed by the kernel: out of memory (exited with code 137)"


def test_a_gpu_oom_quotes_the_line_and_a_plain_failure_has_no_outcome():
    job = _running(spec())
    lifecycle.ended(job, {"exit_code": 1, "outcome": "gpu_oom", "gpu_oom": REAL["CUDA out of memory"]}, EPOCH + 5)
    assert job.outcome == "gpu_oom" and job.reason.startswith(
        "ran out of GPU memory (exited with code 1): 'torch.OutOfMemoryError: CUDA out of memory.")
    plain = _running(spec())
    lifecycle.ended(plain, {"exit_code": 1}, EPOCH + 5)
    assert plain.outcome == "" and plain.reason == "exited with code 1" and "outcome" not in job_to_dict(plain)


def test_a_job_gpusched_was_stopping_has_no_oom_outcome():
    job = _running(spec())
    lifecycle.stopping(job, "cancel", "cancelled by alice", EPOCH + 3)
    lifecycle.ended(job, {"signal": "SIGTERM", "outcome": "gpu_oom", "cpu_seconds": 1.0}, EPOCH + 5)
    assert job.state == State.CANCELLED and job.outcome == "" and "kind" not in job.history[-1]
    assert job.reason == "cancelled by alice; killed by SIGTERM"
    assert job.cpu_seconds == 1.0                                    # what it used still counts


def test_cpu_time_adds_up_over_attempts_and_the_peak_is_the_largest():
    job = _running(spec(retries=1))
    lifecycle.ended(job, {"exit_code": 1, "cpu_seconds": 2.0, "memory_peak": 300}, EPOCH + 5, EPOCH + 10)
    assert job.state == State.QUEUED and job.cpu_seconds == 2.0
    lifecycle.starting(job, [], "u", "l", EPOCH + 11)
    lifecycle.running(job)
    lifecycle.ended(job, {"exit_code": 0, "cpu_seconds": 1.5, "memory_peak": 200}, EPOCH + 20)
    assert job.cpu_seconds == 3.5 and job.memory_peak == 300
    assert [h.get("memory_peak") for h in job.history] == [300, 200]
    lifecycle.ended(_running(spec()), {"exit_code": 0, "cpu_seconds": "lots", "memory_peak": True}, EPOCH)


def test_old_records_load_and_new_fields_survive_the_round_trip():
    job = _running(spec())
    old = {k: v for k, v in job_to_dict(job).items()}
    for key in ("outcome", "retry_exclusive", "retry_gpu_memory", "cpu_seconds", "memory_peak"):
        assert key not in old
    loaded = job_from_dict(old, job.spec)
    assert loaded.outcome == "" and loaded.retry_gpu_memory is None and loaded.cpu_seconds is None
    job.outcome, job.retry_exclusive, job.retry_gpu_memory, job.cpu_seconds, job.memory_peak = \
        "gpu_oom", True, 32 * G, 1.25, 5000
    again = job_from_dict(job_to_dict(job), job.spec)
    assert (again.outcome, again.retry_exclusive, again.retry_gpu_memory, again.cpu_seconds, again.memory_peak) == \
        ("gpu_oom", True, 32 * G, 1.25, 5000)


# --- which failures are retried, and how ----------------------------------------------------------------------

GPU_OOM = {"exit_code": 1, "outcome": "gpu_oom"}


def test_retry_rules_for_a_gpu_oom():
    delay = dependencies.retry_delay
    fail = _running(spec(retries=3, on_gpu_oom="fail"))
    assert delay(fail, GPU_OOM, 10, 60) is None                        # a retry on the same terms would fail
    assert delay(fail, {"exit_code": 1}, 10, 60) == 10                 # other failures: retries as usual
    excl = _running(spec(retries=3, retry_on=(7,), on_gpu_oom="retry-exclusive"))
    assert delay(excl, GPU_OOM, 10, 60) == 10                          # whatever retry_on says
    assert delay(excl, {"exit_code": 1}, 10, 60) is None               # not a GPU OOM: retry_on applies
    excl.retried = 3
    assert delay(excl, GPU_OOM, 10, 60) is None                        # within the same count
    unset = _running(spec(retries=2, retry_on=(7,)))
    assert delay(unset, GPU_OOM, 10, 60) is None                       # unset: a failure like any other
    assert delay(_running(spec(retries=2)), GPU_OOM, 10, 60) == 10


def gpus_of(*sizes, name="A100"):
    return [Gpu(i, f"GPU-{i}", name, s * G, s * G) for i, s in enumerate(sizes)]


def test_more_memory_doubles_the_reservation_up_to_what_enough_gpus_have():
    more = dependencies.gpu_oom_retry
    job = _running(spec(gpu_memory=16 * G, retries=3, on_gpu_oom="retry-more-memory"))
    assert more(job, GPU_OOM, gpus_of(24, 24, 80, 80)) == {"retry_gpu_memory": 32 * G}
    job.retry_gpu_memory = 64 * G
    assert more(job, GPU_OOM, gpus_of(24, 24, 80, 80)) == {"retry_gpu_memory": 80 * G}
    two = _running(spec(gpus=2, gpu_memory=16 * G, retries=3, on_gpu_oom="retry-more-memory"), gpus=(0, 1))
    assert more(two, GPU_OOM, gpus_of(24, 24, 40, 80)) == {"retry_gpu_memory": 32 * G}   # 2 GPUs have 40G+
    two.retry_gpu_memory = 32 * G
    assert more(two, GPU_OOM, gpus_of(24, 24, 40, 80)) == {"retry_gpu_memory": 40 * G}
    typed = _running(spec(gpu_memory=16 * G, gpu_type="A100", retries=3, on_gpu_oom="retry-more-memory"))
    assert more(typed, GPU_OOM, gpus_of(24, 24) + [Gpu(9, "GPU-9", "H100", 80 * G, 80 * G)]) == \
        {"retry_gpu_memory": 24 * G}
    # without gpu_memory: twice the GPU it ran on, at most the largest
    bare = _running(spec(retries=3, on_gpu_oom="retry-more-memory"), gpus=(0,))
    assert more(bare, GPU_OOM, gpus_of(24, 24, 80)) == {"retry_gpu_memory": 48 * G}
    assert more(bare, GPU_OOM, None) == {}                             # nothing known to double
    job.retry_gpu_memory = (1 << 62)                                   # the GPUs unknown: never unbounded
    assert more(job, GPU_OOM, None) == {"retry_gpu_memory": 1 << 62}
    assert more(bare, {"exit_code": 1}, gpus_of(24)) == {}
    assert more(_running(spec(retries=1, on_gpu_oom="retry-exclusive")), GPU_OOM, None) == {"retry_exclusive": True}


def test_retry_exclusive_waits_for_a_gpu_nobody_shares():
    cfg = configmod.Config(retry_backoff=1.0)
    w = World(gpus=1, cfg=cfg, duration=lambda job: 10 if job.spec.name == "small" and job.attempt == 1 else 100,
              exit_code=lambda job: 1 if job.spec.name == "small" and job.attempt == 1 else 0,
              extra=lambda job: {"outcome": "gpu_oom", "gpu_oom": "CUDA out of memory"}
              if job.spec.name == "small" and job.attempt == 1 else {})
    small = w.submit(spec("small", share=True, gpu_memory=10 * G, retries=2, on_gpu_oom="retry-exclusive"))
    big = w.submit(spec("big", share=True, gpu_memory=20 * G))
    w.settle()
    assert small.state == big.state == State.RUNNING and small.gpus == big.gpus   # sharing GPU 0
    w.run_until(EPOCH + 11)
    assert small.state == State.QUEUED and small.retry_exclusive and small.outcome == "gpu_oom"
    assert "ran out of GPU memory" in small.reason and "retry 1 of 2 on a GPU of its own" in small.reason
    assert small.history[0]["kind"] == "gpu_oom" and small.history[0]["retried"] is True
    for _ in range(30):
        w.run_until(w.clock.time() + 1)
        w.engine.tick()
    assert small.state == State.QUEUED and big.state == State.RUNNING          # GPU 0 is shared: it waits
    assert not inputs.request(small).share
    w.run_until(EPOCH + 105)
    assert big.state == State.SUCCEEDED
    for _ in range(5):
        w.run_until(w.clock.time() + 1)
        w.engine.tick()
    assert small.state == State.RUNNING and small.attempt == 2
    late = w.submit(spec("late", share=True, gpu_memory=1 * G))
    w.settle()
    assert late.state == State.QUEUED                                           # nobody joins it now


def test_retry_more_memory_moves_to_a_bigger_gpu_and_keeps_it_across_a_restart():
    rec = MemoryRecorder()
    cfg = configmod.Config(retry_backoff=1.0)
    w = World(gpus=4, cfg=cfg, recorder=rec, duration=lambda job: 5, exit_code=lambda job: 1,
              extra=lambda job: {"outcome": "gpu_oom"})
    w.probe.gpus = gpus_of(24, 24, 80, 80)
    w.engine.probe_gpus()
    job = w.submit(spec(gpu_memory=16 * G, retries=2, on_gpu_oom="retry-more-memory"))
    w.settle()
    assert job.state == State.RUNNING and job.gpus[0].index in (0, 1)
    w.run_until(EPOCH + 6)
    assert job.state == State.QUEUED and job.retry_gpu_memory == 32 * G
    assert "with gpu_memory 32G (was 16G; on_gpu_oom)" in job.reason
    assert job_to_dict(job)["retry_gpu_memory"] == 32 * G
    again = World(gpus=4, cfg=cfg, recorder=rec)                      # the daemon restarts
    again.probe.gpus = gpus_of(24, 24, 80, 80)
    again.engine.probe_gpus()
    kept = again.engine.jobs[job.id]
    assert kept.retry_gpu_memory == 32 * G and inputs.request(kept).gpu_memory == 32 * G
    for _ in range(10):                                               # its backoff ends; a tick wakes a pass
        again.run_until(again.clock.time() + 1)
        again.engine.tick()
    assert kept.state == State.RUNNING and kept.gpus[0].index in (2, 3)    # only the 80G GPUs hold 32G


def test_a_gpu_oom_with_on_gpu_oom_fail_is_not_retried_but_says_why():
    w = World(gpus=1, duration=lambda job: 5, exit_code=lambda job: 1, extra=lambda job: {"outcome": "gpu_oom"})
    job = w.submit(spec(retries=3, on_gpu_oom="fail"))
    w.run_until(EPOCH + 6)
    assert job.state == State.FAILED and job.retried == 0 and job.outcome == "gpu_oom"
    assert job.reason == "ran out of GPU memory (exited with code 1)"
    assert job.retry_gpu_memory is None and not job.retry_exclusive


# --- the real monitor -----------------------------------------------------------------------------------------

DRIVER = r"""
import json, sys
from gpusched import cgroupusage, journal, monitor
spec = json.loads(sys.argv[1])
journal.send = lambda message, priority=6, **fields: True
counts = json.loads(sys.argv[2])
if counts is not None:           # the scope's memory.events as the kernel would move it: before, after the job
    cgroupusage.oom_kills = lambda places, _c=iter(counts): next(_c)
print(json.dumps(monitor.run(spec)))
"""


def monitor(tmp_path, code: str, oom_counts=None) -> dict:
    user, uid, gid = account()
    unit = f"gsmontest-{uuid.uuid4().hex[:8]}.scope"
    spec = {"id": 7, "attempt": 1, "name": "t", "unit": unit, "user": user, "uid": uid, "gid": gid,
            "workdir": "/", "argv": [sys.executable, "-c", code], "env": {"PATH": "/usr/bin:/bin"},
            "log": str(tmp_path / "7.log"), "result": str(tmp_path / "7.result"), "stop_signal": 15,
            "ident": "job-7"}
    p = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec), json.dumps(oom_counts)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    _remove_v1_freezer(unit)
    result = json.loads(p.stdout.splitlines()[-1])
    assert json.loads((tmp_path / "7.result").read_text()) == result
    return result


def test_the_monitor_records_a_gpu_oom_from_the_jobs_output(tmp_path):
    r = monitor(tmp_path, "import sys; print('step 1'); sys.stdout.write('torch.OutOfMemoryError: CUDA out of "
                          "memory. Tried to allocate 20.00 GiB'); sys.exit(1)")
    assert r["exit_code"] == 1 and r["outcome"] == "gpu_oom", r      # the last line had no newline
    assert r["gpu_oom"].startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert b"ran out of GPU memory (CUDA out of memory) and exited with code 1" in (tmp_path / "7.log").read_bytes()


def test_a_job_that_recovers_from_a_gpu_oom_or_fails_otherwise_has_no_outcome(tmp_path):
    ok = monitor(tmp_path, "print('CUDA out of memory; retrying with a smaller batch'); print('done')")
    assert ok["exit_code"] == 0 and "outcome" not in ok
    plain = monitor(tmp_path, "import sys; print('ValueError: bad input'); sys.exit(3)")
    assert plain["exit_code"] == 3 and "outcome" not in plain


def test_the_monitor_records_cpu_time_and_peak_memory(tmp_path):
    r = monitor(tmp_path, "import time\nx = bytearray(64 << 20)\nt = time.process_time()\n"
                          "while time.process_time() - t < 0.3: pass")
    assert r["cpu_seconds"] >= 0.25, r
    assert r["memory_peak"] >= 64 << 20, r


def test_a_kill_by_the_kernels_oom_killer_is_outcome_oom(tmp_path):
    # the kernel's count went up while the job ran (fake memory.events: the real one can't be shown here)
    r = monitor(tmp_path, "import os, signal; print('CUDA out of memory'); os.kill(os.getpid(), signal.SIGKILL)",
                oom_counts=[0, 1])
    assert r["signal"] == "SIGKILL" and r["outcome"] == "oom", r     # the kernel's verdict comes first
    survived = monitor(tmp_path, "print('fine')", oom_counts=[0, 1])
    assert "outcome" not in survived                                 # a kill it survived is no failure
    unchanged = monitor(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", oom_counts=[3, 3])
    assert unchanged["signal"] == "SIGKILL" and "outcome" not in unchanged


def test_the_oom_killer_is_steered_off_the_monitor_but_not_off_the_job(tmp_path):
    with open("/proc/self/oom_score_adj") as f:
        ours = f.read().strip()
    monitor(tmp_path, "print('job', open('/proc/self/oom_score_adj').read().strip()); import os\n"
                      "print('monitor', open(f'/proc/{os.getppid()}/oom_score_adj').read().strip())")
    log = (tmp_path / "7.log").read_text()
    assert f"job {ours}\n" in log, log
    can = subprocess.run([sys.executable, "-c", "with open('/proc/self/oom_score_adj', 'w') as f: f.write('-1000')"],
                         capture_output=True).returncode == 0          # root with CAP_SYS_RESOURCE
    assert ("monitor -1000\n" in log) == can, log
