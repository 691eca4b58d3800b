"""The read commands while gpusched is down: a user's own jobs as their status files last said.

The daemon keeps a copy of every job's record for people, status/<id>.toml in the state directory, root's
and readable by the job's owner alone (an ACL; store.py), and each job's log beside it the same way. When
the daemon can't be reached, `list`, `show` and `logs` read those instead, say so in one line on stderr,
and exit 0; the kernel decides what each user may open, so a user sees only their own jobs (root: all).
Where even the files can't answer (no state directory, not your job) they exit 3, as an unreachable daemon
does. What the files say may be old: a job that ended while the daemon was down still says "running", and
a waiting reason is the last one the daemon wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tomllib
from typing import Any

from gpusched.ctl import render
from gpusched.ctl.common import UNREACHABLE, CtlError, _config, print_json, warn

MAX_STATUS = 16 << 20              # bytes of one status file read at most
LIVE_STATES = ("queued", "starting", "running", "stopping")


def _note(what: str = "") -> None:
    what = what or ("every job" if os.getuid() == 0 else "your jobs")
    warn(f"gpusched is not running; {what} as {'its status file' if what.startswith('job ') else 'their status files'} "
         f"last said:")


def _status_dir(args: argparse.Namespace) -> str:
    from gpusched.store import Store                   # the state directory's layout is store.py's
    return Store(_config(args).state_dir).status_dir


def _read(path: str) -> dict[str, Any] | None:
    """A status file as a dict; None if this user may not read it (someone else's) or it is not a status
    file. Never through a link, never a FIFO, at most MAX_STATUS bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(MAX_STATUS + 1)
    if len(data) > MAX_STATUS:
        return None
    try:
        d = tomllib.loads(data.decode("utf-8", "surrogateescape"))
        int(d["id"]), int(d["uid"]), str(d["state"]), str(d["user"])
    except (ValueError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    return d


def readable_jobs(directory: str) -> list[dict[str, Any]]:
    """Every status file here this user may read, by id."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        if name.endswith(".toml") and name[:-5].isdigit():
            d = _read(os.path.join(directory, name))
            if d is not None:
                out.append(d)
    return sorted(out, key=lambda d: int(d["id"]))


def as_job(d: dict[str, Any]) -> Any:
    """A status file's record as a model.Job for listing.row: its spec is not in the record, so what the
    row shows of it (GPUs asked for, priority) comes from the record's copies of those."""
    from gpusched.jobfile import JobSpec
    from gpusched.model import job_from_dict
    spec = JobSpec(command="", name=str(d.get("name", "")), gpus=int(d.get("gpus_requested", 0)),
                   priority=int(d.get("priority", 100))) if "priority" in d else None
    return job_from_dict(d, spec)


def cmd_list(args: argparse.Namespace, term: render.Terminal, error: CtlError) -> int:
    directory = _status_dir(args)
    if not os.path.isdir(directory):
        raise error
    records = [d for d in readable_jobs(directory) if args.all or d["state"] in LIVE_STATES]
    _note()
    if args.json:
        from gpusched.listing import to_json
        print_json("jobs", [json.loads(to_json(d)) for d in records], offline=True)
        return 0
    from gpusched.ctl.queue import write_table
    from gpusched.listing import HEADER, fold_row, row
    jobs = [as_job(d) for d in records]
    arrays: dict[int, list[Any]] = {}
    for job in jobs:
        if job.array_id and not args.expand:
            arrays.setdefault(job.array_id, []).append(job)
    rows, submitted, shown = [], [], set()
    for job in jobs:
        if job.array_id in arrays:
            if job.array_id in shown:
                continue
            shown.add(job.array_id)
            elements = sorted(arrays[job.array_id], key=lambda j: j.array_index)
            rows.append(fold_row(job.array_id, elements))
        else:
            rows.append(row(job))
        submitted.append(int(job.submitted))
    write_table(HEADER, rows, submitted, term)
    return 0


def job(args: argparse.Namespace, target: tuple[int, int | None], error: CtlError) -> dict[str, Any]:
    """show and logs while gpusched is down: the target's status file, if this user may read it (else the
    error that the daemon could not be reached, which exits 3)."""
    directory = _status_dir(args)
    job_id, index = target
    if index is None:
        d = _read(os.path.join(directory, f"{job_id}.toml"))
    else:                                              # an array's element: its record says which it is
        d = next((r for r in readable_jobs(directory)
                  if r.get("array_id") == job_id and r.get("array_index") == index), None)
    what = f"job {job_id}[{index}]" if index is not None else f"job {job_id}"
    if d is None:
        raise CtlError(f"{error}; and {what} has no status file you may read (it is not yours, or there is "
                       f"no such job)", UNREACHABLE)
    _note(what)
    sys.stderr.flush()
    from gpusched.listing import to_json
    return json.loads(to_json(d))                      # its times as the daemon's answer has them (ISO 8601)
