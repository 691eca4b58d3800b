"""The job listing as text and JSON (and `printable`, the one escape for terminals, from escape.py, where
gpuschedctl takes it without the rest).

`gpuschedctl list` reads the listing files (listfiles.py), which keep each job's row and JSON from one
render to the next (listpublish.py); the bus's pages (`list --all`, an admin's `--json`) render on demand,
through a small cache of recent entries (CACHE_BYTES) for repeated calls over a small queue: a cache of every
job cost about 1 KB per job (100 MB at 100,000), measured. Every entry is bounded in bytes (MAX_ENTRY), so
the bus API can cut pages by size. Everything people's terminals show of a job passes through `printable`: job names, file
names and reasons come from users, and a raw ESC, CR, BEL or bidi override would let one user write on
another's terminal.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable, Protocol

from gpusched import sweep
from gpusched.escape import printable
from gpusched.model import Job, job_to_dict

PRIVATE_FIELDS = ("log", "source", "history", "stop_intent", "stop_requested", "usage", "cpu_seconds",
                  "memory_peak")
COLUMNS = (("ID", 7), ("STATE", 10), ("USER", 12), ("NAME", 24), ("GPUS", 8), ("PRIO", 5), ("SUBMITTED", 16))
TIME_FORMAT = "%m-%d %H:%M:%S"                  # fits SUBMITTED's width
HEADER = "".join(f"{name:<{width}}" for name, width in COLUMNS) + "INFO"
INFO_WIDTH = 80
MAX_ENTRY = 1 << 20     # bytes of JSON for one job in a listing; a bigger record is listed cut (see _cut)
CACHE_BYTES = 4 << 20   # of recently rendered entries (Listing.entry): a few thousand jobs
# what a cut entry keeps: fields of bounded size
_SMALL_FIELDS = ("id", "name", "user", "uid", "state", "submitted", "started", "ended", "exit_code", "signal",
                 "gpus", "unit", "attempt", "preemptions", "priority", "gpus_requested", "preemptible", "gid")


def to_json(value: Any) -> str:
    # ensure_ascii: the text is pure ASCII, so its length is its size in bytes, and a file name that is not
    # UTF-8 (held as lone surrogates) is sent as \udcxx rather than failing the bus's UTF-8 check
    return json.dumps(value, default=lambda o: o.isoformat() if isinstance(o, datetime) else str(o))


def public(d: dict[str, Any]) -> dict[str, Any]:
    """What everyone may see of a job: the queue, as squeue shows it."""
    return {k: v for k, v in d.items() if k not in PRIVATE_FIELDS}


def _cut(d: dict[str, Any], size: int) -> dict[str, Any]:
    """A listing entry too big to send: its bounded fields, the start of its reason, and "truncated", which
    says so. Chosen over an error entry because the job is still listed (id, state, user), as scripts expect."""
    out = {k: d[k] for k in _SMALL_FIELDS if k in d}
    if d.get("reason"):
        out["reason"] = d["reason"][:1000]
    out["truncated"] = (f"this job's record is {size} bytes of JSON, over the listing's limit of {MAX_ENTRY}; "
                        f"gpuschedctl show {d.get('id')} shows more")
    return out


def bounded_json(d: dict[str, Any]) -> str:
    text = to_json(d)
    return text if len(text) <= MAX_ENTRY else to_json(_cut(d, len(text)))


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
    if job.outcome:                                   # oom, gpu_oom
        parts.append(job.outcome)
    if job.reason:
        parts.append(job.reason[:4 * INFO_WIDTH].replace("\n", " "))
    return printable("; ".join(parts))[:INFO_WIDTH]


def row(job: Job) -> str:
    submitted = datetime.fromtimestamp(job.submitted).strftime(TIME_FORMAT)
    cells = (str(job.id), str(job.state), job.user, job.name, _gpus(job),
             str(job.spec.priority) if job.spec else "-", submitted)
    out = ""
    for (_, width), cell in zip(COLUMNS, cells):
        cell = printable(cell[:4 * width])
        out += (cell[:width - 2] + "… " if len(cell) > width - 1 else cell.ljust(width))
    return out + _info(job)


# a folded array's INFO: how many of its jobs are in each state, in this order
_FOLD_ORDER = ("running", "queued", "held", "succeeded", "failed", "cancelled", "dependency_failed")


def fold_counts(elements: list[Job]) -> dict[str, int]:
    """How many of an array's jobs are in each state: starting and stopping ones count as running, held
    queued ones as held."""
    counts: dict[str, int] = {}
    for job in elements:
        state = str(job.state)
        if state in ("starting", "stopping"):
            state = "running"
        elif state == "queued" and job.held:
            state = "held"
        counts[state] = counts.get(state, 0) + 1
    return {k: counts[k] for k in _FOLD_ORDER if k in counts} | {k: v for k, v in counts.items() if k not in _FOLD_ORDER}


def fold_row(array_id: int, elements: list[Job]) -> str:
    """One table row for a whole array (`gpuschedctl list` folds arrays; --expand shows every job):
    `12[0-5]  array  alice  sweep  (1)  100  ...  2 running, 3 queued, 1 succeeded`. Its ID is the array's
    id and the range of its indices, and is never cut."""
    first = elements[0]
    name = sweep.base_name(first.name, first.array_index)
    indices = [j.array_index for j in elements]
    span = f"{array_id}[{min(indices)}-{max(indices)}]" if len(indices) > 1 else f"{array_id}[{indices[0]}]"
    submitted = datetime.fromtimestamp(first.submitted).strftime(TIME_FORMAT)
    cells = ("array", first.user, name, _gpus_requested(first), str(first.spec.priority) if first.spec else "-",
             submitted)
    out = span.ljust(COLUMNS[0][1] - 1) + " "
    for (_, width), cell in zip(COLUMNS[1:], cells):
        cell = printable(cell[:4 * width])
        out += (cell[:width - 2] + "… " if len(cell) > width - 1 else cell.ljust(width))
    info = ", ".join(f"{n} {state}" for state, n in fold_counts(elements).items())
    return out + printable(info)[:INFO_WIDTH]


def _gpus_requested(job: Job) -> str:
    n = job.spec.gpus if job.spec else 0
    return f"({n})" if n else "-"


class Viewer(Protocol):
    """Who asks (access.Caller): whether they see a job's private fields."""
    def sees_private(self, job: Job) -> bool: ...


