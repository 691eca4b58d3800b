"""The job listing as text and JSON, cached per job: `gpuschedctl list` with 100,000 queued jobs must stay
fast, so each job's row and JSON are rendered once per change of the job, not once per request."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from gpusched.model import Job, job_to_dict

PRIVATE_FIELDS = ("log", "source", "history", "stop_intent", "stop_requested")
COLUMNS = (("ID", 7), ("STATE", 10), ("USER", 12), ("NAME", 24), ("GPUS", 8), ("PRIO", 5), ("SUBMITTED", 16))
TIME_FORMAT = "%m-%d %H:%M:%S"                  # fits SUBMITTED's width
HEADER = "".join(f"{name:<{width}}" for name, width in COLUMNS) + "INFO"


def to_json(value: Any) -> str:
    return json.dumps(value, default=lambda o: o.isoformat() if isinstance(o, datetime) else str(o))


def public(d: dict[str, Any]) -> dict[str, Any]:
    """What everyone may see of a job: the queue, as squeue shows it."""
    return {k: v for k, v in d.items() if k not in PRIVATE_FIELDS}


def _gpus(job: Job) -> str:
    if job.gpus:
        return ",".join(str(g.index) for g in job.gpus)
    n = job.spec.gpus if job.spec else 0
    return f"({n})" if n else "-"


def _info(job: Job) -> str:
    parts = []
    if job.exit_code is not None:
        parts.append(f"exit {job.exit_code}")
    elif job.signal:
        parts.append(job.signal)
    if job.reason:
        parts.append(job.reason.replace("\n", " "))
    return "; ".join(parts)[:80]


def row(job: Job) -> str:
    submitted = datetime.fromtimestamp(job.submitted).strftime(TIME_FORMAT)
    cells = (str(job.id), str(job.state), job.user, job.name, _gpus(job),
             str(job.spec.priority) if job.spec else "-", submitted)
    out = ""
    for (_, width), cell in zip(COLUMNS, cells):
        cell = "".join(c if c.isprintable() else "?" for c in cell)
        out += (cell[:width - 2] + "… " if len(cell) > width - 1 else cell.ljust(width))
    return out + _info(job)


class Listing:
    def __init__(self) -> None:
        self._cache: dict[int, tuple[str, str, str]] = {}     # id -> (full JSON, public JSON, table row)

    def invalidate(self, job_id: int) -> None:
        self._cache.pop(job_id, None)

    def entry(self, job: Job) -> tuple[str, str, str]:
        e = self._cache.get(job.id)
        if e is None:
            d = job_to_dict(job)
            e = self._cache[job.id] = (to_json(d), to_json(public(d)), row(job))
        return e

    def json(self, jobs: list[Job], sees_all: bool, caller: int) -> str:
        return "[" + ",".join(self.entry(j)[0 if sees_all or j.uid == caller else 1] for j in jobs) + "]"

    def table(self, jobs: list[Job], header: bool = True) -> str:
        return "\n".join(([HEADER] if header else []) + [self.entry(j)[2] for j in jobs])
