"""Parsing of human sizes ("32G") and durations ("1d12h", "90m"): pure functions."""

from __future__ import annotations

import math
import re
import signal

# matched against the stripped value: adjacent \s* around optional groups backtrack quadratically
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([KMGTP]?)(i?B?)$", re.IGNORECASE)
MAX_TEXT = 64                  # a size or duration written longer than this is a mistake (or an attack)
_SIZE_MULT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)", re.IGNORECASE)
_DURATION_FULL = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:d|h|ms|m|s)\s*)+$", re.IGNORECASE)
_DURATION_MULT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_size(value: object) -> int:
    """Bytes from "32G", "512M", "1.5T" or a plain integer of bytes. Units are binary (G = GiB)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as \"32G\", got a boolean")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a size must be positive, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as \"32G\", got {type(value).__name__}")
    m = _SIZE_RE.match(value.strip()) if len(value) <= MAX_TEXT else None
    if not m:
        raise ValueError(f"not a size: {value[:MAX_TEXT]!r} (use a number with K, M, G or T, e.g. \"32G\")")
    number = float(m.group(1)) * _SIZE_MULT[m.group(2).upper()]
    if not math.isfinite(number):
        raise ValueError(f"size too large: {value!r}")
    if number < 1:
        raise ValueError(f"a size must be at least one byte, got {value!r}")
    return int(number)


def parse_duration(value: object) -> float:
    """Seconds from "90m", "2h", "1d12h", "45s" or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"2h\", got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration must be a finite, non-negative number, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as \"2h\", got {type(value).__name__}")
    if len(value) > MAX_TEXT or not _DURATION_FULL.match(value):
        raise ValueError(f"not a duration: {value[:MAX_TEXT]!r} (use e.g. \"90m\", \"2h\", \"1d12h\" or seconds)")
    total = sum(float(n) * _DURATION_MULT[u.lower()] for n, u in _DURATION_PART.findall(value))
    if not math.isfinite(total):
        raise ValueError(f"duration too long: {value!r}")
    return total


def parse_signal(value: object) -> signal.Signals:
    """A signal from "SIGTERM", "TERM", "sigusr1" or its number."""
    if isinstance(value, bool):
        raise ValueError("expected a signal name such as \"SIGTERM\"")
    if isinstance(value, int):
        try:
            sig = signal.Signals(value)
        except ValueError:
            raise ValueError(f"no such signal number: {value}") from None
    elif isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            sig = signal.Signals[name]
        except KeyError:
            raise ValueError(f"no such signal: {value!r}") from None
    else:
        raise ValueError(f"expected a signal name such as \"SIGTERM\", got {type(value).__name__}")
    if sig in (signal.SIGKILL, signal.SIGSTOP):
        # SIGKILL leaves no grace at all and SIGSTOP never ends the job; systemd sends SIGKILL itself after the grace
        raise ValueError(f"{sig.name} can't be a stop signal: the job would get no grace")
    return sig


def format_size(n: int) -> str:
    for unit in ("P", "T", "G", "M", "K"):
        mult = _SIZE_MULT[unit]
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    for unit in ("P", "T", "G", "M", "K"):
        if n >= _SIZE_MULT[unit]:
            return f"{n / _SIZE_MULT[unit]:.1f}{unit}"
    return str(n)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    parts = []
    for unit, mult in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= mult:
            parts.append(f"{seconds // mult}{unit}")
            seconds %= mult
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
