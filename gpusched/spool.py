"""The spool directory: where users drop job files, and how an entry is taken safely out of their reach.

The spool is root-owned, mode 1733 (like cron's): anyone can create a file, nobody can list it or touch
another's file. Taking an entry is a rename into `.work/` (root only, same filesystem) before it is opened, so
the submitter can no longer swap it; the entry is then read without following links or blocking on FIFOs.
A rejected entry is moved, whatever it is, into `.rejected/` (root only): kept byte for byte.

Names are whatever bytes a user chose (anything but NUL and '/', up to 255 bytes). Python hands them over as
str with undecodable bytes as lone surrogates (os.fsdecode); every name this module gives out, and every
name it creates on disk, is valid UTF-8 (`source_name`, `_work_name`) and fits NAME_MAX in bytes, so no entry
can fail to be taken, recorded or kept because of its name.

The watcher reads inotify itself (ctypes, about 60 lines) instead of through watchdog's Inotify class, whose
fd is created without IN_CLOEXEC (so it leaked into every process the daemon spawned) and whose reader dies
with KeyError on an event from a watch it did not add (a process holding the fd can add one).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import struct
import threading
import time
import traceback
import unicodedata
from dataclasses import dataclass
from typing import Callable

from gpusched.jobfile import MAX_BYTES

WORK = ".work"
REJECTED = ".rejected"
NAME_MAX = 255                # bytes in one path component, on every Linux filesystem the spool can be on
_TEMP_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".part", ".bak", ".kate-swp")


def ignored(name: str) -> bool:
    """Dotfiles and editor or download temp files are never jobs."""
    return (name.startswith((".", "#")) or name.endswith(_TEMP_SUFFIXES) or name.startswith("4913")
            or name.startswith("~"))


# characters that reorder what a terminal shows after them (a name could then pose as another)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _undecodable(c: str) -> bool:
    return "\ud800" <= c <= "\udfff"          # a lone surrogate: how os.fsdecode carries a byte not UTF-8


def unsafe_name(name: str) -> str | None:
    """Why a spool entry's name (as os.listdir gives it) can't name a job, or None."""
    if any(_undecodable(c) for c in name):
        return "file name is not valid UTF-8 (shown with \\xNN for the bytes that aren't)"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "file name contains control characters"
    if any(_reorders(c) for c in name):
        return "file name contains unprintable characters (line separators or text-direction controls)"
    return None


def _reorders(c: str) -> bool:
    return c in _BIDI or c in "\u2028\u2029"


def source_name(name: str) -> str:
    """The name an entry is known by (its job's `source`): the name itself, with each byte that isn't UTF-8
    written as \\xNN, so it can go into TOML, D-Bus and the journal. Control characters are kept: such a
    name is rejected, and whoever prints it escapes it (`--json` stays exact)."""
    if not any(_undecodable(c) for c in name):
        return name
    return "".join(_escape_surrogate(c) if _undecodable(c) else c for c in name)


def _escape_surrogate(c: str) -> str:
    n = ord(c)
    return f"\\x{n - 0xdc00:02x}" if 0xdc80 <= n <= 0xdcff else f"\\u{n:04x}"


def cut_to_bytes(text: str, limit: int) -> str:
    """text's longest prefix of whole characters whose UTF-8 form is at most limit bytes (text: valid
    Unicode, no lone surrogates: pass it through source_name first)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")   # drops a character cut in half, never splits one


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
    """An entry moved into .work/: its lstat, and its bytes if it is a readable regular file.
    name is its source_name (valid UTF-8): the one to pass back to finish_*/put_back and to record."""
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
        """(job id, name) of entries taken but not finished before a crash (the name as kept in .work/)."""
        out = []
        for n in os.listdir(self.work):
            job_id, _, name = n.partition("-")
            if job_id.isdigit() and job_id.isascii():
                out.append((int(job_id), source_name(name)))
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
        name = source_name(name)
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
        for candidate in (name, self._work_name(job_id, name)):
            if len(os.fsencode(candidate)) > NAME_MAX:
                continue                      # an escaped name can be longer than the original
            dest = os.path.join(self.root, candidate)
            if not os.path.lexists(dest):
                try:
                    os.rename(self._work_path(job_id, name), dest)
                except FileNotFoundError:
                    pass
                return candidate
        return self._work_path(job_id, name)

    def expire_rejected(self, older_than: float) -> int:
        """Remove kept rejected entries that were rejected before older_than (epoch seconds). Returns the
        bytes freed. By ctime: the moment the entry was moved here (a rename sets it); the mtime is the
        submitter's to choose. Never follows a link; a rejected directory goes with its contents."""
        freed = 0
        with os.scandir(self.rejected) as it:
            entries = list(it)
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
                if st.st_ctime >= older_than:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    freed += _tree_bytes(e.path)
                    # the fd-based rmtree: safe against links swapped in by someone holding a dir fd
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
                    freed += _freed(st)
            except FileNotFoundError:
                continue
        return freed

    @staticmethod
    def _work_name(job_id: int, name: str) -> str:
        # what an entry is called in .work/ and .rejected/: printable, UTF-8, and at most NAME_MAX bytes with
        # its "<id>-" prefix. The same for an entry's raw name and its source_name, so the daemon can pass
        # either to finish_*/put_back.
        safe = "".join("?" if unicodedata.category(c) == "Cc" or _reorders(c) else c for c in source_name(name))
        prefix = f"{job_id}-"
        return prefix + cut_to_bytes(safe, NAME_MAX - len(prefix))

    def _work_path(self, job_id: int, name: str) -> str:
        return os.path.join(self.work, self._work_name(job_id, name))


