"""GPU out-of-memory detection on a real NVIDIA GPU: torch asks for more memory than the GPU has, and what it
prints must be recognised (gpusched/gpuoom.py), as text and through the real monitor (outcome gpu_oom).

Skipped, with the reason shown, where there is no NVIDIA driver or no torch. docs/gpu.md says where it ran.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpusched import gpuoom
from tests.gpu.test_nvidia import REASON

pytestmark = [pytest.mark.gpu] + ([pytest.mark.skip(reason=REASON)] if REASON else [])

# more than the whole GPU in one allocation: torch's caching allocator fails at once, whatever else is there
OOM = ("import torch\n"
       "total = torch.cuda.get_device_properties(0).total_memory\n"
       "x = torch.empty(2 * total, dtype=torch.uint8, device='cuda')\n")


def _torch_or_skip():
    return pytest.importorskip("torch", reason="torch is not installed")


def test_a_real_torch_cuda_oom_is_recognised():
    _torch_or_skip()
    p = subprocess.run([sys.executable, "-c", OOM], capture_output=True, text=True, timeout=300)
    assert p.returncode != 0, p
    lines = [line for line in (p.stdout + p.stderr).splitlines() if gpuoom.match(line)]
    assert lines, p.stderr[-2000:]
    assert gpuoom.match(lines[-1]) in ("CUDA out of memory", "torch.cuda.OutOfMemoryError"), lines


def test_a_real_torch_cuda_oom_through_the_monitor_is_outcome_gpu_oom(tmp_path):
    _torch_or_skip()
    from tests.test_outcomes import monitor
    r = monitor(tmp_path, "try:\n    import torch\nexcept ImportError:\n    raise SystemExit(99)\n" + OOM)
    if r.get("exit_code") == 99:
        pytest.skip("torch can't be imported as the job's user (nobody) with this Python")
    assert r.get("outcome") == "gpu_oom", r
    assert "out of memory" in r["gpu_oom"].lower(), r
