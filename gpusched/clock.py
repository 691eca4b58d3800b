"""The time, as a seam: the engine asks a Clock, never the `time` module.

`monotonic()` paces and measures (intervals, deadlines); `time()` is the wall clock that records carry
(submitted, started, ended). The daemon gives the engine the system's clock; tests and the simulator give it
one they move by hand (gpusched.testing.FakeClock), so hours of scheduling take no time at all.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()
