"""Durable job records over the Store: a write that failed (disk full, read-only) is retried until it lands,
and the people's copies of waiting reasons are written in batches.

The engine calls `save` at every change of a job (engine.apply). A failed write leaves the job "dirty" and
is said once in the journal; `retry` rewrites the dirty ones, oldest id first, each tick. A waiting job's
reason changes at most once per scheduling pass and is informational, so it only rewrites the people's
copy, soon, 256 at a time, never fsync'd: a first pass over 100,000 new jobs must not stall the loop.

`create` is for a new record (accepted or rejected): it raises instead, so the spool entry can stay where
it was when nothing could be recorded. The engine is given a Recorder; gpusched.testing.MemoryRecorder is the
same without a disk, for tests and the simulator.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from gpusched.atomicfile import atomic_write

from gpusched.log import Log
from gpusched.model import Job
from gpusched.store import Store

Soon = Callable[[Callable[[], bool]], None]      # call fn at idle until it returns False


class Recorder(Protocol):
    dirty: set[int]

    def load(self, on_error: Callable[[str, Exception], None]) -> Iterable[Job]: ...
    def create(self, job: Job, source: bytes | None = None) -> None: ...
    def create_array(self, jobs: list[Job], source: bytes) -> Iterator[None]: ...
    def discard(self, job_ids: Iterable[int]) -> None: ...
    def save(self, job: Job) -> bool: ...
    def retry(self, jobs: Mapping[int, Job]) -> None: ...
    def refresh_stale(self, jobs: Mapping[int, Job]) -> None: ...
    def copy_soon(self, job: Job) -> None: ...
    def remove(self, job_ids: Iterable[int]) -> int: ...
    def remove_rejected(self, job_ids: Iterable[int]) -> int: ...
    def forget(self, job_id: int) -> None: ...
    def log_path(self, job_id: int) -> str: ...
    def load_control(self) -> dict[str, Any]: ...
    def save_control(self, control: dict[str, Any]) -> None: ...


class Retrying:
    """The part of a recorder every recorder shares (the store's, and gpusched.testing's in memory): a record
    write that fails leaves its job dirty, said once in the journal, and `retry` writes the dirty ones again,
    oldest id first. Subclasses give `_write` and set `dirty` and `_log`."""
    dirty: set[int]
    _log: Callable[..., None]

    def _write(self, job: Job) -> None:
        raise NotImplementedError

    def save(self, job: Job) -> bool:
        """Write the record. False if the write failed: the job is then retried every tick until it lands."""
        try:
            self._write(job)
        except OSError as e:
            if job.id not in self.dirty:
                self._log(f"can't write the status of job {job.id}: {e.strerror}; retrying", 3, job=job)
            self.dirty.add(job.id)
            return False
        self.dirty.discard(job.id)
        return True

    def retry(self, jobs: Mapping[int, Job]) -> None:
        for job_id in sorted(self.dirty):
            if not self.save(jobs[job_id]):
                return
            self._log(f"status of job {job_id} written after an earlier failure", job=jobs[job_id])


class StoreRecorder(Retrying):
    def __init__(self, store: Store, log: Log, soon: Soon):
        self.store = store
        self.dirty: set[int] = set()                   # jobs whose record write failed
        self._log = log
        self._soon = soon
        self._copies_due: dict[int, Job] = {}          # people's copies to rewrite (a new waiting reason)
        self._flushing = False

    def load(self, on_error: Callable[[str, Exception], None]) -> Iterator[Job]:
        """Every recorded job (store.init first: the directories, the id ceiling, the files' rights), from
        the snapshot where it is still true (store.py)."""
        self.store.init()
        return self.store.load_jobs_safely(on_error)

    def create(self, job: Job, source: bytes | None = None) -> None:
        """A new job's record (and its job file, if accepted). Raises OSError: then nothing is recorded
        that the daemon would act on."""
        if source is not None:
            self.store.save_source(job.id, source, job.uid)
        self.store.save_status(job)

    def create_array(self, jobs: list[Job], source: bytes) -> Iterator[None]:
        """An array's records (jobs[0], its first element, last), a step per record: all or none; raises
        OSError (store.py)."""
        return self.store.create_array(jobs, source)

    def discard(self, job_ids: Iterable[int]) -> None:
        """Remove what an array's intake left when it didn't finish (never accepted: no state check)."""
        self.store.discard(job_ids)

    def _write(self, job: Job) -> None:
        self.store.save_status(job)

    def refresh_stale(self, jobs: Mapping[int, Job]) -> None:
        """At recovery: the people's copies a crash left missing or older than their record (the store saw
        them while loading) are rewritten soon, in batches."""
        for job_id in self.store.stale_copies:
            job = jobs.get(job_id)
            if job is not None:
                self.copy_soon(job)

    def copy_soon(self, job: Job) -> None:
        self._copies_due[job.id] = job
        if not self._flushing:
            self._flushing = True
            self._soon(self._flush_copies)

    def _flush_copies(self) -> bool:
        for _ in range(256):
            if not self._copies_due:
                self._flushing = False
                return False
            _, job = self._copies_due.popitem()
            try:
                self.store.refresh_copy(job)
            except OSError:
                pass
        return True

    def remove(self, job_ids: Iterable[int]) -> int:
        """Remove finished jobs' files (store.remove_jobs). Raises OSError or ValueError."""
        return self.store.remove_jobs(job_ids)

    def remove_rejected(self, job_ids: Iterable[int]) -> int:
        """remove for rejected jobs, which have no result to look for."""
        return self.store.remove_jobs(job_ids, results=False)

    def snapshot(self) -> None:
        """At a clean stop: every record in one file, so the next start reads one file, not two per job
        (store.py, snapshot.py). Records whose last write failed are left out: their file is the truth."""
        t0 = time.monotonic()
        try:
            n = self.store.write_snapshot(self.dirty)
        except OSError as e:
            self._log(f"can't write the snapshot of the job records ({e.strerror}); the next start reads every "
                      f"record", 4)
            return
        self._log(f"snapshot of {n} job record(s) written in {time.monotonic() - t0:.2f}s")

    def forget(self, job_id: int) -> None:
        """The job is gone from the table (expired, or its record was never kept): no write for it is due."""
        self.dirty.discard(job_id)
        self._copies_due.pop(job_id, None)

    def load_control(self) -> dict[str, Any]:
        """The server-wide switches an admin set (drain, paused users): {} when none, or unreadable (said)."""
        try:
            with open(self._control_path(), "rb") as f:
                d = json.loads(f.read(1 << 20))
            return d if isinstance(d, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._log(f"{self._control_path()} unreadable ({e}); no drain or pause in force", 3)
            return {}

    def save_control(self, control: dict[str, Any]) -> None:
        atomic_write(self._control_path(), json.dumps(control).encode(), mode=0o644)

    def _control_path(self) -> str:
        return os.path.join(self.store.root, "control.json")

    def log_path(self, job_id: int) -> str:
        return self.store.log_path(job_id)
