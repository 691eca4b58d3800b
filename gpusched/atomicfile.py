"""Atomic file replacement: temp file, fsync, rename, fsync of the directory. Used by daemon and monitor."""

from __future__ import annotations

import os

from gpusched import acl


def atomic_write(path: str, data: bytes, *, mode: int = 0o600, uid: int = -1, gid: int = -1,
                 durable: bool = True, reader_uid: int | None = None) -> bool:
    """Replace path with data atomically. durable: also fsync the file and the directory. reader_uid: the
    file is root's (mode's owner bits only) and that user may read it through an ACL (acl.share; uid and gid
    are then ignored). Returns False only if reader_uid was given and the filesystem has no ACLs: the file
    is then reader_uid's, the old way."""
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        if reader_uid is not None:
            shared = acl.share(fd, reader_uid, mode)
        else:
            shared = True
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(d)
    return shared


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Reserved:
    """An atomic write whose space is taken in advance: the temp file is created and its blocks allocated
    (fallocate) now, while there is room; commit() later writes into those blocks, fsyncs and renames. So
    a job's result lands even if the filesystem has filled up meanwhile (by its own output, or anyone's).
    Data larger than the reservation still goes in, if there is room for the rest."""

    def __init__(self, path: str, size: int = 16384, *, mode: int = 0o600):
        self.path = path
        d, base = os.path.split(path)
        self.dir = d
        self.tmp = os.path.join(d, f".{base}.{os.getpid()}.reserved.tmp")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(self.fd, mode)
            os.posix_fallocate(self.fd, 0, size)
            os.fsync(self.fd)
        except BaseException:
            self.abandon()
            raise

    def commit(self, data: bytes) -> None:
        view, offset = memoryview(data), 0
        while offset < len(data):
            offset += os.pwrite(self.fd, view[offset:], offset)
        os.ftruncate(self.fd, len(data))
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.rename(self.tmp, self.path)
        fsync_dir(self.dir)

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
