"""Recognises a GPU out-of-memory failure in a job's output: the documented list of what CUDA libraries and the
frameworks print when GPU memory runs out. Pure.

The monitor shows it each line of the job's output (output.LineSplitter's lines, at most 16 KiB each) until
one matches; a job that then fails (non-zero exit or a signal) ends with outcome `gpu_oom`. The cost is
bounded per byte: one compiled alternation of fixed strings over each line, and nothing once a line matched.
docs/jobfile.md (`on_gpu_oom`) lists the same strings for users; tests/test_outcomes.py checks each against a
real message of its library.
"""

from __future__ import annotations

import re

# (what prints it, the fixed text looked for). Case as the libraries print it; a line holding any one matches.
PATTERNS: tuple[tuple[str, str], ...] = (
    ("PyTorch", "CUDA out of memory"),                       # torch.cuda.OutOfMemoryError: CUDA out of memory.
    ("PyTorch", "torch.cuda.OutOfMemoryError"),              # the exception's name, also when its text is cut
    ("PyTorch (ROCm)", "HIP out of memory"),
    ("CUDA runtime", "CUDA error: out of memory"),           # cudaErrorMemoryAllocation, as torch prints it
    ("CUDA runtime", "cudaErrorMemoryAllocation"),
    ("CUDA driver", "CUDA_ERROR_OUT_OF_MEMORY"),             # TensorFlow's and CuPy's driver-level failures
    ("cuBLAS", "CUBLAS_STATUS_ALLOC_FAILED"),
    ("cuDNN", "CUDNN_STATUS_ALLOC_FAILED"),
    ("cuSOLVER", "CUSOLVER_STATUS_ALLOC_FAILED"),
    ("cuSPARSE", "CUSPARSE_STATUS_ALLOC_FAILED"),
    ("cuFFT", "CUFFT_ALLOC_FAILED"),
    ("TensorFlow", "OOM when allocating"),                   # ResourceExhaustedError: OOM when allocating tensor
    ("JAX/XLA", "RESOURCE_EXHAUSTED: Out of memory"),        # XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory
    ("CuPy", "cuda.memory.OutOfMemoryError"),                # cupy.cuda.memory.OutOfMemoryError: Out of memory allocating
    ("NCCL", "NCCL WARN Cuda failure 'out of memory'"),
)
_RE = re.compile("|".join(re.escape(text) for _, text in PATTERNS).encode())
_WHO = {text.encode(): who for who, text in PATTERNS}
MAX_LINE_KEPT = 300            # characters of the matching line kept in the result and the reason


class Matcher:
    """Fed the job's output lines; `found` is the first GPU out-of-memory line seen (None until one is)."""

    __slots__ = ("found", "pattern", "library")

    def __init__(self) -> None:
        self.found: str | None = None
        self.pattern: str | None = None
        self.library: str | None = None

    def feed(self, line: bytes) -> None:
        if self.found is not None:
            return                                 # one is enough: nothing more is looked at
        m = _RE.search(line)
        if m is None:
            return
        self.pattern = m.group().decode()
        self.library = _WHO[m.group()]
        text = line.decode("utf-8", "replace").strip()
        start = max(0, min(m.start(), len(text)) - 40) if len(text) > MAX_LINE_KEPT else 0
        self.found = text[start:start + MAX_LINE_KEPT]


def match(text: str | bytes) -> str | None:
    """The pattern one line of output matches, or None (for tests and tools)."""
    m = _RE.search(text.encode() if isinstance(text, str) else text)
    return m.group().decode() if m else None
