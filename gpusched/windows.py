"""Time windows: when a job that names one may start, and when a class's boost applies. Pure.

A window is a daily span of the server's wall clock (`start` to `end`, "HH:MM") on some days of the week
(`days`, the day the window OPENS: a window from 22:00 to 07:00 on "fri" is open from Friday 22:00 to Saturday
07:00). `end` at or before `start` crosses midnight; `start == end` is a whole day from `start`. The time is
read on the wall clock of the zone given (None: the server's local time, as `date` shows it), so on the days the
clocks change a window still opens and closes at the times written: a start inside the hour skipped in spring
opens when the clock jumps past it, and an hour repeated in autumn is inside or outside the window both times.
Callers give the time (epoch seconds); nothing here reads a clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from typing import Iterable, Mapping

from gpusched.policy.classes import JobClass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    start: int                          # minutes after midnight, wall clock
    end: int
    days: frozenset[int] = ALL_DAYS     # weekdays it opens on, Monday = 0

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


def parse_time(text: object) -> int:
    """"HH:MM" (24-hour) -> minutes after midnight. Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected a time of day as \"HH:MM\", got {type(text).__name__}")
    m = _HHMM.fullmatch(text.strip())
    if not m:
        raise ValueError(f"expected a time of day as \"HH:MM\" (00:00 to 23:59), got {text[:40]!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_days(value: object) -> frozenset[int]:
    """["mon", "tue", ...] (any case; full names too) -> weekday numbers, Monday = 0. Raises ValueError."""
    if not isinstance(value, list) or not value:
        raise ValueError('expected a non-empty array of days ("mon" ... "sun")')
    if len(value) > 7 * 4:
        raise ValueError("more days than a week has")
    out = set()
    for v in value:
        day = v.strip().lower() if isinstance(v, str) else ""
        if day in DAYS:
            out.add(DAYS.index(day))
        elif day in _FULL:
            out.add(_FULL.index(day))
        else:
            raise ValueError(f"not a day of the week: {str(v)[:40]!r} (mon, tue, wed, thu, fri, sat, sun)")
    return frozenset(out)


_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _wall(t: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(t, tz) if tz is not None else datetime.fromtimestamp(t)


def is_open(w: Window, t: float, tz: tzinfo | None = None) -> bool:
    """Whether the window is open at epoch time t."""
    now = _wall(t, tz)
    minute = now.hour * 60 + now.minute
    day = now.weekday()
    if not w.crosses_midnight:
        return day in w.days and w.start <= minute < w.end
    return (day in w.days and minute >= w.start) or ((day - 1) % 7 in w.days and minute < w.end)


def _at(d: date, minute: int, tz: tzinfo | None) -> float:
    return datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=tz).timestamp()


def next_open(w: Window, t: float, tz: tzinfo | None = None) -> float:
    """The epoch time the window next opens after t (t itself when it is open at t)."""
    if is_open(w, t, tz):
        return t
    today = _wall(t, tz).date()
    for ahead in range(0, 8):
        d = today + timedelta(days=ahead)
        if d.weekday() in w.days:
            at = _at(d, w.start, tz)
            if at > t:
                return at
    raise AssertionError("a window with days opens within a week")   # parse_days refuses empty days


def next_close(w: Window, t: float, tz: tzinfo | None = None) -> float | None:
    """When the window, open at t, is next closed (None when it is not open at t; infinity when it never closes:
    24-hour spans on every day). Back-to-back openings (a whole day on Sunday and on Monday) count as one."""
    if not is_open(w, t, tz):
        return None
    for _ in range(8):
        now = _wall(t, tz)
        minute = now.hour * 60 + now.minute
        d = now.date()
        if w.crosses_midnight and minute >= w.start:
            d += timedelta(days=1)
        t = _at(d, w.end, tz)
        if not is_open(w, t, tz):
            return t
    return math.inf


def when(t: float, now: float, tz: tzinfo | None = None) -> str:
    """A time as a person reads it in a reason: "22:00 Mon" (with the date when it is a week or more away)."""
    wall = _wall(t, tz)
    text = f"{wall:%H:%M} {DAYS[wall.weekday()].capitalize()}"
    return text if t - now < 6.5 * 86400 else f"{text} {wall:%Y-%m-%d}"


def waiting_reason(name: str, w: Window | None, t: float, tz: tzinfo | None = None) -> tuple[str, float | None]:
    """Why a job that names window `name` waits at t, and when to look again: (reason, next opening), or
    ("", None) when the window is open. A window the config no longer has never opens."""
    if w is None:
        return (f"waits for window {name}, which is not in the config (any more): it starts only once an "
                f"administrator defines it again; cancel it, or hold it", None)
    at = next_open(w, t, tz)
    if at <= t:
        return "", None
    return f"waits for window {name} (opens {when(at, t, tz)})", at


def effective_classes(classes: Mapping[str, JobClass] | None, windows: Mapping[str, Window], t: float,
                      tz: tzinfo | None = None) -> Mapping[str, JobClass] | None:
    """The class table at time t: a class with a boost whose window is open has the boost's priority."""
    if not classes or not any(c.boost for c in classes.values()):
        return classes
    boosted = {name: replace(cls, priority=cls.boost[1]) for name, cls in classes.items()
               if cls.boost and (w := windows.get(cls.boost[0])) is not None and is_open(w, t, tz)}
    return {**classes, **boosted} if boosted else classes     # the same table when no boost applies


def names(windows: Iterable[Window]) -> frozenset[str]:
    return frozenset(w.name for w in windows)
