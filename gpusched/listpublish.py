"""The daemon's side of the listing files (listfiles.py: the format and why): renders the live listing
(queued and running jobs) into /run/gpusched/listing and keeps it current.

What it costs the daemon, at 100,000 jobs as at 10:
- Only what changed is rendered again: the segments (listfiles.SEGMENT job ids each) holding a changed job,
  or an array's folded row; and in them only the changed jobs' lines (listing.lines): every other job's
  row and JSON entries are read back from the segment's previous files, where they are one line per job in
  id order (_kept). Its cost is the segment's (a few ms), not the queue's.
- Not at every change: the first change after a render arms one timer. It fires after DEBOUNCE, or later
  when rendering is costly: the next render waits BUDGET times the last one's duration after its end, so
  rendering takes at most a fifth of the daemon's time. An idle daemon renders nothing and holds no timer.
- Before answering a call that changed jobs (api.Manager.publish_now: an act such as cancel, or the Lookup
  that tells `submit` its id) what changed is rendered at once, so the caller's next `list` shows it.
- Memory: no copy of the listing is kept, only each segment's job ids and owners (12 bytes a job); a
  per-job cache of rows and JSON, its first design, cost 1 KB a job (100 MB at 100,000). The files are in
  /run (tmpfs): about 100 MB at 100,000 jobs.

If the directory can't be made safe (not root's, a link, writable by others) or a write fails, the index is
removed and the journal says so once: gpuschedctl then reads from the bus, as before.
"""

from __future__ import annotations

import ctypes
import grp
import json
import os
import stat
import time
from array import array
from typing import Any, Callable, Iterable, NamedTuple

from gpusched import acl, listfiles, listing
from gpusched.atomicfile import atomic_write
from gpusched.listing import HEADER

DEBOUNCE = 0.1        # seconds from a change to the render that shows it (unless an act asked for it sooner)
BUDGET = 4            # a render waits BUDGET times its own duration after the last one ended
RETRY = 60.0          # seconds before trying again after a failed write

Later = Callable[[float, Callable[[], Any]], None]      # call fn once, that many seconds from now
Lines = tuple[bytes, bytes, "bytes | None"]             # a job's table row, public entry, full entry


class Current(NamedTuple):
    """A segment's generation in the files: its number, the uids given a private file, its job ids in order
    and their owners' uids (12 bytes a job: all the daemon keeps of the listing, to read its lines back)."""
    gen: int
    private: list[int]
    ids: array
    owners: array


def admin_gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid if group else None
    except KeyError:
        return None


