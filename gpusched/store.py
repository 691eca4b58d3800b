"""The state directory: job ids, each job's original file, status file, exit result and log.

Every write is atomic (temp file, fsync, rename, fsync of the directory), so the daemon can be SIGKILLed at
any instant. Layout under state_dir (default /var/lib/gpusched):

    next-id               a ceiling on the ids handed out (ids never repeat, across restarts)
    rights                how the files below were last made unwritable by users ("acl" or "owner")
    jobs/<id>.toml        the accepted job file, byte for byte               } root-only directory: what
    jobs/<id>.status.toml the job's record, the daemon's truth              } the daemon trusts
    status/<id>.toml      a copy of the record for people, never read back
    results/<id>.<n>.<token>.json  written by the job's monitor when attempt n ends: exit code or signal
    logs/<id>.log         the job's output, written by its root monitor
    snapshot.json         every record in one file, written when the daemon stops: a cache for a fast
                          start, checked against each record file (snapshot.py)

No file here is a user's or writable by one: a job's log and status copy are root's, mode 0600/0400, with
a POSIX ACL `user:<uid>:r--` so the job's user (and root) can read them and nobody can write them (acl.py).
A user who owned their log could append to it past max_log_size and log_min_free. Where the filesystem has
no ACLs the daemon says so once in the journal and those two files are the user's, the old way.
"""

from __future__ import annotations

import json
import os
import stat
import time
import tomllib
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Iterator

import tomli_w

from gpusched import acl, jobfile, journal, snapshot, sweep
from gpusched.atomicfile import atomic_write
from gpusched.model import FINAL, Job, State, job_from_dict, job_to_dict


ID_BLOCK = 100


RIGHTS_FILE = "rights"


def _say(text: str) -> None:
    journal.send(text, 4, SYSLOG_IDENTIFIER="gpusched", GPUSCHED_EVENT="acl")


