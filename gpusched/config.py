"""The daemon's configuration, /etc/gpusched/gpusched.toml. Every key has a default; no file at all is fine.

docs/config.md documents each key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Collection, Iterator

from gpusched import jobfile
from gpusched.jobfile import key_lines
from gpusched.policy.classes import DEFAULT as DEFAULT_CLASS
from gpusched.policy.classes import JobClass, allowed
from gpusched.units import parse_duration, parse_size
from gpusched.windows import ALL_DAYS, Window, parse_days, parse_time

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
    # Retries (a job file's `retries`): the wait before retry n is retry_backoff * 2^(n-1), at most the max
    retry_backoff: float = 10.0
    retry_backoff_max: float = 3600.0
    # Per-user caps: one user's load must not crowd out the others
    max_running_per_user: int = 0        # jobs running at once; 0: no cap
    max_cpu_jobs_per_user: int = -1      # CPU-only (gpus = 0) jobs running at once; -1: the number of CPUs; 0: no cap
    max_queued_per_user: int = 10000     # jobs waiting at once (over it: rejected); 0: no cap; root is exempt
    max_array_size: int = 1000           # jobs one job file's [sweep] may make (1 to jobfile.MAX_ARRAY_SIZE)
    simulated_gpus: tuple[SimulatedGpu, ...] = field(default_factory=tuple)
    # Scheduling policy (docs/policy.md)
    backfill: bool = True                # EASY backfill; false: strict order (nothing passes a job that waits)
    aging: float = 2.0                   # a job that has waited this many times its time limit is overdue; 0: never
    fair_share_half_life: float = 7 * 86400.0   # seconds; 0: usage never decays
    default_share: float = 1.0
    shares: tuple[tuple[str, float], ...] = ()          # user name -> share
    share_groups: tuple[tuple[str, float], ...] = ()    # Unix group -> share (its members share it)
    classes: tuple[JobClass, ...] = ()
    default_class: str = DEFAULT_CLASS   # the class of a job file that names none (when there are classes)
    # issue 9: time windows ([windows.NAME]: a job's `window`, a class's boost) and GPUs used outside gpusched
    windows: tuple[Window, ...] = ()
    foreign: str = "wait"                # "wait": a job on such a GPU keeps it; "preempt": a preemptible one yields
    foreign_grace: float = 10.0          # seconds a foreign process must stay before a job is stopped for it
    # issue 9, warnings and hooks (docs/config.md): the longest a preemption waits after a job's warn_signal;
    # [hooks]: a command run after every job's final end as hook_user; every hook's run time cap
    max_warn_before: float = 300.0
    hook_on_finish: str = ""
    hook_user: str = "nobody"
    hook_timeout: float = 60.0
    # Idle reservations (issue 9, usage.py): a running job whose GPUs all stay at or under idle_threshold
    # percent utilisation for idle_after seconds is flagged ("flag") or also stopped ("stop"); 0: off
    idle_after: float = 0.0
    idle_action: str = "flag"
    idle_threshold: float = 5.0
    # issue 12, the web dashboard ([web], docs/web.md): its system user (the only one the daemon acts for on
    # behalf of others), its port and the addresses it listens on; beyond loopback, its TLS certificate and
    # key (gpusched-web refuses to start without them there) and the host names it answers to there
    web_user: str = "gpusched-web"
    web_port: int = 8765
    web_listen: tuple[str, ...] = ("127.0.0.1", "::1")
    web_tls_cert: str = ""
    web_tls_key: str = ""
    web_names: tuple[str, ...] = ()

    def web_far(self) -> tuple[str, ...]:
        """The [web] listen addresses beyond loopback (the unspecified 0.0.0.0 and :: too): where a person
        must sign in with a password, over TLS (docs/web.md)."""
        return tuple(a for a in self.web_listen if not ipaddress.ip_address(a).is_loopback)

    def job_limits(self, user: str | None = None, groups: Collection[str] = ()) -> jobfile.Limits:
        """What a job file may ask for on this server (jobfile.parse checks it); user and groups: its owner's,
        which decide the classes it may ask for (without them, only the classes open to everyone)."""
        floor = jobfile.DEFAULT_PRIORITY if self.min_user_priority is None else self.min_user_priority
        classes = self.class_map()
        return jobfile.Limits(min_priority=floor, max_grace=self.max_grace, max_time_limit=self.max_time_limit,
                              classes={c.name: c.max_time_limit for c in self.classes} if classes else None,
                              default_class=self.default_class if classes else None,
                              allowed_classes=allowed(classes, user or "", groups) if classes else frozenset(),
                              windows=frozenset(w.name for w in self.windows),
                              max_array_size=self.max_array_size)

    def class_map(self) -> dict[str, JobClass]:
        return {c.name: c for c in self.classes}

    def window_map(self) -> dict[str, Window]:
        return {w.name: w for w in self.windows}


class ConfigError(Exception):
    pass


_INTS = ("max_running", "preempt_margin", "max_running_per_user", "max_queued_per_user", "max_rejected_per_user")
_DURATIONS = ("max_grace", "max_time_limit", "keep_finished", "keep_rejected", "retry_backoff", "retry_backoff_max",
              "max_warn_before")
_SIZES = ("max_log_size",)
_TOP = {"spool_dir", "state_dir", "gpu_poll_interval", "admin_group", "gpus", "min_user_priority", "log_min_free",
        "max_cpu_jobs_per_user", "backfill", "aging", "fair_share", "classes", "default_class",
        "windows", "foreign", "foreign_grace",
        "idle_after", "idle_action", "idle_threshold", "max_array_size",
        *_INTS, *_DURATIONS, *_SIZES}
_TOP |= {"hooks", "web"}
_WEB = {"user", "port", "listen", "tls_cert", "tls_key", "names"}
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", re.I)
_HOOKS = {"on_finish", "user", "timeout"}
_FAIR_SHARE = {"half_life", "default_share", "users", "groups"}
_CLASS_KEYS = {"priority", "users", "groups", "max_gpus_per_user", "max_time_limit", "default_time_limit",
               "preempts", "boost"}
_WINDOW_KEYS = {"start", "end", "days"}
_FOREIGN = ("wait", "preempt")


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
    if "max_array_size" in doc:
        v = doc["max_array_size"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= jobfile.MAX_ARRAY_SIZE:
            raise err("max_array_size", f"expected an integer from 1 to {jobfile.MAX_ARRAY_SIZE}")
        kw["max_array_size"] = v
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
    _windows(doc, kw, err)
    _policy(doc, kw, err)
    _hooks(doc, kw, err)
    _idle(doc, kw, err)
    _web(doc, kw, err)
    return Config(**kw)


def _web(doc: dict[str, Any], kw: dict[str, Any], err: Any) -> None:
    """[web]: user (the dashboard's system user), port, listen (IP addresses), tls_cert and tls_key (absolute
    paths, both or neither), names (host names it answers to beyond loopback). A listen address beyond
    loopback without TLS is refused by gpusched-web when it starts (web/__main__.py), not here: the daemon
    must not fail for the dashboard's sake."""
    web = doc.get("web", {})
    if not isinstance(web, dict):
        raise err("web", "expected a table ([web])")
    for key in web:
        if key not in _WEB:
            raise err(f"web.{key}", "unknown key (user, port, listen, tls_cert, tls_key, names)")
    if "user" in web:
        v = web["user"]
        if not isinstance(v, str) or not jobfile._USER_NAME.fullmatch(v) or len(v) > 32 or v == "root":
            raise err("web.user", "expected a user name (not root)")
        kw["web_user"] = v
    if "port" in web:
        v = web["port"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
            raise err("web.port", "expected a port number (1 to 65535)")
        kw["web_port"] = v
    if "listen" in web:
        v = web["listen"]
        if not isinstance(v, list) or not v or len(v) > 16:
            raise err("web.listen", "expected a list of IP addresses")
        out = []
        for a in v:
            try:
                out.append(str(ipaddress.ip_address(a)))
            except (ValueError, TypeError):
                raise err("web.listen", f"{str(a)[:60]!r} is not an IP address") from None
        kw["web_listen"] = tuple(out)
    for key in ("tls_cert", "tls_key"):
        if key in web:
            v = web[key]
            if not isinstance(v, str) or not v.startswith("/") or "\0" in v or len(v) > 4096:
                raise err(f"web.{key}", "expected an absolute path")
            kw[f"web_{key}"] = v
    if ("tls_cert" in web) != ("tls_key" in web):
        raise err("web.tls_cert" if "tls_cert" not in web else "web.tls_key",
                  "tls_cert and tls_key go together (the certificate and its private key)")
    if "names" in web:
        v = web["names"]
        if not isinstance(v, list) or len(v) > 16 or not all(isinstance(n, str) and _HOST_NAME.fullmatch(n)
                                                             for n in v):
            raise err("web.names", "expected a list of host names (at most 16)")
        kw["web_names"] = tuple(n.lower() for n in v)


def _named_tables(doc: dict[str, Any], section: str, what: str, keys: Collection[str], err: Any, not_table: str,
                  unknown: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """[SECTION.NAME] tables (classes, windows): each (name, "SECTION.NAME", table), the name checked as
    jobfile.CLASS_NAME, the table's keys among `keys`; `not_table`, `unknown`: the errors' texts."""
    tables = doc.get(section, {})
    if not isinstance(tables, dict):
        raise err(section, f"expected tables ([{section}.NAME])")
    for name, t in tables.items():
        where = f"{section}.{name}"
        if not jobfile.CLASS_NAME.fullmatch(name) or len(name) > jobfile.MAX_CLASS:
            raise err(where, f"a {what} name is letters, digits, '_', '.', '-'")
        if not isinstance(t, dict):
            raise err(where, not_table)
        for key in t:
            if key not in keys:
                raise err(f"{where}.{key}", unknown)
        yield name, where, t


def _windows(doc: dict[str, Any], kw: dict[str, Any], err: Any) -> None:
    """[windows.NAME] (start, end, days), foreign and foreign_grace (issue 9; docs/config.md)."""
    built = []
    for name, where, t in _named_tables(doc, "windows", "window", _WINDOW_KEYS, err,
                                        "expected a table with start and end (\"HH:MM\") and optionally days",
                                        "unknown key (a window has start, end and days)"):
        for key in ("start", "end"):
            if key not in t:
                raise err(where, f"{key} is missing (\"HH:MM\", the server's local time)")
        times = {}
        for key in ("start", "end"):
            try:
                times[key] = parse_time(t[key])
            except ValueError as e:
                raise err(f"{where}.{key}", str(e)) from None
        days = ALL_DAYS
        if "days" in t:
            try:
                days = parse_days(t["days"])
            except ValueError as e:
                raise err(f"{where}.days", str(e)) from None
        built.append(Window(name, times["start"], times["end"], days))
    kw["windows"] = tuple(built)
    if "foreign" in doc:
        if doc["foreign"] not in _FOREIGN:
            raise err("foreign", f"expected \"wait\" or \"preempt\", got {str(doc['foreign'])[:40]!r}")
        kw["foreign"] = doc["foreign"]
    if "foreign_grace" in doc:
        try:
            kw["foreign_grace"] = parse_duration(doc["foreign_grace"])
        except ValueError as e:
            raise err("foreign_grace", str(e)) from None


def _hooks(doc: dict[str, Any], kw: dict[str, Any], err: Any) -> None:
    """[hooks]: on_finish (a command for bash), user (who runs it; never root unless written), timeout."""
    hooks = doc.get("hooks", {})
    if not isinstance(hooks, dict):
        raise err("hooks", "expected a table ([hooks])")
    for key in hooks:
        if key not in _HOOKS:
            raise err(f"hooks.{key}", "unknown key")
    if "on_finish" in hooks:
        v = hooks["on_finish"]
        if not isinstance(v, str) or not v.strip() or "\0" in v:
            raise err("hooks.on_finish", "expected a command (a non-empty string, run by /bin/bash -c)")
        kw["hook_on_finish"] = v
    if "user" in hooks:
        v = hooks["user"]
        if not isinstance(v, str) or not jobfile._USER_NAME.fullmatch(v) or len(v) > 32:
            raise err("hooks.user", "expected a user name")
        kw["hook_user"] = v
    if "timeout" in hooks:
        try:
            kw["hook_timeout"] = parse_duration(hooks["timeout"])
        except ValueError as e:
            raise err("hooks.timeout", str(e)) from None


IDLE_ACTIONS = ("flag", "stop")


def _idle(doc: dict[str, Any], kw: dict[str, Any], err: Any) -> None:
    """idle_after, idle_action, idle_threshold (docs/config.md, usage.py)."""
    if "idle_after" in doc:
        try:
            v = doc["idle_after"]
            kw["idle_after"] = 0.0 if v == "0" else parse_duration(v)        # parse_duration refuses booleans
        except ValueError as e:
            raise err("idle_after", str(e)) from None
        if 0 < kw["idle_after"] < 1:
            raise err("idle_after", "must be at least 1s (utilisation is sampled once a second), or 0: off")
    if "idle_action" in doc:
        v = doc["idle_action"]
        if v not in IDLE_ACTIONS:
            raise err("idle_action", f"expected one of {', '.join(repr(a) for a in IDLE_ACTIONS)}")
        kw["idle_action"] = v
    if "idle_threshold" in doc:
        v = doc["idle_threshold"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 100:
            raise err("idle_threshold", "expected a utilisation in percent, from 0 to under 100")
        kw["idle_threshold"] = float(v)


def _policy(doc: dict[str, Any], kw: dict[str, Any], err: Any) -> None:
    """The scheduling keys: backfill, aging, [fair_share], [classes.NAME], default_class."""
    if "backfill" in doc:
        if not isinstance(doc["backfill"], bool):
            raise err("backfill", "expected true or false")
        kw["backfill"] = doc["backfill"]
    if "aging" in doc:
        v = doc["aging"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1000:
            raise err("aging", "expected a number from 0 to 1000 (how many times its time limit a job may wait "
                               "before it is overdue; 0: never)")
        kw["aging"] = float(v)
    fs = doc.get("fair_share", {})
    if not isinstance(fs, dict):
        raise err("fair_share", "expected a table ([fair_share])")
    for key in fs:
        if key not in _FAIR_SHARE:
            raise err(f"fair_share.{key}", "unknown key")
    if "half_life" in fs:
        try:
            kw["fair_share_half_life"] = parse_duration(fs["half_life"])
        except ValueError as e:
            raise err("fair_share.half_life", str(e)) from None
    if "default_share" in fs:
        kw["default_share"] = _share(fs["default_share"], "fair_share.default_share", err)
    for key, field_name in (("users", "shares"), ("groups", "share_groups")):
        table = fs.get(key, {})
        if not isinstance(table, dict):
            raise err(f"fair_share.{key}", "expected a table of names and shares")
        kw[field_name] = tuple((str(name), _share(v, f"fair_share.{key}.{name}", err)) for name, v in table.items())
    classes = doc.get("classes", {})
    kw["classes"] = tuple(_job_class(name, t, set(classes), err, kw.get("windows", ()))
                          for name, _where, t in _named_tables(doc, "classes", "class", _CLASS_KEYS, err,
                                                               "expected a table", "unknown key"))
    if "default_class" in doc:
        v = doc["default_class"]
        if not isinstance(v, str) or not jobfile.CLASS_NAME.fullmatch(v):
            raise err("default_class", "expected a class name")
        if classes and v not in classes:               # without classes it names what a first one will be
            raise err("default_class", f"{v!r} is not one of the classes defined here ({', '.join(classes)})")
        kw["default_class"] = v
    elif classes and DEFAULT_CLASS not in classes:
        raise err("classes", f"no class is called {DEFAULT_CLASS!r}: set default_class to the class of jobs "
                             f"that name none")


def _share(v: Any, key: str, err: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1e9:
        raise err(key, "expected a share: a number from 0 to 1e9 (0: runs only when nobody with a share waits)")
    return float(v)


def _job_class(name: str, t: dict[str, Any], names: set[str], err: Any, windows: Any = ()) -> JobClass:
    where = f"classes.{name}"
    kw: dict[str, Any] = {"name": name}
    if "boost" in t:
        kw["boost"] = _boost(t["boost"], f"{where}.boost", {w.name for w in windows}, err)
    if "priority" in t:
        v = t["priority"]
        if isinstance(v, bool) or not isinstance(v, int) or not -(1 << 31) <= v < 1 << 31:
            raise err(f"{where}.priority", "expected an integer (lower runs first)")
        kw["priority"] = v
    for key in ("users", "groups", "preempts"):
        if key in t:
            v = t[key]
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise err(f"{where}.{key}", "expected an array of names")
            kw[key] = frozenset(v)
    for other in kw.get("preempts", ()):
        if other not in names:
            raise err(f"{where}.preempts", f"{other!r} is not a class defined here")
        if other == name:
            raise err(f"{where}.preempts", "a class can't preempt its own jobs (they would take turns stopping "
                                           "each other)")
    if "max_gpus_per_user" in t:
        v = t["max_gpus_per_user"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 31:
            raise err(f"{where}.max_gpus_per_user", "expected a non-negative integer (0: no cap)")
        kw["max_gpus_per_user"] = v
    for key in ("max_time_limit", "default_time_limit"):
        if key in t:
            try:
                kw[key] = parse_duration(t[key])
            except ValueError as e:
                raise err(f"{where}.{key}", str(e)) from None
    cap = kw.get("max_time_limit", 0.0)
    if cap and kw.get("default_time_limit") is None:
        kw["default_time_limit"] = cap          # a job that gives none must still be bounded by the cap
    if cap and kw["default_time_limit"] > cap:
        raise err(f"{where}.default_time_limit", "is more than the class's max_time_limit")
    if kw.get("default_time_limit") == 0:
        kw["default_time_limit"] = None
    return JobClass(**kw)


def _boost(v: Any, key: str, windows: set[str], err: Any) -> tuple[str, int]:
    """A class's boost: { window = "night", priority = 5 }, its priority while that window is open."""
    if not isinstance(v, dict) or set(v) != {"window", "priority"}:
        raise err(key, 'expected { window = "NAME", priority = N }: the class\'s priority while the window is open')
    name, prio = v["window"], v["priority"]
    if not isinstance(name, str) or name not in windows:
        known = ", ".join(sorted(windows)) or "none"
        raise err(key, f"window {str(name)[:40]!r} is not one of the [windows.*] defined here ({known})")
    if isinstance(prio, bool) or not isinstance(prio, int) or not -(1 << 31) <= prio < 1 << 31:
        raise err(key, "priority: expected an integer (lower runs first)")
    return name, prio


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