class Publisher:
    def __init__(self, engine: Any, later: Later, log: Callable[..., None], *,
                 directory: str = listfiles.DIRECTORY, admin_group: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.later = later
        self.log = log
        self.directory = directory
        self.clock = clock
        self.admin_gid = admin_gid(admin_group)
        self.ok = False                                  # the directory is ours and writable
        self.private = False                             # private files can be made readable by their user alone
        self._current: dict[int, Current] = {}          # segment -> what its files hold
        self._fresh: dict[int, set[int]] = {}            # segment -> its jobs changed since it was rendered
        self._rescan = False                             # the files were lost: find every segment's jobs again
        self._fold_at: dict[int, int] = {}               # array id -> the job id its folded row is shown at
        self._dirty: set[int] = set()                    # segments to render again
        self._gen = 0
        self._armed = False
        self._last_cost = 0.0
        self._last_end = 0.0
        self._failed_at: float | None = None
        self.renders = 0                                 # for tests and stats
        engine.listing.watch(self.changed)

    # --- the directory -------------------------------------------------------------------------------

    def start(self) -> None:
        """Make the directory (root's, 0755, not a link), empty it of an earlier daemon's files. Said once in
        the journal when that can't be done: the listing then comes from the bus only."""
        try:
            for d in (os.path.dirname(self.directory), self.directory):
                try:
                    os.mkdir(d, 0o755)
                except FileExistsError:
                    pass
                st = os.lstat(d)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                    raise OSError(0, f"{d} is not a directory that only root may write")
            self._clear()
            self.private = acl.supported(self.directory)
            self.ok = True
        except OSError as e:
            self.log(f"no listing files in {self.directory} ({e.strerror or e}); gpuschedctl list reads from "
                     f"the bus", 4)

    def _clear(self) -> None:
        """Remove every file here (the index first, so no reader trusts what follows)."""
        for name in sorted(os.listdir(self.directory), key=lambda n: n != "index"):
            path = os.path.join(self.directory, name)
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)
        self._current.clear()

    def close(self) -> None:
        """At a clean stop: readers go to the bus (and, with no daemon there, to the status files)."""
        if self.ok:
            try:
                os.unlink(os.path.join(self.directory, "index"))
            except OSError:
                pass

    # --- when to render ------------------------------------------------------------------------------

    def changed(self) -> None:
        """A job changed (listing.invalidate): render soon, once, whatever more changes meanwhile."""
        if self._armed or not self.ok:
            return
        self._armed = True
        now = self.clock()
        wait = max(DEBOUNCE, self._last_end + BUDGET * self._last_cost - now)
        if self._failed_at is not None:
            wait = max(wait, self._failed_at + RETRY - now)
        self.later(wait, self._due)

    def _due(self) -> bool:
        self._armed = False
        self.publish()
        return False

    def publish_now(self) -> None:
        """Before answering a call that changed jobs: what changed is in the files when the answer goes."""
        if self._failed_at is None:
            self.publish()

    def publish(self) -> None:
        if not self.ok:
            return
        t0 = self.clock()
        try:
            if not self._render():
                return                                   # nothing changed: no cost to budget for
            _trim()
        except OSError as e:
            self._failed(e)
        else:
            self._failed_at = None
        self._last_end = self.clock()
        self._last_cost = self._last_end - t0
        stats = getattr(self.engine, "stats", None)      # gpuschedctl's Stats, and bench/run, show it
        if isinstance(stats, dict):
            stats["last_listing_seconds"] = self._last_cost
            stats["max_listing_seconds"] = max(stats.get("max_listing_seconds", 0.0), self._last_cost)
            stats["listing_renders"] = self.renders

    def _failed(self, e: OSError) -> None:
        if self._failed_at is None:
            self.log(f"can't write the listing files in {self.directory} ({e.strerror}); gpuschedctl list reads "
                     f"from the bus until they can be written (tried again every {RETRY:.0f}s)", 4)
        self._failed_at = self.clock()
        try:
            self._clear()
        except OSError:
            pass
        self._dirty = {i // listfiles.SEGMENT for i in self.engine.live}
        self._fresh.clear()                              # no files to keep lines from: every job is rendered
        self._rescan = True
        if not self._armed:
            self._armed = True
            self.later(RETRY, self._due)

    # --- rendering -----------------------------------------------------------------------------------

    def _render(self) -> bool:
        """Render what changed; False if nothing had."""
        live, jobs = self.engine.live, self.engine.jobs
        arrays = set()
        for job_id, array_id in self.engine.listing.take_changed().items():
            k = job_id // listfiles.SEGMENT
            self._dirty.add(k)
            self._fresh.setdefault(k, set()).add(job_id)
            job = jobs.get(job_id)
            array_id = job.array_id if job is not None else array_id
            if array_id:
                arrays.add(array_id)
        for array_id in arrays:
            self._refold(array_id)
        if not self._dirty:
            return False
        members = self._members(live)
        self._gen += 1
        gone = []
        for k, ids in sorted(members.items()):
            old = self._current.pop(k, None)
            if old is not None:
                gone.append((k, old))
            if ids:
                kept = self._kept(k, old, self._fresh.get(k, ())) if old is not None else {}
                private = self._write_segment(k, self._gen, ids, kept)
                self._current[k] = Current(self._gen, private, array("q", ids),
                                           array("I", [live[i].uid for i in ids]))
        self._dirty.clear()
        self._fresh.clear()
        self._write_index()
        for k, old in gone:                               # now that no index names them
            for part in [None, "json", *old.private]:
                name = listfiles.segment_name(k, old.gen, part)
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
        self.renders += 1
        return True

    def _members(self, live: dict[int, Any]) -> dict[int, list[int]]:
        """The live jobs of each dirty segment, in id order. A job enters or leaves the live set only through
        a change (listing.invalidate), so they are the ones its files held and the ones changed since; after
        the files were lost (_rescan), one pass over the live set."""
        if self._rescan:
            members: dict[int, list[int]] = {k: [] for k in self._dirty}
            for job_id in live:                           # one pass, whatever the number of segments
                k = job_id // listfiles.SEGMENT
                if k in members:
                    members[k].append(job_id)
            self._rescan = False
            return {k: sorted(ids) for k, ids in members.items()}
        out = {}
        for k in self._dirty:
            old = self._current.get(k)
            ids = self._fresh.get(k, set()).union(old.ids if old is not None else ())
            out[k] = sorted(i for i in ids if i in live)
        return out

    def _refold(self, array_id: int) -> None:
        """Where an array's folded row goes (its first live job, as answers.folder puts it): both the segment
        it was at and the one it is at now are rendered again (its counts changed, or its place)."""
        live = self.engine.live
        first = min((i for i in self.engine.array_members(array_id).values() if i in live), default=None)
        old = self._fold_at.pop(array_id, None)
        if old is not None:
            self._dirty.add(old // listfiles.SEGMENT)
        if first is not None:
            self._fold_at[array_id] = first
            self._dirty.add(first // listfiles.SEGMENT)

    def _kept(self, k: int, old: Current, fresh: Iterable[int]) -> dict[int, Lines]:
        """The lines of segment k's previous generation for the jobs that did not change since (id -> table
        row, public entry, full entry or None where private files are not written), read back from its files:
        the daemon keeps no copy of them (a per-job cache cost 1 KB per job). Empty, so that the whole
        segment is rendered from its jobs, where the files don't agree with what was written."""
        try:
            _, parts = listfiles.decode_segment(self._read(k, old.gen))
            rows = parts["rows"].split(b"\n")
            public = self._read(k, old.gen, "json").partition(b"\n")[2].split(listfiles.ENTRY_SEP)
            full = {u: iter(self._read(k, old.gen, u).partition(b"\n")[2].split(listfiles.ENTRY_SEP))
                    for u in old.private}
            if not len(old.ids) == len(old.owners) == len(rows) == len(public):
                raise ValueError("a segment's files disagree")
            fresh = set(fresh)
            kept = {}
            for job_id, uid, row, pub in zip(old.ids, old.owners, rows, public):
                entries = full.get(uid)
                entry = next(entries) if entries is not None else None     # StopIteration: a file too short
                if job_id not in fresh:
                    kept[job_id] = (row, pub, entry)
            if any(next(entries, None) is not None for entries in full.values()):
                raise ValueError("a private file has more entries than its segment")
            return kept
        except (OSError, ValueError, StopIteration, listfiles.Unusable) as e:
            self.log(f"listing segment {k} rendered again from its jobs: its files can't be reused ({e})", 4)
            return {}

    def _read(self, k: int, gen: int, part: int | str | None = None) -> bytes:
        fd = os.open(os.path.join(self.directory, listfiles.segment_name(k, gen, part)),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def _write_segment(self, k: int, gen: int, ids: list[int], kept: dict[int, Lines]) -> list[int]:
        """Segment k's files at gen: the lines in `kept` as they were, every other job's rendered now.
        Returns the uids given a private file."""
        live, fold_at, array_row = self.engine.live, self._fold_at, self.engine.array_row
        rows, folded, public, submitted, folded_submitted = [], [], [], [], []
        private: dict[int, list[bytes]] = {}
        runs: list[list[int]] = []
        for job_id in ids:
            job = live[job_id]
            lines = kept.get(job_id)
            if lines is None or (lines[2] is None and self.private):
                full, pub, text = listing.lines(job)
                row, entry = text.encode(), full.encode()
                public.append(pub.encode())
            else:
                row, pub_line, entry = lines
                public.append(pub_line)
            rows.append(row)
            when = b"%d" % job.submitted
            submitted.append(when)
            at = fold_at.get(job.array_id) if job.array_id else None
            if at is None:
                folded.append(row)
                folded_submitted.append(when)
            elif at == job_id:
                folded.append(array_row(job.array_id).encode())
                folded_submitted.append(when)
            if self.private:
                private.setdefault(job.uid, []).append(entry)
            if runs and runs[-1][0] == job.uid:
                runs[-1][1] += 1
            else:
                runs.append([job.uid, 1])
        parts = {"rows": b"\n".join(rows), "folded": b"\n".join(folded), "submitted": b" ".join(submitted),
                 "folded_submitted": b" ".join(folded_submitted)}
        uids = sorted(private)
        for uid in uids:                                 # first: the index names none of them yet
            head = json.dumps({"gen": gen, "seg": k, "uid": uid}).encode()
            data = head + b"\n" + listfiles.ENTRY_SEP.join(private[uid])
            path = os.path.join(self.directory, listfiles.segment_name(k, gen, uid))
            if not atomic_write(path, data, mode=0o400, reader_uid=uid if uid else None, durable=False):
                os.unlink(path)                          # the ACL was refused after all: never the user's file
                raise OSError(0, "the filesystem refused an ACL")
        head = json.dumps({"gen": gen, "seg": k, "runs": runs}).encode()
        atomic_write(os.path.join(self.directory, listfiles.segment_name(k, gen, "json")),
                     head + b"\n" + listfiles.ENTRY_SEP.join(public), mode=0o644, durable=False)
        atomic_write(os.path.join(self.directory, listfiles.segment_name(k, gen)),
                     listfiles.encode_segment({"gen": gen, "seg": k}, parts), mode=0o644, durable=False)
        return uids

    def _write_index(self) -> None:
        index = {"format": listfiles.FORMAT, "pid": os.getpid(), "start": listfiles.process_start(os.getpid()),
                 "written": time.time(), "header": HEADER, "admin_gid": self.admin_gid, "private": self.private,
                 "segments": [[k, c.gen] for k, c in sorted(self._current.items())]}
        atomic_write(os.path.join(self.directory, "index"), json.dumps(index).encode(), mode=0o644, durable=False)


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim     # glibc's
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_trim()


def _trim() -> None:
    """Give the heap's free memory back to the system (glibc's malloc_trim; nothing where there is none).
    A render reads a segment's files back and writes them anew: megabytes of temporaries, freed at once,
    which glibc keeps otherwise (measured: 10 MB at 100,000 jobs, 3 MB at 10,000; the call takes under 1 ms)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
