"""The listing files: the queue as the daemon renders it under /run/gpusched/listing, and their reader.

`gpuschedctl list` at 100,000 queued jobs spent most of its time on the bus (20 pages, each unpacked by
pydbus) and on importing PyGObject. So the daemon also writes the live listing (queued and running jobs) to
files that gpuschedctl reads directly (listpublish.py writes them); the bus stays the way for `--all`, for
what the files can't say, and whenever they are missing, from a daemon that is gone, or being replaced.
This module is the format and the client's reader; it imports nothing heavy, so a read command stays cheap.

The directory is root's and nobody else writes it; every file is root's, written atomically (atomicfile),
never through a link:

    index             JSON: format, the daemon's pid and start time (so a reader knows the files are its),
                      the table's header, admin_gid, whether private files exist, and the segments that
                      are current: [[k, gen], ...]. Written after the files it names.
    <k>.<gen>         segment k (job ids k*SEGMENT to (k+1)*SEGMENT-1) as rendered at generation gen, mode
                      0644: a JSON header line, then the table's rows, the folded table's rows and each
                      table's submission times (for "3m ago").
    <k>.<gen>.json    its jobs' public JSON entries, one per line (",\\n" between them), after a header line that says whose they
                      are ("runs": [[uid, n], ...] in id order), mode 0644.
    <k>.<gen>.<uid>   the full JSON entries (one per line) of uid's jobs in that segment: mode 0400, root's,
                      readable by uid alone through an ACL (acl.py). Not written where ACLs are missing.

What a reader may see is access.py's rule: everyone sees every job's public entry (the queue, as squeue
shows it); a job's private fields (listing.PRIVATE_FIELDS) only its owner and root, from the private files,
which the kernel lets only them open. Admins who are not root read their JSON from the bus.

Freshness: a file is never changed in place: a segment re-rendered gets a new name, the index then names
it, and only then is the old one removed; so a reader sees one consistent generation, or (a removed file)
reads the index again. The daemon brings the files up to date before it answers a call that changed jobs
(an act, a submission's Lookup), so a `list` after `submit` or `cancel` shows it; other changes show within
listpublish.DEBOUNCE (longer while rendering is costly: see there).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Callable, TypeVar

DIRECTORY = "/run/gpusched/listing"
FORMAT = 1
SEGMENT = 4096                       # job ids per segment: what one change costs to render again
PARTS = ("rows", "folded", "submitted", "folded_submitted")
MAX_INDEX = 16 << 20                 # bytes; the index names at most one segment per live job
# between JSON entries in the JSON files: a JSON array's own separator, so a reader copies a file's entries
# into its output as they are; json.dumps never writes a line break inside an entry, so it splits them too
ENTRY_SEP = b",\n"
ATTEMPTS = 3                         # reads of a generation that changed under the reader, before the bus

T = TypeVar("T")


class Unusable(Exception):
    """The files can't answer this (missing, not the running daemon's, changing too fast, or not for this
    reader): ask the bus."""


def segment_name(k: int, gen: int, part: int | str | None = None) -> str:
    """A segment's table file, its public JSON (part "json") or a uid's private file (part uid)."""
    return f"{k}.{gen}" if part is None else f"{k}.{gen}.{part}"


def encode_segment(header: dict[str, Any], parts: dict[str, bytes]) -> bytes:
    """A segment file: its header (with each part's size in bytes), then the parts in PARTS order."""
    head = dict(header, parts=[len(parts[p]) for p in PARTS])
    return json.dumps(head).encode() + b"\n" + b"".join(parts[p] for p in PARTS)


def decode_segment(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(header, parts) of a segment file; raises Unusable if it is not one."""
    head_end = data.find(b"\n")
    try:
        header = json.loads(data[:head_end])
        sizes = header["parts"]
        if head_end < 0 or len(sizes) != len(PARTS) or head_end + 1 + sum(sizes) != len(data):
            raise ValueError("sizes")
    except (ValueError, KeyError, TypeError):
        raise Unusable("a segment file is malformed") from None
    parts, at = {}, head_end + 1
    for name, size in zip(PARTS, sizes):
        parts[name] = data[at:at + size]
        at += size
    return header, parts


def process_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat's 22nd field): with the pid, it names
    one process for the life of the machine. None if there is no such process (or it can't be seen)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    try:
        return int(text.rsplit(b")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def read_root_file(path: str, limit: int | None = None, head_only: bool = False) -> bytes:
    """A file's bytes (head_only: its first line) if it is a regular file that root owns and only root may
    write (never through a link); else Unusable. FileNotFoundError passes (the caller may retry: a
    generation was replaced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise Unusable(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise Unusable(f"{path} is not a root-only file")
        if limit is not None and st.st_size > limit:
            raise Unusable(f"{path} is over {limit} bytes")
        return f.readline() if head_only else f.read()


def _head(data: bytes, k: int, gen: int, **more: Any) -> tuple[dict[str, Any], bytes]:
    """A JSON-lines file's header, checked against what the index said, and the rest."""
    head, _, body = data.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        raise Unusable("a listing file is malformed") from None
    if not isinstance(header, dict) or header.get("gen") != gen or header.get("seg") != k or \
            any(header.get(key) != value for key, value in more.items()):
        raise Unusable("a listing file does not match the index")
    return header, body


class Listing:
    """One generation of the listing files, as the index names it."""

    def __init__(self, directory: str, index: dict[str, Any]):
        self.directory = directory
        self.index = index
        self.header: str = index["header"]
        self.admin_gid: int | None = index.get("admin_gid")
        self.private: bool = bool(index.get("private"))
        self.segments: list[tuple[int, int]] = [(int(k), int(g)) for k, g in index["segments"]]

    def _path(self, k: int, gen: int, part: int | str | None = None) -> str:
        return os.path.join(self.directory, segment_name(k, gen, part))

    def _segment(self, k: int, gen: int) -> dict[str, bytes]:
        header, parts = decode_segment(read_root_file(self._path(k, gen)))
        if header.get("gen") != gen or header.get("seg") != k:
            raise Unusable("a segment file does not match the index")
        return parts

    def _private(self, k: int, gen: int, uid: int) -> list[bytes]:
        _, body = _head(read_root_file(self._path(k, gen, uid)), k, gen, uid=uid)
        return body.split(ENTRY_SEP) if body else []

    def table(self, folded: bool, with_submitted: bool = False) -> tuple[list[bytes], list[int]]:
        """The table's rows, one chunk per segment ("\\n" between rows, none at the end), and each row's
        submission time when asked for (else [])."""
        chunks, submitted = [], []
        part, times = ("folded", "folded_submitted") if folded else ("rows", "submitted")
        for k, gen in self.segments:
            parts = self._segment(k, gen)
            if parts[part]:
                chunks.append(parts[part])
                if with_submitted:
                    submitted.extend(int(t) for t in parts[times].split())
        return chunks, submitted

    def entries(self, uid: int) -> list[bytes]:
        """The JSON entries as `uid` may see them: chunks of entries separated by ENTRY_SEP. Each job's full
        entry where uid is its owner or root (from the private files, which only they can open), its public
        entry otherwise. Unusable for an admin who is not root (they see more: the bus has it), and where
        the daemon could not write private files (no ACLs) and uid has jobs here."""
        if uid != 0 and self.admin_gid is not None and self.admin_gid in os.getgroups():
            raise Unusable("an admin's entries come from the bus")
        chunks = []
        for k, gen in self.segments:
            path = self._path(k, gen, "json")
            header, _ = _head(read_root_file(path, head_only=True), k, gen)
            runs = [(int(u), int(n)) for u, n in header["runs"]]      # [[uid, n], ...] in id order
            mine = {u for u, _ in runs if u == uid or uid == 0}
            if mine and not self.private:
                raise Unusable("no private listing files here (no ACLs)")
            if len(runs) == 1 and mine:                   # all theirs (or root's): the private file as it is
                chunks.append(_head(read_root_file(self._path(k, gen, runs[0][0])), k, gen, uid=runs[0][0])[1])
                continue
            public: list[bytes] = []
            if uid != 0:                                  # root sees every entry in full: no public ones
                _, body = _head(read_root_file(path), k, gen)
                if not mine:
                    chunks.append(body)                  # nothing of theirs here: the file as it is
                    continue
                public = body.split(ENTRY_SEP)
            full = {u: self._private(k, gen, u) for u in mine}
            taken = dict.fromkeys(mine, 0)
            lines, at = [], 0
            for u, n in runs:
                if u in full:
                    lines.extend(full[u][taken[u]:taken[u] + n])
                    taken[u] += n
                elif len(public) >= at + n:
                    lines.extend(public[at:at + n])
                else:
                    raise Unusable("a listing file does not match its segment")
                at += n
            if any(taken[u] != len(full[u]) for u in mine):
                raise Unusable("a private listing file does not match its segment")
            chunks.append(ENTRY_SEP.join(lines))
        return chunks


def _index(directory: str) -> Listing:
    try:
        raw = read_root_file(os.path.join(directory, "index"), MAX_INDEX)
    except FileNotFoundError:
        raise Unusable("no listing files (gpusched is not running, or has not written them yet)") from None
    try:
        index = json.loads(raw)
        if index.get("format") != FORMAT:
            raise Unusable(f"listing files of format {index.get('format')}, not {FORMAT}")
        start = process_start(int(index["pid"]))
        if start is None or start != index["start"]:
            raise Unusable("the listing files are from a gpusched that is gone")
        return Listing(directory, index)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Unusable("the listing index is malformed") from None


def read(what: Callable[[Listing], T], directory: str = DIRECTORY) -> T:
    """what(listing) over the current generation; read again from the index when a file it named was replaced
    meanwhile (ATTEMPTS times). Raises Unusable when the files can't answer."""
    for _ in range(ATTEMPTS):
        listing = _index(directory)
        try:
            return what(listing)
        except FileNotFoundError:
            continue                                       # replaced by a newer generation: read that
        except (KeyError, TypeError, ValueError):
            raise Unusable("the listing files disagree with each other") from None
    raise Unusable("the listing files changed under every read")
