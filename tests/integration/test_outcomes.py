"""Issue 9's out-of-memory recovery in the real service (the systemd box), as users see it: a job that prints a
GPU out-of-memory message ends `gpu_oom` and is retried as its on_gpu_oom says (more GPU memory, a GPU of its
own), a job that doesn't print it fails plainly, and every job's CPU time is recorded. A kernel OOM kill
needs memory.max enforced, which the box's cgroup v1 host can't do: that test skips here, saying why."""

from __future__ import annotations

import json
import time

import pytest

OOM_LINE = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"


def _first_then_ok(counter: str) -> str:
    """A command that prints the GPU out-of-memory line and fails on its first attempt, then succeeds."""
    return (f'command = "n=$(cat ~/{counter} 2>/dev/null || echo 0); echo $((n+1)) > ~/{counter}; '
            f'if [ $n -eq 0 ]; then echo step 1; echo \'{OOM_LINE}\' >&2; exit 1; fi; '
            f'echo attempt $GPUSCHED_ATTEMPT ok; sleep 2"\n')


def _wait_for(gs, job: int, check, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        try:
            st = gs.status(job)
        except Exception:  # noqa: BLE001 - not written yet
            st = {}
        if st and check(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"job {job}: condition not met after {timeout}s: {st}")


def test_a_gpu_oom_is_retried_with_more_gpu_memory_shown_in_show_and_json(gs):
    with gs.configured('retry_backoff = "4s"'):
        gs.sh("rm -f /home/alice/oom1", user="alice")
        job = gs.submit("alice", _first_then_ok("oom1") + 'gpus = 1\ngpu_memory = "10G"\nretries = 2\n'
                                                          'on_gpu_oom = "retry-more-memory"\n')
        # between the attempts: queued, its reason says what happened and what the retry asks for
        st = _wait_for(gs, job, lambda s: s.get("retried") == 1 and s["state"] == "queued")
        assert st["outcome"] == "gpu_oom" and st["retry_gpu_memory"] == 20 << 30, st
        assert "ran out of GPU memory (exited with code 1)" in st["reason"], st
        assert "retry 1 of 2 with gpu_memory 20G (was 10G; on_gpu_oom)" in st["reason"], st
        shown = gs.sh(f"gpuschedctl show {job}", user="alice").stdout
        assert "retry_gpu_memory: 20G" in shown and "outcome: gpu_oom" in shown, shown
        deadline = time.monotonic() + 3                 # the listing files follow within their pacing
        while True:
            row = next(line for line in gs.sh("gpuschedctl list", user="bob").stdout.splitlines()
                       if line.startswith(f"{job} "))
            if "gpu_oom" in row or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "gpu_oom" in row, row
        st = gs.wait(job, "succeeded", timeout=60)
        assert st["attempt"] == 2 and st["retried"] == 1 and st["retry_gpu_memory"] == 20 << 30, st
        assert st["history"][0]["kind"] == "gpu_oom" and st["history"][0]["retried"] is True, st
        assert "outcome" not in st, st                      # the last attempt's: it succeeded
        js = json.loads(gs.sh(f"gpuschedctl show --json {job}", user="alice").stdout)["job"]
        assert js["retry_gpu_memory"] == 20 << 30 and js["history"][0]["kind"] == "gpu_oom", js
        journal = gs.journal(f"GPUSCHED_JOB_ID={job}")
        assert OOM_LINE in journal and "ran out of GPU memory (CUDA out of memory) and exited with code 1" in journal


def test_retry_exclusive_moves_off_a_shared_gpu(gs):
    with gs.configured('retry_backoff = "1s"'):
        gs.sh("rm -f /home/alice/oom2", user="alice")
        sharer = gs.submit("bob", 'command = "sleep 60"\ngpus = 1\nshare = true\ngpu_memory = "8G"\ngrace = "1s"\n')
        shared_gpu = gs.wait(sharer, "running", timeout=30)["gpus"][0]["index"]
        job = gs.submit("alice", _first_then_ok("oom2") + 'gpus = 1\nshare = true\ngpu_memory = "8G"\nretries = 1\n'
                                                          'on_gpu_oom = "retry-exclusive"\n')
        st = gs.wait(job, "succeeded", timeout=60)
        assert st["retry_exclusive"] is True and st["attempt"] == 2, st
        first, second = st["history"][0], st["history"][1]
        assert first["gpus"] == [shared_gpu], (st, shared_gpu)     # best fit: it joined bob's GPU
        assert second["gpus"] != [shared_gpu], (st, shared_gpu)    # then a GPU of its own
        assert first["kind"] == "gpu_oom" and "on a GPU of its own" in gs.journal(
            "-t", "gpusched", f"GPUSCHED_JOB_ID={job}")
        gs.sh(f"gpuschedctl cancel --now {sharer}", user="bob")


def test_on_gpu_oom_fail_and_a_plain_failure_and_cpu_time(gs):
    oom = gs.submit("alice", f'command = "echo \'{OOM_LINE}\'; exit 1"\ngpus = 1\nretries = 2\non_gpu_oom = "fail"\n')
    plain = gs.submit("alice", 'command = "echo ValueError: no such file; exit 1"\ngpus = 1\n')
    busy = gs.submit("alice", "command = [\"python3\", \"-c\", \"import time\\nt = time.process_time()\\n"
                              "while time.process_time() - t < 0.5: pass\"]\ngpus = 0\n")
    st = gs.wait(oom, "failed", timeout=30)
    assert st["outcome"] == "gpu_oom" and st["attempt"] == 1 and "retried" not in st, st   # never retried
    assert st["reason"].startswith("ran out of GPU memory (exited with code 1): "), st
    st = gs.wait(plain, "failed", timeout=30)
    assert "outcome" not in st and st["reason"] == "exited with code 1", st
    listed = {j["id"]: j for j in json.loads(gs.sh("gpuschedctl list --all --json", user="alice").stdout)["jobs"]}
    assert listed[oom]["outcome"] == "gpu_oom" and "outcome" not in listed[plain]
    st = gs.wait(busy, "succeeded", timeout=30)
    assert st["cpu_seconds"] >= 0.4 and st["history"][0]["cpu_seconds"] == st["cpu_seconds"], st
    assert st["memory_peak"] > 0, st


def _memory_max_enforced(gs) -> str | None:
    """Why a kernel OOM kill can't be shown in this box, or None."""
    out = gs.sh("cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null; stat -fc %T /sys/fs/cgroup", check=False).stdout
    if "cgroup2fs" not in out or "memory" not in out.split():
        return ("memory.max is not enforced here: the box's host has cgroup v1 controllers, read-only inside "
                "(issue 10's cgroup v2 VM runs this test)")
    return None


def test_a_job_over_limits_memory_ends_oom(gs):
    why = _memory_max_enforced(gs)
    if why:
        pytest.skip(why)
    job = gs.submit("alice", 'command = ["python3", "-c", "x = []\\nwhile True: x.append(bytearray(16 << 20))"]\n'
                             'gpus = 0\n[limits]\nmemory = "64M"\n')
    st = gs.wait(job, "failed", timeout=60)
    assert st["outcome"] == "oom" and st["signal"] == "SIGKILL", st
    assert st["reason"] == "killed by the kernel: out of memory (limits.memory 64M)", st
    assert st["memory_peak"] <= 80 << 20, st
