"""What every gpuschedctl command shares: errors and exit codes, escaping for terminals, the config, job
targets (ID, ID[i], ID_i), tables and the accounting figures' formats."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from gpusched.escape import printable
from gpusched.units import format_duration, format_size, parse_duration

if TYPE_CHECKING:
    from gpusched import config as configmod

# exit codes (docs/cli.md): 0 done; 1 failed or refused; 2 a usage error (argparse's own); 3 gpusched could
# not be reached; `wait` exits with the job's own code for one job, and 124 when its --timeout passed
OK, FAILED, USAGE, UNREACHABLE, TIMED_OUT = 0, 1, 2, 3, 124


# `--json` output: one object, {"version": JSON_VERSION, "<kind>": ...}; a field is only ever added within
# a version (docs/cli.md lists each kind's fields); a removal or a change of meaning raises the version
JSON_VERSION = 1


def print_json(kind: str, payload: Any, **more: Any) -> None:
    """A read command's --json: {"version": 1, kind: payload, ...more}."""
    print(json.dumps({"version": JSON_VERSION, kind: payload, **more}, indent=2))


class CtlError(Exception):
    """A failure to report in one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = FAILED):
        super().__init__(message)
        self.code = code


def safe(text: str) -> str:
    """For people: each line through printable (the line breaks themselves are ours)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def warn(message: str) -> None:
    print(f"gpuschedctl: {safe(message)}", file=sys.stderr)


def die(message: str, code: int = 1) -> NoReturn:
    warn(message)
    sys.exit(code)



def _config(args: argparse.Namespace) -> configmod.Config:
    from gpusched import config as configmod           # here: a read command needs none of it
    try:
        return configmod.load(args.config)
    except (configmod.ConfigError, OSError):
        return configmod.Config()


def _spool_dir(args: argparse.Namespace) -> str:
    return args.spool or _config(args).spool_dir


def _privileged(cfg: configmod.Config) -> bool:
    """As the daemon judges it (access.py: root, or a member of admin_group), for the local check only."""
    from gpusched.access import Access
    return Access(cfg.admin_group).is_admin(os.getuid())


def _caller() -> tuple[str, list[str]]:
    """The caller's user name and groups, which decide the classes the file may ask for (as the daemon decides
    for the file's owner, which the caller will be)."""
    from gpusched.access import group_names
    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:
        return "", []
    return pw.pw_name, group_names(pw.pw_name, pw.pw_gid)



_TARGET = re.compile(r"([0-9]+)(?:\[([0-9]+)\]|_([0-9]+))?")


def job_target(text: str) -> tuple[int, int | None]:
    """A job id (`12`; an array's id is its first element's and stands for the whole array), or one element of
    an array (`12[3]`, or Slurm's `12_3`, which needs no quoting in a shell): (id, index or None)."""
    m = _TARGET.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (12), nor an array's element (12[3] or 12_3)")
    index = m.group(2) or m.group(3)
    job_id, index = int(m.group(1)), None if index is None else int(index)
    if job_id >= 1 << 63 or (index is not None and index >= 1 << 31):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: no job has an id (or an array an index) that large")
    return job_id, index


def _resolve(client: Any, target: tuple[int, int | None]) -> int:
    """The job id of a target (an element's own id for `12[3]`)."""
    job_id, index = target
    return job_id if index is None else int(client.call("Element", job_id, index))


def _shown(target: tuple[int, int | None]) -> str:
    return str(target[0]) if target[1] is None else f"{target[0]}[{target[1]}]"



def _field(key: str, value: Any) -> None:
    """One `show` line; a value's own line breaks (a reason, a command) are kept, indented, and every line
    escaped."""
    lines = (value if isinstance(value, str) else str(value)).split("\n")
    print(f"{printable(key):>14}: " + ("\n" + " " * 16).join(printable(line) for line in lines))




def _table(rows: list[tuple[str, ...]]) -> None:
    """Aligned columns, every cell escaped; on a terminal fitted to its width (the widest column is cut
    first, render.fit_table), piped or redirected never cut."""
    from gpusched.ctl import render
    cells = [tuple(printable(str(c)) for c in r) for r in rows]
    for line in render.fit_table(cells, render.terminal().width):
        print(line)



def parse_since(text: str | None, now: float) -> float:
    """--since: a duration back from now ("7d", "12h", "90m") or a local date or time ("2026-11-01",
    "2026-11-01 14:00", ISO 8601 with a "T" or a zone); none: 0 (everything still kept)."""
    if not text:
        return 0.0
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise CtlError(f"--since {text!r}: expected a duration back from now (\"7d\", \"12h\") or a date "
                       f"(\"2026-11-01\", \"2026-11-01 14:00\")") from None


def usage_value(key: str, value: Any) -> str:
    """One accounting figure for people."""
    if value is None:
        return "-"
    if key in ("gpu_memory_peak", "memory_peak", "memory_peak_max"):
        return format_size(int(value))
    if key == "energy_joules":
        return _energy(float(value))
    if key in ("cpu_seconds", "wait_mean", "wait_max"):
        return format_duration(float(value))
    if key.startswith("gpu_hours"):
        return f"{float(value):.3f}"
    return str(value)


def _energy(joules: float, estimated: bool = False) -> str:
    text = f"{joules / 3.6e6:.2f} kWh" if joules >= 3.6e5 else f"{joules / 1000:.1f} kJ"
    return ("~" if estimated else "") + text


