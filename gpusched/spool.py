"""The spool directory: where users drop job files, and how an entry is taken safely out of their reach.

The spool is root-owned, mode 1733 (like cron's): anyone can create a file, nobody can list it or touch
another's file. Taking an entry is a rename into `.work/` (root only, same filesystem) before it is opened, so
the submitter can no longer swap it; the entry is then read without following links or blocking on FIFOs.
A rejected entry is moved, whatever it is, into `.rejected/` (root only): kept byte for byte.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from typing import Callable

from gpusched.jobfile import MAX_BYTES

WORK = ".work"
REJECTED = ".rejected"
_TEMP_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".part", ".bak", ".kate-swp")


def ignored(name: str) -> bool:
    """Dotfiles and editor or download temp files are never jobs."""
    return (name.startswith((".", "#")) or name.endswith(_TEMP_SUFFIXES) or name.startswith("4913")
            or name.startswith("~"))


def unsafe_name(name: str) -> str | None:
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "file name contains control characters"
    return None


def classify(st: os.stat_result) -> str | None:
    """Why an entry with this lstat can't be a job file, or None."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link (never followed)"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device node"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if st.st_nlink != 1:
        return f"has {st.st_nlink} hard links (a job file must have exactly one)"
    if st.st_size > MAX_BYTES:
        return f"is larger than {MAX_BYTES} bytes ({st.st_size})"
    return None


@dataclass(frozen=True)
class Taken:
    """An entry moved into .work/: its lstat, and its bytes if it is a readable regular file."""
    path: str
    name: str
    st: os.stat_result
    data: bytes | None
    problem: str | None


class Spool:
    def __init__(self, root: str):
        self.root = root
        self.work = os.path.join(root, WORK)
        self.rejected = os.path.join(root, REJECTED)

    def init(self) -> None:
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise RuntimeError(f"spool {self.root} must be a directory owned by root")
        os.chmod(self.root, 0o1733)
        for d in (self.work, self.rejected):
            os.makedirs(d, mode=0o700, exist_ok=True)
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                raise RuntimeError(f"{d} must be a directory owned by root")
            os.chmod(d, 0o700)

    def entries(self) -> list[str]:
        return sorted(n for n in os.listdir(self.root) if not ignored(n))

    def work_entries(self) -> list[tuple[int, str]]:
        """(job id, original name) of entries taken but not finished before a crash."""
        out = []
        for n in os.listdir(self.work):
            job_id, _, name = n.partition("-")
            if job_id.isdigit():
                out.append((int(job_id), name))
        return sorted(out)

    def take(self, name: str, job_id: int) -> Taken | None:
        """Move spool/<name> to .work/<id>-<name> and read it. None if it vanished first."""
        dest = self._work_path(job_id, name)
        try:
            os.rename(os.path.join(self.root, name), dest)
        except FileNotFoundError:
            return None
        return self.read_taken(job_id, name)

    def read_taken(self, job_id: int, name: str) -> Taken | None:
        path = self._work_path(job_id, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        problem = unsafe_name(name) or classify(st)
        data = None
        if problem is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as e:
                problem = f"can't be opened: {e.strerror}"
            else:
                try:
                    fst = os.fstat(fd)
                    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
                        problem = "changed while it was being read"
                    else:
                        chunks, size = [], 0
                        while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
                            chunks.append(chunk)
                            size += len(chunk)
                        data = b"".join(chunks)
                        if size > MAX_BYTES:
                            problem, data = f"is larger than {MAX_BYTES} bytes", None
                finally:
                    os.close(fd)
        return Taken(path, name, st, data, problem)

    def finish_accepted(self, job_id: int, name: str) -> None:
        try:
            os.unlink(self._work_path(job_id, name))
        except FileNotFoundError:
            pass

    def finish_rejected(self, job_id: int, name: str) -> str:
        """Keep the entry, whatever it is, in .rejected/. Returns where it now is."""
        dest = os.path.join(self.rejected, self._work_name(job_id, name))
        try:
            os.rename(self._work_path(job_id, name), dest)
        except FileNotFoundError:
            pass
        return dest

    def put_back(self, job_id: int, name: str) -> str:
        """Return a taken entry to the spool (it could not be recorded). Returns its name there."""
        for candidate in (name, f"{job_id}-{name}"):
            dest = os.path.join(self.root, candidate)
            if not os.path.lexists(dest):
                try:
                    os.rename(self._work_path(job_id, name), dest)
                except FileNotFoundError:
                    pass
                return candidate
        return self._work_path(job_id, name)

    def _work_name(self, job_id: int, name: str) -> str:
        safe = "".join(c if c.isprintable() and c != "/" else "?" for c in name)
        return f"{job_id}-{safe[:200]}"

    def _work_path(self, job_id: int, name: str) -> str:
        return os.path.join(self.work, self._work_name(job_id, name))


class SpoolWatcher:
    """Calls on_entry(name) from its own thread for each entry that is complete: closed after writing, moved
    in, or created as something that is never written (a link, FIFO, directory, hard link)."""

    def __init__(self, root: str, on_entry: Callable[[str], None]):
        from watchdog.observers.inotify_c import Inotify, InotifyConstants as C
        mask = C.IN_CLOSE_WRITE | C.IN_MOVED_TO | C.IN_CREATE
        self._inotify = Inotify(root.encode(), recursive=False, event_mask=mask)
        self._root = root
        self._on_entry = on_entry
        self._thread = threading.Thread(target=self._run, name="spool-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                events = self._inotify.read_events()
            except OSError as e:
                if e.errno == errno.EBADF:
                    return
                raise
            for ev in events:
                name = os.fsdecode(os.path.basename(ev.src_path))
                if not name or ignored(name):
                    continue
                if ev.is_create and not ev.is_directory:
                    # a regular file being written: wait for its close; anything else is complete now
                    try:
                        st = os.lstat(os.path.join(self._root, name))
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                        continue
                self._on_entry(name)