def lines(job: Job) -> tuple[str, str, str]:
    """A job's full JSON entry, its public one and its table row: what the listing shows of it."""
    d = job_to_dict(job)
    return bounded_json(d), bounded_json(public(d)), row(job)


FULL, PUBLIC, ROW = 0, 1, 2      # the parts of a cached entry
_ENTRY_COST = 120                # bytes a cached entry costs besides its text (its list, its key)


class Listing:
    def __init__(self) -> None:
        # id -> [full JSON, public JSON, table row as a JSON string's inside], each None until asked for (a
        # table page needs rows alone), the least recently used first; at most CACHE_BYTES in all (and
        # always the last one, whatever its size)
        self._cache: OrderedDict[int, list[str | None]] = OrderedDict()
        self._cached = 0
        # for a watcher (the listing files, listfiles.Publisher): the ids changed since it last took them,
        # each with its array's id (0: none), kept because a job removed from the table can't be asked
        self._changed: dict[int, int] = {}
        self._watch: Callable[[], None] | None = None

    def watch(self, fn: Callable[[], None]) -> None:
        """Call fn at every change (it must be cheap: it is called once per change); take_changed says which."""
        self._watch = fn

    def invalidate(self, job_id: int, array_id: int = 0) -> None:
        e = self._cache.pop(job_id, None)
        if e is not None:
            self._cached -= _size(e)
        if self._watch is not None:
            self._changed[job_id] = array_id or self._changed.get(job_id, 0)
            self._watch()

    def take_changed(self) -> dict[int, int]:
        """The ids changed since the last call (id -> its array's id where the caller said it, else 0)."""
        changed, self._changed = self._changed, {}
        return changed

    def entry(self, job: Job) -> tuple[str, str, str]:
        """The job's full JSON entry, its public one, and its row as the inside of a JSON string."""
        return self.part(job, FULL), self.part(job, PUBLIC), self.part(job, ROW)

    def part(self, job: Job, which: int) -> str:
        """One part of the job's entry (FULL, PUBLIC or ROW), rendered alone if not cached: a table page over
        100,000 jobs needs no JSON, a JSON page one of the two per job."""
        e = self._cache.get(job.id)
        if e is None:
            e = self._cache[job.id] = [None, None, None]
            self._cached += _ENTRY_COST
        else:
            self._cache.move_to_end(job.id)
        text = e[which]
        if text is None:
            if which == ROW:
                text = json.dumps(row(job))[1:-1]
            else:
                d = job_to_dict(job)
                text = bounded_json(d if which == FULL else public(d))
            e[which] = text
            self._cached += len(text)
            while self._cached > CACHE_BYTES and len(self._cache) > 1:
                self._cached -= _size(self._cache.popitem(last=False)[1])
        return text

    def page(self, jobs: Any, viewer: Viewer, table: bool, header: bool, max_bytes: int,
             max_count: int, fold: Callable[[Job], str | None] | None = None,
             submitted: list[int] | None = None) -> tuple[str, int | None]:
        """The next page of `jobs` (an iterator, in id order) as part of a JSON reply: a JSON array of
        entries (each in full where `viewer` may see it so, else its public part: access.py's rule), or a
        JSON string of table rows. At most max_count jobs and max_bytes of text (but always one job: an entry
        is at most MAX_ENTRY). Returns (text, id of the last job given if more are left, else None).
        fold (table only): a job's row in place of its own (an array's, folded), "" to leave it out (an array
        already shown), or None for its own row. submitted (table only): each row's submission time (whole
        seconds) is appended to it, so a terminal can show it as "3m ago" (an array's: its first job's)."""
        parts: list[str] = [json.dumps(HEADER)[1:-1]] if table and header else []
        size = 2 + sum(len(p) + 2 for p in parts)
        last, count = None, 0
        for job in jobs:
            text = fold(job) if fold is not None and table else None
            if text == "":
                last = job.id
                continue
            if text is None:
                text = self.part(job, ROW if table else FULL if viewer.sees_private(job) else PUBLIC)
            else:
                text = json.dumps(text)[1:-1]
            if last is not None and (size + len(text) + 2 > max_bytes or count >= max_count):
                return self._join(parts, table), last
            parts.append(text)
            if submitted is not None and table:
                submitted.append(int(job.submitted))
            size += len(text) + 2
            last, count = job.id, count + 1
        return self._join(parts, table), None

    @staticmethod
    def _join(parts: list[str], table: bool) -> str:
        return '"' + "\\n".join(parts) + '"' if table else "[" + ",".join(parts) + "]"


def _size(e: list[str | None]) -> int:
    return _ENTRY_COST + sum(len(t) for t in e if t is not None)
