"""Builders shared by the policy tests: GPUs, requests and holders with the time-aware fields."""

from gpusched.model import Gpu
from gpusched.policy import Holder, Request

G = 1 << 30
H = 3600.0
NOW = 1_000_000.0


def gpus(n, total=80 * G, name="NVIDIA A100-SXM4-80GB"):
    return [Gpu(index=i, uuid=f"GPU-{i}", name=name, memory_total=total, memory_free=total) for i in range(n)]


def req(id, gpus=1, *, uid=1000, limit=H, waited=0.0, priority=100, **kw):
    return Request(id, priority, gpus, uid=uid, submitted=NOW - waited, time_limit=limit, **kw)


def hold(id, on, *, uid=2000, limit=H, ran=0.0, waited=0.0, priority=100, **kw):
    return Holder(id, priority, tuple(on), uid=uid, submitted=NOW - ran - waited, started=NOW - ran,
                  time_limit=limit, **kw)
