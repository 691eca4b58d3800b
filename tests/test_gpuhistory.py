"""gpuhistory.py: a minute's mean per point, bounded to the last hour, gaps kept as gaps."""

from gpusched.gpuhistory import GpuHistory
from gpusched.usage import GpuSample


def test_points_are_minute_means_bounded_to_an_hour():
    h = GpuHistory()
    h.add(0.0, {0: GpuSample(10.0, 100), 1: None})
    h.add(30.0, {0: GpuSample(30.0, 300)})
    h.add(60.0, {0: GpuSample(None, 50)})
    assert h.table(61.0) == {0: [[0.0, 20.0, 200.0], [60.0, None, 50.0]]}
    for t in range(120, 10_000, 60):
        h.add(float(t), {0: GpuSample(50.0, 1)})
    points = h.table(10_000.0)[0]
    assert len(points) <= 61 and all(p[0] >= 10_000 - 3600 for p in points)
