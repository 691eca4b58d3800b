"""The last hour of each GPU's utilisation and memory, for the web dashboard's sparklines: one point a minute
(the mean of that minute's samples), at most POINTS per GPU, in the daemon's memory only.

Fed from the engine's accounting samples (usage.py), which are taken only while jobs hold GPUs: a GPU nobody
holds has no point for that minute (shown as a gap, not as zero: unknown is not idle). Bounded whatever runs:
GPUs x POINTS small tuples.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

STEP = 60.0          # seconds per point
POINTS = 60          # an hour


class GpuHistory:
    def __init__(self, step: float = STEP, points: int = POINTS):
        self.step = step
        self.points = points
        self._rings: dict[int, deque[tuple[float, float | None, float | None]]] = {}
        self._open: dict[int, tuple[float, float, int, float, int]] = {}   # minute, util sum, n, mem sum, n

    def add(self, now: float, samples: Mapping[int, Any]) -> None:
        """One sample per GPU index (usage.GpuSample); a GPU's minute closes when a later minute's sample comes."""
        minute = now - now % self.step
        for index, s in samples.items():
            if s is None:
                continue
            cur = self._open.get(index)
            if cur is not None and cur[0] != minute:
                self._close(index, cur)
                cur = None
            m, us, un, ms, mn = cur or (minute, 0.0, 0, 0.0, 0)
            if s.utilization is not None:
                us, un = us + s.utilization, un + 1
            if s.memory_used is not None:
                ms, mn = ms + s.memory_used, mn + 1
            self._open[index] = (m, us, un, ms, mn)

    def _close(self, index: int, cur: tuple[float, float, int, float, int]) -> None:
        m, us, un, ms, mn = cur
        ring = self._rings.setdefault(index, deque(maxlen=self.points))
        ring.append((m, us / un if un else None, ms / mn if mn else None))

    def table(self, now: float) -> dict[int, list[list[Any]]]:
        """index -> [[minute start, mean utilisation %, mean memory used bytes], ...] within the last hour,
        the minute still open included."""
        out: dict[int, list[list[Any]]] = {}
        horizon = now - self.step * self.points
        for index in set(self._rings) | set(self._open):
            points = [list(p) for p in self._rings.get(index, ()) if p[0] >= horizon]
            cur = self._open.get(index)
            if cur is not None and cur[0] >= horizon:
                m, us, un, ms, mn = cur
                points.append([m, us / un if un else None, ms / mn if mn else None])
            out[index] = points
        return out
