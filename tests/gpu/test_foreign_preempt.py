"""foreign = "preempt" on a real NVIDIA GPU: a CUDA process started outside gpusched on GPU 0, seen by the real
NVML probe, stops the preemptible job the engine had placed there (the job itself is a fake: the engine's
decision is what is tested, on NVML's view of the GPU). Skipped, with the reason, where there is no GPU.
Needs what the GPU machine has (torch, nvidia-ml-py, pytest): python3 -m pytest -m gpu tests/gpu -v -rs.
"""

from __future__ import annotations

import time

import pytest

from tests.gpu.test_nvidia import REASON, cuda_process

pytestmark = [pytest.mark.gpu] + ([pytest.mark.skip(reason=REASON)] if REASON else [])


def test_a_cuda_process_outside_gpusched_preempts_the_job_on_its_gpu():
    pytest.importorskip("torch", reason="torch is not installed")
    from gpusched import config as configmod
    from gpusched.engine import Engine
    from gpusched.gpus import NvmlGpus
    from gpusched.jobfile import JobSpec
    from gpusched.model import State
    from gpusched.testing import FakeClock, FakeRunner, ListLog, MemoryRecorder

    clock, log = FakeClock(time.time()), ListLog()
    wakes = []
    cfg = configmod.parse('foreign = "preempt"\nforeign_grace = "2s"\n')
    engine = Engine(cfg, clock, MemoryRecorder(log), FakeRunner(clock), NvmlGpus(), lambda: wakes.append(1), log)
    engine.probe_gpus()
    job = engine.accept(1, JobSpec(command="x", name="train", gpus=1, gpu_ids=(0,)), "alice", 1000, 1000, "t.toml")
    engine.schedule()
    assert job.state == State.RUNNING and job.gpus[0].index == 0
    with cuda_process() as proc:
        deadline = time.monotonic() + 20
        while job.state == State.RUNNING and time.monotonic() < deadline:
            clock.advance(1)
            engine.probe_gpus()
            time.sleep(0.2)
        assert job.state in (State.STOPPING, State.QUEUED), job
        assert "GPU 0 is used outside gpusched by" in job.reason and f"pid {proc.pid}" in job.reason, job.reason
        print("preempted:", job.reason)
