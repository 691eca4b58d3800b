"""GPU paths on a real NVIDIA GPU: NVML inventory, foreign-process detection, CUDA_VISIBLE_DEVICES by UUID.

Skipped, with the reason shown, where there is no NVIDIA driver. Needs only what the GPU machine has:
Python 3.12, torch, nvidia-ml-py, pytest (run: python3 -m pytest -m gpu tests/gpu -v -rs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from typing import Iterator

import pytest

pytestmark = pytest.mark.gpu


def _why_no_gpu() -> str | None:
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001
        return f"no NVIDIA driver/GPU here (NVML: {e})"
    if not shutil.which("nvidia-smi"):
        return "nvidia-smi not found"
    return None


REASON = _why_no_gpu()
if REASON:
    pytestmark = [pytest.mark.gpu, pytest.mark.skip(reason=REASON)]


def _torch_or_skip():
    return pytest.importorskip("torch", reason="torch is not installed")


def test_nvml_inventory_matches_nvidia_smi():
    from gpusched.gpus import NvmlGpus
    gpus = NvmlGpus().probe()
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()]
    assert len(gpus) == len(rows) > 0
    for g, (index, uuid, name, mem_mib) in zip(gpus, rows):
        assert g.index == int(index)
        assert g.uuid == uuid
        assert g.name == name
        assert abs(g.memory_total / 2**20 - int(mem_mib)) <= 1
        assert g.minor is not None and os.path.exists(f"/dev/nvidia{g.minor}")
    print("NVML inventory:", [(g.index, g.uuid, g.name, g.memory_total) for g in gpus])


@contextlib.contextmanager
def cuda_process() -> Iterator[subprocess.Popen]:
    """A CUDA process started outside gpusched, holding GPU 0 (torch) until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c",
                             "import torch, time; x = torch.ones(1 << 20, device='cuda:0'); "
                             "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_cuda_process_started_outside_gpusched_is_foreign():
    _torch_or_skip()
    from gpusched.gpus import NvmlGpus
    probe = NvmlGpus()
    with cuda_process() as proc:
        deadline = time.monotonic() + 20
        seen = ()
        while time.monotonic() < deadline:
            seen = probe.probe()[0].foreign_pids
            if proc.pid in seen:
                break
            time.sleep(0.2)
        assert proc.pid in seen, f"pid {proc.pid} not among foreign pids {seen}"
        print(f"foreign CUDA process {proc.pid} seen on GPU 0: {seen}")


def _visible(env_value: str) -> tuple[int, list[str]]:
    code = ("import torch; n = torch.cuda.device_count(); "
            "print(n); [print('GPU-' + str(torch.cuda.get_device_properties(i).uuid)) for i in range(n)]")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=env_value, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.split()
    return int(lines[0]), lines[1:]


def test_cuda_visible_devices_by_uuid_gives_exactly_that_gpu():
    _torch_or_skip()
    from gpusched import launch
    from gpusched.gpus import NvmlGpus
    from gpusched.jobfile import JobSpec
    gpus = NvmlGpus().probe()
    target = gpus[-1]
    acct = launch.Account("nobody", 65534, 65534, "/", "/bin/sh")
    env = launch.environment(1, 1, JobSpec(command="true", name="t"), acct, [target], "/dev/null")
    assert env["CUDA_VISIBLE_DEVICES"] == target.uuid
    n, uuids = _visible(env["CUDA_VISIBLE_DEVICES"])
    assert n == 1 and uuids == [target.uuid]
    # a CPU-only job gets an empty CUDA_VISIBLE_DEVICES: no GPU at all
    cpu_env = launch.environment(1, 1, JobSpec(command="true", name="t", gpus=0), acct, [], "/dev/null")
    assert _visible(cpu_env["CUDA_VISIBLE_DEVICES"]) == (0, [])
    print(f"CUDA_VISIBLE_DEVICES={target.uuid} -> torch sees {uuids}")