class Store:
    def __init__(self, root: str, say: Callable[[str], None] = _say):
        self.root = root
        self.say = say                      # a warning for the journal (the daemon's identity)
        self._said_no_acl = False
        self.stale_copies: set[int] = set()   # set by load_jobs_safely
        self.lines = snapshot.Lines()         # each job's snapshot line, as of its record's last write
        self._parsed: tuple[tuple[Any, ...], Any] | None = None   # the last stored file parsed (load_job)
        self.users_own_copies = False         # no ACLs here: a user may have edited their copy (fix_rights)
        self.jobs_dir = os.path.join(root, "jobs")
        self.status_dir = os.path.join(root, "status")
        self.results_dir = os.path.join(root, "results")
        self.logs_dir = os.path.join(root, "logs")
        self._next_id = 1
        self._ceiling = 0

    def init(self) -> None:
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        for d, mode in ((self.jobs_dir, 0o700), (self.status_dir, 0o755), (self.results_dir, 0o700),
                        (self.logs_dir, 0o755)):
            os.makedirs(d, mode=mode, exist_ok=True)
            os.chmod(d, mode)
        try:
            with open(os.path.join(self.root, "next-id")) as f:
                self._next_id = int(f.read().strip())
        except FileNotFoundError:
            self._next_id = 1
        # never reuse an id, even if next-id was lost or is behind
        highest = max((int(n.split(".")[0]) for n in os.listdir(self.jobs_dir) if n[0].isdigit()), default=0)
        self._next_id = max(self._next_id, highest + 1)
        self._ceiling = self._next_id - 1
        try:
            self.fix_rights()
        except OSError as e:                # a full disk, say: files stay as they are, tried again next start
            self.say(f"{self.root}: can't check or fix the rights of its files now ({e}); retried at the "
                     f"next start")

    def allocate_id(self) -> int:
        # next-id holds a ceiling reserved ahead, written once per ID_BLOCK ids: a restart continues from
        # the ceiling, so an id is never handed out twice (a crash costs at most a gap in the numbers)
        # (the ceiling is raised only once it is on disk: a failed write hands out no id and changes nothing)
        job_id = self._next_id
        if job_id + 1 > self._ceiling:
            ceiling = job_id + 1 + ID_BLOCK
            atomic_write(os.path.join(self.root, "next-id"), f"{ceiling}\n".encode(), mode=0o644)
            self._ceiling = ceiling
        self._next_id = job_id + 1
        return job_id

    def allocate_ids(self, n: int) -> list[int]:
        """n ids in a row (an array's other elements), with one write of next-id at most."""
        first = self._next_id
        if first + n > self._ceiling:
            ceiling = first + n + ID_BLOCK
            atomic_write(os.path.join(self.root, "next-id"), f"{ceiling}\n".encode(), mode=0o644)
            self._ceiling = ceiling
        self._next_id = first + n
        return list(range(first, first + n))

    # paths
    def status_path(self, job_id: int) -> str:
        return os.path.join(self.status_dir, f"{job_id}.toml")

    def source_path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"{job_id}.toml")

    def result_path(self, job_id: int, attempt: int, token: str = "") -> str:
        # the token is fresh for every start, so a monitor of a start that was given up on (the daemon died
        # mid-start) can't write into the result of the next start of the same attempt
        return os.path.join(self.results_dir, f"{job_id}.{attempt}{'.' + token if token else ''}.json")

    def log_path(self, job_id: int) -> str:
        return os.path.join(self.logs_dir, f"{job_id}.log")

    # writes
    def save_source(self, job_id: int, data: bytes, uid: int = 0) -> None:
        """The file as it was taken. uid (the submitter) is not its owner: nothing here is a user's."""
        atomic_write(self.source_path(job_id), data, mode=0o400)

    def record_path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"{job_id}.status.toml")

    def save_status(self, job: Job, durable: bool = True) -> None:
        data = tomli_w.dumps(job_to_dict(job)).encode()
        path = self.record_path(job.id)
        atomic_write(path, data, mode=0o600, durable=durable)
        self.lines.saved(job, snapshot.key_of(os.lstat(path)))
        self._save_copy(job.id, job.uid, data)

    def create_array(self, jobs: list[Job], data: bytes) -> Iterator[None]:
        """An array's records, all or none, as a generator: each step writes one more (the caller spreads them
        over main-loop turns); it raises OSError having removed what it wrote. The job file is written once, as
        the first element's, and hard-linked for the others (each element's record reads its own name). The
        others' records are written without an fsync each (7 ms apiece here: 1,000 of them would stall the
        daemon for seconds), then one syncfs makes them durable, and the first element's record goes last,
        durably: it is the array's commit point. A crash before it leaves an entry in the spool's .work/ with no
        record of its id, and the intake then discards the other elements (engine.discard_array)."""
        head, rest = jobs[0], jobs[1:]
        try:
            self.save_source(head.id, data, head.uid)
            for job in rest:
                os.link(self.source_path(head.id), self.source_path(job.id))
                self.save_status(job, durable=False)
                yield
            if rest:
                _syncfs(self.jobs_dir)
            self.save_status(head)
        except OSError:
            self.discard(j.id for j in jobs)
            raise

    def discard(self, job_ids: Iterable[int]) -> None:
        """Remove the files of jobs that were never accepted (an array's elements whose first element's record
        was not written), whatever their records say. Missing files are fine."""
        for job_id in job_ids:
            self.lines.forget(job_id)
            for path in (self.status_path(job_id), self.source_path(job_id), self.record_path(job_id)):
                try:
                    _unlink(path)
                except OSError:
                    pass

    def refresh_copy(self, job: Job) -> None:
        """Rewrite the people's copy from the record (on a filesystem without ACLs its owner may have
        edited it; a copy written before ACLs were used becomes root's)."""
        self._save_copy(job.id, job.uid, tomli_w.dumps(job_to_dict(job)).encode())

    def _save_copy(self, job_id: int, uid: int, data: bytes) -> None:
        # derived from the record and rewritten at every change (and at recovery), so no fsync needed
        if not atomic_write(self.status_path(job_id), data, mode=0o400, reader_uid=uid, durable=False):
            self._no_acl(self.status_dir)

    def _no_acl(self, directory: str) -> None:
        if not self._said_no_acl:
            self._said_no_acl = True
            self.say(f"{directory}: this filesystem has no POSIX ACLs, so jobs' logs and status copies are "
                     f"owned by their users (who can read them, but also write them: max_log_size and "
                     f"log_min_free don't bind a job that appends to its own log). Mount it with ACLs "
                     f"(ext4, xfs, btrfs and tmpfs have them) to close this.")

    # rights
    def fix_rights(self) -> int:
        """Once per state directory (and again if ACL support appears): make root's every file that a
        version before ACLs left to users: status copies and logs (then readable by their user through an
        ACL) and the original job files. Returns how many files were changed. Costs a stat per file, once:
        afterwards every write makes its file root's."""
        way = "acl" if all(acl.supported(d) for d in (self.status_dir, self.logs_dir)) else "owner"
        self.users_own_copies = way == "owner"
        if way == "owner":
            self._no_acl(self.logs_dir)
        marker = os.path.join(self.root, RIGHTS_FILE)
        try:
            with open(marker) as f:
                if f.read().strip() == way:
                    return 0
        except FileNotFoundError:
            pass
        fixed = _fix_dir(self.jobs_dir, 0o400, share=False)
        if way == "acl":
            fixed += _fix_dir(self.status_dir, 0o400, share=True) + _fix_dir(self.logs_dir, 0o600, share=True)
        atomic_write(marker, f"{way}\n".encode(), mode=0o644)
        return fixed

    # reads
    def read_result(self, job_id: int, attempt: int, token: str = "") -> dict[str, Any] | None:
        try:
            with open(self.result_path(job_id, attempt, token), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {"error": "unreadable result file"}

    def load_job(self, name: str) -> Job:
        with open(os.path.join(self.jobs_dir, name), "rb") as f:
            d = tomllib.load(f)
        spec = None
        if d.get("state") != "rejected":
            index = int(d.get("array_index", 0))
            name = d.get("name")
            if d.get("array_id") and name:
                name = sweep.base_name(name, index)          # the element's spec re-made from its file
            with open(self.source_path(int(d["id"])), "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, d.get("source", ""), name)
                if self._parsed is not None and self._parsed[0] == key:
                    spec = self._parsed[1]                  # an array's elements share one file: parsed once
                else:
                    spec = jobfile.parse(f.read(), d.get("source", ""), owner_is_root=True, default_name=name)
                    self._parsed = (key, spec)
            if d.get("array_id"):
                spec = sweep.element(spec, index, int(d["array_id"]))
        return job_from_dict(d, spec)

    def load_jobs_safely(self, on_error: Callable[[str, Exception], None]) -> Iterator[Job]:
        """Every job with a status file, by id. A record the snapshot saw unchanged comes from it
        (snapshot.py); any other is read from its files, the spec re-read from the stored original file. A
        file that can't be read is reported through on_error and skipped, never fatal. Afterwards
        stale_copies holds the jobs whose people's copy may be missing or older than their record (and, where
        there are no ACLs, every live job's: its owner could have edited it)."""
        snap = snapshot.read(os.path.join(self.root, snapshot.NAME))
        records: list[tuple[int, str, snapshot.Key]] = []
        with os.scandir(self.jobs_dir) as it:
            for e in it:
                if not e.name.endswith(".status.toml") or not e.name[0].isdigit():
                    continue
                try:
                    key = snapshot.key_of(e.stat(follow_symlinks=False))
                    records.append((int(e.name.split(".", 1)[0]), e.name, key))
                except (OSError, ValueError) as err:
                    on_error(e.name, err)
        records.sort()
        self.stale_copies = set()
        for job_id, name, key in records:
            taken = snap.take(job_id, key) if snap else None
            if taken is not None:
                job, self.lines.by_id[job_id] = taken
            else:
                try:
                    job = self.load_job(name)
                except Exception as e:  # noqa: BLE001
                    on_error(name, e)
                    continue
                self.lines.saved(job, key)
                # A record the snapshot saw had its copy written right after it, before that clean stop; one
                # written since may have lost its copy to a crash
                try:
                    if os.lstat(self.status_path(job_id)).st_mtime_ns < key[2]:
                        self.stale_copies.add(job_id)
                except FileNotFoundError:
                    self.stale_copies.add(job_id)
            if self.users_own_copies and job.state not in FINAL:
                self.stale_copies.add(job_id)             # its owner may have edited it: rewritten soon
            yield job

    def write_snapshot(self, skip: set[int] = frozenset()) -> int:
        """Write the snapshot of every job loaded or saved, but those in skip (the daemon's records whose last
        write failed: their file is the truth). Returns how many jobs it holds."""
        return self.lines.write(os.path.join(self.root, snapshot.NAME), time.time_ns(), skip)

    # expiry
    def remove_job(self, job_id: int) -> int:
        """Remove a final job: its status copy, original file, log, result files, and its record last (so
        a crash halfway leaves a record to expire again, never files nobody knows of). Returns the bytes
        freed. Never follows a link; missing files are fine. Raises ValueError if the record says the job is
        still queued or active."""
        return self.remove_jobs([job_id])

    def remove_jobs(self, job_ids: Iterable[int], results: bool = True) -> int:
        """remove_job for many jobs, listing results/ once (not at all with results=False: for rejected
        jobs, which never have one)."""
        ids = sorted(set(job_ids))
        for job_id in ids:
            state = self._recorded_state(job_id)
            if state is not None and state not in FINAL:
                raise ValueError(f"job {job_id} is {state}: only a finished job can be removed")
        wanted = {str(i) for i in ids}
        found = []
        try:
            with os.scandir(self.results_dir) if results else nullcontext(iter(())) as it:
                for e in it:
                    # <id>.<attempt>[.<token>].json, and a monitor's temp file .<id>.<attempt>....tmp
                    if e.name.lstrip(".").split(".", 1)[0] in wanted:
                        found.append(e.path)
        except FileNotFoundError:
            pass
        freed = sum(_unlink(p) for p in found)
        for job_id in ids:
            self.lines.forget(job_id)
            freed += sum(_unlink(p) for p in (self.status_path(job_id), self.source_path(job_id),
                                               self.log_path(job_id)))
            freed += _unlink(self.record_path(job_id))
        return freed

    def _recorded_state(self, job_id: int) -> State | None:
        try:
            with open(self.record_path(job_id), "rb") as f:
                return State(tomllib.load(f)["state"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"job {job_id}: record unreadable ({e}); not removed") from e


def _fix_dir(directory: str, mode: int, *, share: bool) -> int:
    """Make every regular file in directory that isn't root's root's, with mode; share: readable by its old
    owner (the job's user: a user can't give a file away) through an ACL. Never follows a link."""
    fixed = 0
    with os.scandir(directory) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or not acl.is_user_writable(st):
                    continue
                fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                now = os.fstat(fd)
                if stat.S_ISREG(now.st_mode) and now.st_ino == st.st_ino:
                    if share:
                        acl.share(fd, now.st_uid, mode)
                    else:
                        os.fchmod(fd, mode)
                        os.fchown(fd, os.geteuid(), os.getegid())
                    fixed += 1
            finally:
                os.close(fd)
    return fixed


def _syncfs(path: str) -> None:
    """syncfs(2) of the filesystem that holds path: everything written there is on disk when it returns."""
    import ctypes
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)


def _unlink(path: str) -> int:
    """Unlink path (never following a link). Returns the bytes that frees: 0 if it was missing, or if other
    hard links keep its data (a link its user made while the file was theirs: before ACLs, or without)."""
    try:
        st = os.lstat(path)
        os.unlink(path)
    except FileNotFoundError:
        return 0
    except IsADirectoryError:
        return 0                          # not something this store writes: leave it
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return 0
    return st.st_blocks * 512