def _freed(st: os.stat_result) -> int:
    # a file with other hard links frees nothing when one name goes
    return st.st_blocks * 512 if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode) else 0


def _tree_bytes(path: str) -> int:
    total = 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for n in dirs + files:
            try:
                total += _freed(os.lstat(os.path.join(root, n)))
            except OSError:
                pass
    try:
        total += _freed(os.lstat(path))
    except OSError:
        pass
    return total


# --- the watcher -------------------------------------------------------------------------------------------

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")           # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_BUFFER = 64 * 1024                      # room for at least 240 events of the longest name


def parse_events(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(wd, mask, name) of each event in what one read() of an inotify fd returned; a truncated tail is
    dropped, never an exception."""
    out = []
    off = 0
    while off + _EVENT.size <= len(buf):
        wd, mask, _cookie, length = _EVENT.unpack_from(buf, off)
        off += _EVENT.size
        name = buf[off:off + length].split(b"\0", 1)[0]
        off += length
        out.append((wd, mask, name))
    return out


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes, self.init1.restype = [ctypes.c_int], ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes, self.rm_watch.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int


def _os_error(what: str, path: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", path)


def _default_report(message: str) -> None:
    from gpusched import journal
    journal.send(message, 3, SYSLOG_IDENTIFIER="gpusched")


class SpoolWatcher:
    """Calls on_entry(name) from its own thread for each entry that is complete: closed after writing, moved
    in, or created as something that is never written (a link, FIFO, directory, hard link).

    The inotify fd is close-on-exec from birth. Nothing that happens to it ends the thread: an event of a
    watch it did not add is skipped; if one appears (someone got hold of the fd and added a watch) or its
    own watch goes away, it moves to a fresh inotify instance (no longer shared), reading what was queued on
    the old one first; an error is reported and retried a second later."""

    MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR | IN_DONT_FOLLOW

    def __init__(self, root: str, on_entry: Callable[[str], None],
                 report: Callable[[str], None] | None = None):
        self._root = root
        self._broot = os.fsencode(root)
        self._on_entry = on_entry
        self._report = report or _default_report
        self._libc = _Libc()
        self._stop = False
        self.fd, self._wd = self._open()          # raises OSError if the spool can't be watched now
        self.reopened = 0
        self._thread = threading.Thread(target=self._run, name="spool-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """For tests: end the thread. A close doesn't wake a blocked read, so an event (a dotfile, which is
        never a job) does."""
        self._stop = True
        poke = os.path.join(self._root, f".watcher-stop-{os.getpid()}")
        try:
            os.close(os.open(poke, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            os.unlink(poke)
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(5)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _open(self) -> tuple[int, int]:
        fd = self._libc.init1(IN_CLOEXEC)
        if fd < 0:
            raise _os_error("inotify_init1", self._root)
        wd = self._libc.add_watch(fd, self._broot, self.MASK)
        if wd < 0:
            e = _os_error("inotify_add_watch", self._root)
            os.close(fd)
            raise e
        return fd, wd

    def _run(self) -> None:
        while not self._stop:
            try:
                self._read_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive anything; the daemon rescans too
                if self._stop:
                    return
                self._report(f"spool watcher: {traceback.format_exc()}; retrying in 1 s")
                time.sleep(1)
                self._reopen(drain=False)

    def _read_once(self) -> None:
        fd = self.fd
        if fd < 0:
            self._reopen(drain=False)
            return
        try:
            buf = os.read(fd, _BUFFER)
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            if self._stop:
                return
            raise
        if self._handle(buf):
            self._reopen(drain=True)

    def _handle(self, buf: bytes) -> bool:
        """Announce the spool's entries in buf. True if this fd should be given up (see the class)."""
        give_up = False
        for wd, mask, name in parse_events(buf):
            if wd != self._wd:
                if wd != -1:                      # -1: the queue overflowed; the daemon's rescan covers it
                    give_up = True
                continue
            if mask & IN_IGNORED:
                give_up = True                    # our watch was removed (or the spool itself went)
                continue
            try:
                self._announce(name, mask)
            except Exception:  # noqa: BLE001 - one entry must not cost the others
                self._report(f"spool watcher: entry {name!r}: {traceback.format_exc()}")
        return give_up

    def _announce(self, bname: bytes, mask: int) -> None:
        name = os.fsdecode(bname)
        if not name or ignored(name):
            return
        if mask & IN_CREATE and not mask & IN_ISDIR:
            # a regular file being written: wait for its close; anything else is complete now
            try:
                st = os.lstat(os.path.join(self._root, name))
            except FileNotFoundError:
                return
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                return
        self._on_entry(name)

    def _reopen(self, drain: bool) -> None:
        """Move to a fresh inotify instance. Its watch is in place before the old fd's queue is read and
        the old fd closed, so no event falls between them (one may come twice: harmless, an entry is taken
        once)."""
        old_fd, old_wd = self.fd, self._wd
        failures = 0
        while not self._stop:
            try:
                self.fd, self._wd = self._open()
                break
            except OSError as e:
                if failures % 60 == 0:           # once a minute while the spool can't be watched
                    self._report(f"spool watcher: can't watch {self._root}: {e}; retrying every second")
                failures += 1
                time.sleep(1)
        else:
            return
        self.reopened += 1
        if old_fd >= 0:
            # the old instance outlives our close while anyone else holds it: take our watch off it first
            self._libc.rm_watch(old_fd, old_wd)
            if drain:
                self._drain(old_fd, old_wd)
            os.close(old_fd)
        why = "a watch it did not add appeared, or its own went away" if drain else "after an error"
        self._report(f"spool watcher: moved to a fresh inotify instance ({why})")

    def _drain(self, fd: int, wd: int) -> None:
        os.set_blocking(fd, False)
        for _ in range(64):                   # bounded: whoever else holds the fd may keep it busy
            try:
                buf = os.read(fd, _BUFFER)
            except OSError:
                return                        # EAGAIN: empty
            for ewd, mask, name in parse_events(buf):
                if ewd == wd and not mask & IN_IGNORED:
                    try:
                        self._announce(name, mask)
                    except Exception:  # noqa: BLE001
                        self._report(f"spool watcher: entry {name!r}: {traceback.format_exc()}")
