"""A compact copy of every job record in one file, so that a restart with 100,000 jobs doesn't parse 200,000
TOML files (about 19 s here) before READY=1.

A cache, never the truth: the records in jobs/ are. The daemon writes the snapshot from memory when it stops;
at start each record is taken from the snapshot only if its file is exactly the one the snapshot saw (same
inode, size and mtime) and was written at least a second before the snapshot (so a rewrite within the
filesystem's timestamp granularity can't pass for the old file). Every other record, one that is missing
from the snapshot, or a snapshot written by a version whose records look different (FINGERPRINT), is read
from its files as before. After a crash the snapshot is stale, and only what changed since is re-read.

The file is JSON lines: a header, then one line per job, `[inode, size, mtime_ns, row]`. The store keeps each
job's line from when it last saved (or loaded) the job (`Lines`), so writing the snapshot at a stop costs one
write of bytes already made, not an encoding of every job. JSON, not pickle: the file is root's in a
root-only directory, but nothing here should be able to run code if it were ever otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from gpusched.atomicfile import atomic_write
from gpusched.jobfile import JobSpec, ResourceLimits
from gpusched.model import GpuRef, Job, State

NAME = "snapshot.json"
MARGIN_NS = 1_000_000_000        # a record younger than this at snapshot time is always re-read
Key = tuple[int, int, int]       # (inode, size, mtime_ns) of a record file


def _fingerprint() -> str:
    shape = [[f.name for f in dataclasses.fields(c)] for c in (Job, JobSpec, ResourceLimits, GpuRef)]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


FINGERPRINT = _fingerprint()
# positional, in the dataclasses' field order (the fingerprint changes with it): about half the size of
# named fields, and lists of plain values are what json parses fastest
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(JobSpec))
_LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(ResourceLimits))
_STATES = {str(s): s for s in State}
_DECODE = json.JSONDecoder().decode


def key_of(st: os.stat_result) -> Key:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def encode(job: Job) -> list[Any]:
    row = [getattr(job, name) for name in _JOB_FIELDS]
    row[_JOB_FIELDS.index("state")] = str(job.state)
    row[_JOB_FIELDS.index("gpus")] = [[g.index, g.uuid] for g in job.gpus]
    if job.spec is not None:
        spec = [getattr(job.spec, name) for name in _SPEC_FIELDS]
        spec[_SPEC_FIELDS.index("limits")] = [getattr(job.spec.limits, name) for name in _LIMIT_FIELDS]
        row[_JOB_FIELDS.index("spec")] = spec
    return row


_STATE, _GPUS, _SPEC, _AFTER = (_JOB_FIELDS.index(n) for n in ("state", "gpus", "spec", "after"))
_SPEC_TUPLES = [_SPEC_FIELDS.index(n) for n in ("after", "after_ok", "after_notok", "retry_on", "sweep")]
_LIMITS, _TAGS, _GPU_IDS, _COMMAND = (_SPEC_FIELDS.index(n) for n in ("limits", "tags", "gpu_ids", "command"))


def decode(row: list[Any]) -> Job:
    if len(row) != len(_JOB_FIELDS):
        raise ValueError("a snapshot row of another shape")
    row = list(row)
    row[_STATE] = _STATES[row[_STATE]]
    row[_GPUS] = tuple(GpuRef(int(i), str(u)) for i, u in row[_GPUS])
    row[_AFTER] = tuple(tuple(d) for d in row[_AFTER])
    if row[_SPEC] is not None:
        spec = list(row[_SPEC])
        if len(spec) != len(_SPEC_FIELDS):
            raise ValueError("a snapshot spec of another shape")
        spec[_LIMITS] = ResourceLimits(*spec[_LIMITS])
        spec[_TAGS], spec[_GPU_IDS] = tuple(spec[_TAGS]), tuple(spec[_GPU_IDS])
        for i in _SPEC_TUPLES:
            spec[i] = tuple(spec[i])
        if isinstance(spec[_COMMAND], list):
            spec[_COMMAND] = tuple(spec[_COMMAND])
        row[_SPEC] = JobSpec(*spec)
    return Job(*row)


def line(job: Job, key: Key) -> bytes:
    return json.dumps([*key, encode(job)], separators=(",", ":")).encode() + b"\n"


class Lines:
    """Each job's snapshot line as of its record file's last write, kept by the store."""

    def __init__(self) -> None:
        self.by_id: dict[int, bytes] = {}

    def saved(self, job: Job, key: Key) -> None:
        self.by_id[job.id] = line(job, key)

    def forget(self, job_id: int) -> None:
        self.by_id.pop(job_id, None)

    def write(self, path: str, taken_ns: int, skip: set[int] = frozenset()) -> int:
        """The snapshot of every job with a line but those in skip, as taken at taken_ns (time.time_ns())."""
        header = json.dumps({"fingerprint": FINGERPRINT, "taken_ns": taken_ns}).encode() + b"\n"
        body = [b for i, b in self.by_id.items() if i not in skip]
        atomic_write(path, header + b"".join(body), mode=0o600)
        return len(body)


class Snapshot:
    """A snapshot read back: `take(job_id, key)` gives the job and its line if the record file with that key
    is the one the snapshot saw, else None."""

    def __init__(self, taken_ns: int, lines: dict[int, tuple[Key, bytes]]):
        self.taken_ns = taken_ns
        self.lines = lines

    def take(self, job_id: int, key: Key) -> tuple[Job, bytes] | None:
        seen = self.lines.get(job_id)
        if seen is None or seen[0] != key or key[2] >= self.taken_ns - MARGIN_NS:
            return None
        try:
            ino, size, mtime, row = _DECODE(seen[1].decode())
            job = decode(row)
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        return (job, seen[1]) if job.id == job_id else None


def read(path: str) -> Snapshot | None:
    """The snapshot at path, or None if there is none or it can't be used (another version's, damaged).
    Only each line's key and id are looked at here; a line is parsed when its job is taken."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline())
            if not isinstance(header, dict) or header.get("fingerprint") != FINGERPRINT:
                return None
            taken_ns = int(header["taken_ns"])
            lines: dict[int, tuple[Key, bytes]] = {}
            for raw in f:
                # b'[ino,size,mtime,[id,...' : the key and the id without a full parse
                head = raw[1:raw.find(b",[", 1)].split(b",") + [raw[raw.find(b",[", 1) + 2:].split(b",", 1)[0]]
                ino, size, mtime, job_id = (int(x) for x in head)
                lines[job_id] = ((ino, size, mtime), raw)
        return Snapshot(taken_ns, lines)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
