"""The daemon's configuration, /etc/gpusched/gpusched.toml. Every key has a default; no file at all is fine.

docs/config.md documents each key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

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
    simulated_gpus: tuple[SimulatedGpu, ...] = field(default_factory=tuple)


class ConfigError(Exception):
    pass


_TOP = {"spool_dir", "state_dir", "max_running", "preempt_margin", "gpu_poll_interval", "admin_group", "gpus"}


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
    for key in ("max_running", "preempt_margin"):
        if key in doc:
            if not isinstance(doc[key], int) or isinstance(doc[key], bool) or doc[key] < 0:
                raise err(key, "expected a non-negative integer")
            kw[key] = doc[key]
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


def load(path: str = DEFAULT_PATH) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read(), path)
    except FileNotFoundError:
        return Config()
