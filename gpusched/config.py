"""The daemon's configuration, /etc/gpusched/gpusched.toml. Every key has a default; no file at all is fine.

docs/config.md documents each key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from gpusched import jobfile
from gpusched.jobfile import key_lines
from gpusched.units import parse_duration, parse_size

DEFAULT_PATH = "/etc/gpusched/gpusched.toml"


@dataclass(frozen=True)
class SimulatedGpu:
    name: str
    memory: int


@dataclass(frozen=True)
class Config:
    spool_dir: str = "/var/spool/gpusched"
    state_dir: str = "/var/lib/gpusched"
    max_running: int = 0                 # 0: no cap beyond the GPUs themselves
    preempt_margin: int = 10             # how much more urgent (lower priority number) a job must be to preempt
    gpu_poll_interval: float = 1.0       # seconds between NVML probes
    admin_group: str = ""                # members may act on every job, as root may
    # Limits on what a user's job file may ask for (issue 7): urgency is granted, not claimed
    min_user_priority: int | None = None  # most urgent priority a non-admin file may set; None: the default (100)
    max_grace: float = 600.0             # seconds a job may keep its GPUs after a stop signal
    max_time_limit: float = 0.0          # seconds; 0: no cap
    # Disk: one user's output must never stop another's job from being recorded
    max_log_size: int = 1 << 30          # bytes per job log; the head and the tail are kept
    # logging stops before the state filesystem has less free than this: bytes, or a percentage of its size;
    # neither (the default): the smaller of 1 GiB and 5%
    log_min_free: int = 0
    log_min_free_percent: float = 0.0
    keep_finished: float = 30 * 86400.0  # seconds a finished job's files are kept; 0: for ever
    keep_rejected: float = 86400.0       # seconds a rejected entry's record and kept file are kept; 0: for ever
    max_rejected_per_user: int = 100     # rejected entries with a record, per user, kept at once; 0: no cap
    # Per-user caps: one user's load must not crowd out the others
    max_running_per_user: int = 0        # jobs running at once; 0: no cap
    max_cpu_jobs_per_user: int = -1      # CPU-only (gpus = 0) jobs running at once; -1: the number of CPUs; 0: no cap
    max_queued_per_user: int = 10000     # jobs waiting at once (over it: rejected); 0: no cap; root is exempt
    simulated_gpus: tuple[SimulatedGpu, ...] = field(default_factory=tuple)

    def job_limits(self) -> jobfile.Limits:
        """What a job file may ask for on this server (jobfile.parse checks it)."""
        floor = jobfile.DEFAULT_PRIORITY if self.min_user_priority is None else self.min_user_priority
        return jobfile.Limits(min_priority=floor, max_grace=self.max_grace, max_time_limit=self.max_time_limit)


class ConfigError(Exception):
    pass


_INTS = ("max_running", "preempt_margin", "max_running_per_user", "max_queued_per_user", "max_rejected_per_user")
_DURATIONS = ("max_grace", "max_time_limit", "keep_finished", "keep_rejected")
_SIZES = ("max_log_size",)
_TOP = {"spool_dir", "state_dir", "gpu_poll_interval", "admin_group", "gpus", "min_user_priority", "log_min_free",
        "max_cpu_jobs_per_user", *_INTS, *_DURATIONS, *_SIZES}


def parse(text: str, filename: str = DEFAULT_PATH) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{filename}: invalid TOML: {e}") from None
    lines = key_lines(text)

    def err(key: str, message: str) -> ConfigError:
        line = lines.get(key)
        return ConfigError(f"{filename}:{line}: {key}: {message}" if line else f"{filename}: {key}: {message}")

    for key in doc:
        if key not in _TOP:
            raise err(key, "unknown key")
    kw: dict = {}
    for key in ("spool_dir", "state_dir", "admin_group"):
        if key in doc:
            if not isinstance(doc[key], str):
                raise err(key, "expected a string")
            if key != "admin_group" and not doc[key].startswith("/"):
                raise err(key, "must be an absolute path")
            kw[key] = doc[key]
    for key in _INTS:
        if key in doc:
            if not isinstance(doc[key], int) or isinstance(doc[key], bool) or not 0 <= doc[key] < 1 << 31:
                raise err(key, "expected a non-negative integer")
            kw[key] = doc[key]
    if "min_user_priority" in doc:
        v = doc["min_user_priority"]
        if not isinstance(v, int) or isinstance(v, bool) or not -(1 << 31) <= v < 1 << 31:
            raise err("min_user_priority", "expected an integer")
        kw["min_user_priority"] = v
    if "max_cpu_jobs_per_user" in doc:
        v = doc["max_cpu_jobs_per_user"]
        if not isinstance(v, int) or isinstance(v, bool) or not -1 <= v < 1 << 31:
            raise err("max_cpu_jobs_per_user", "expected an integer ≥ -1 (-1: the number of CPUs, 0: no cap)")
        kw["max_cpu_jobs_per_user"] = v
    for key in _DURATIONS:
        if key in doc:
            try:
                kw[key] = parse_duration(doc[key])
            except ValueError as e:
                raise err(key, str(e)) from None
    if "log_min_free" in doc:
        v = doc["log_min_free"]
        if isinstance(v, str) and v.strip().endswith("%"):
            try:
                pct = float(v.strip()[:-1])
            except ValueError:
                pct = -1.0
            if not 0 < pct < 100:
                raise err("log_min_free", f"a percentage must be between 0 and 100, got {v!r}")
            kw["log_min_free_percent"] = pct
        else:
            try:
                kw["log_min_free"] = 0 if v in (0, "0") else parse_size(v)
            except ValueError as e:
                raise err("log_min_free", str(e)) from None
            if kw["log_min_free"] == 0:
                kw["log_min_free_percent"] = -1.0       # "0": no floor at all
    for key in _SIZES:
        if key in doc:
            try:
                kw[key] = 0 if doc[key] in (0, "0") else parse_size(doc[key])   # 0: no cap / no floor
            except ValueError as e:
                raise err(key, str(e)) from None
    if "gpu_poll_interval" in doc:
        try:
            kw["gpu_poll_interval"] = max(0.1, parse_duration(doc["gpu_poll_interval"]))
        except ValueError as e:
            raise err("gpu_poll_interval", str(e)) from None
    gpus = doc.get("gpus", {})
    if not isinstance(gpus, dict):
        raise err("gpus", "expected a table")
    for key in gpus:
        if key != "simulated":
            raise err(f"gpus.{key}", "unknown key")
    sims = []
    for i, g in enumerate(gpus.get("simulated", [])):
        if not isinstance(g, dict):
            raise err("gpus.simulated", f"entry {i}: expected a table")
        for key in sorted(set(g) - {"name", "memory"}):
            raise err(key, f"[[gpus.simulated]] entry {i}: unknown key {key!r} (only 'name' and 'memory')")
        name = g.get("name", "Simulated GPU")
        if not isinstance(name, str):
            raise err("gpus.simulated", f"entry {i}: name must be a string")
        try:
            memory = parse_size(g.get("memory", "80G"))
        except ValueError as e:
            raise err("gpus.simulated", f"entry {i}: {e}") from None
        sims.append(SimulatedGpu(name, memory))
    kw["simulated_gpus"] = tuple(sims)
    return Config(**kw)


def cpu_job_cap(cfg: Config) -> int:
    """max_cpu_jobs_per_user resolved: -1 means the number of CPUs; 0 means no cap."""
    return (os.cpu_count() or 1) if cfg.max_cpu_jobs_per_user < 0 else cfg.max_cpu_jobs_per_user


def log_floor(cfg: Config, fs_size: int) -> int:
    """log_min_free in bytes for a filesystem of fs_size bytes."""
    if cfg.log_min_free_percent < 0:
        return 0
    if cfg.log_min_free_percent:
        return int(fs_size * cfg.log_min_free_percent / 100)
    if cfg.log_min_free:
        return cfg.log_min_free
    return min(1 << 30, fs_size // 20)


def load(path: str = DEFAULT_PATH) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read(), path)
    except FileNotFoundError:
        return Config()
