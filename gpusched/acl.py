"""Files in the state directory that a user may read but never write: root-owned, no group or other access,
and a POSIX ACL entry `user:<uid>:r--` (mask r--) for the job's user.

Why not give the file to the user (the old way): its owner can chmod and write it, so a job could append to
its own log past `max_log_size` and `log_min_free` (it even knows the path, $GPUSCHED_LOG), and a status copy
kept for `keep_finished` could be grown the same way. With an ACL the owner is root and the user can only read.

The ACL goes in as the kernel's binary xattr (`system.posix_acl_access`, include/uapi/linux/posix_acl_xattr.h),
so no libacl or setfacl is needed. Where the filesystem has no ACLs (EOPNOTSUPP), `share` falls back to the old
way, the file owned by the user, so jobs and `gpuschedctl logs` keep working; callers say so in the journal.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)


def encode(entries: list[tuple[int, int, int]]) -> bytes:
    """(tag, perm, id) entries, sorted by tag then id as the kernel requires, as the xattr's bytes."""
    return _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(*e) for e in sorted(entries))


def decode(blob: bytes) -> list[tuple[int, int, int]]:
    """The entries of an access ACL's xattr. Raises ValueError if it is not one."""
    if len(blob) < _HEADER.size or (len(blob) - _HEADER.size) % _ENTRY.size:
        raise ValueError(f"not a POSIX ACL xattr: {len(blob)} bytes")
    (version,) = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise ValueError(f"POSIX ACL xattr version {version}, expected {VERSION}")
    return [_ENTRY.unpack_from(blob, off) for off in range(_HEADER.size, len(blob), _ENTRY.size)]


def read_only_for(uid: int, owner_perm: int) -> bytes:
    """The ACL: the owner keeps owner_perm (rwx bits, 0-7), uid may read, nobody else anything."""
    return encode([(USER_OBJ, owner_perm & 7, UNDEFINED_ID), (USER, 4, uid), (GROUP_OBJ, 0, UNDEFINED_ID),
                   (MASK, 4, UNDEFINED_ID), (OTHER, 0, UNDEFINED_ID)])


def grant_read(fd: int, uid: int) -> bool:
    """Let uid read the open file fd (and nobody else but its owner) through an ACL. False if the filesystem
    has no ACLs; other errors are raised. The kernel sets the mode's group bits to the mask (r), so stat shows
    0640 for a 0600 file: that is the ACL's mask, not the group's right."""
    owner_perm = (os.fstat(fd).st_mode >> 6) & 7
    try:
        os.setxattr(fd, XATTR, read_only_for(uid, owner_perm))
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    return True


def share(fd: int, uid: int, mode: int) -> bool:
    """Make the open regular file fd root's (the caller's: root in production) with mode (owner bits only)
    and readable by uid alone. Returns False where the filesystem has no ACLs: then the file is uid's instead
    (the old way: its owner reads it, but could also write it)."""
    os.fchmod(fd, mode & 0o700)                # first: no moment where group or other can open it
    os.fchown(fd, os.geteuid(), os.getegid())
    if uid == os.geteuid() or grant_read(fd, uid):
        return True
    os.fchown(fd, uid, 0)
    os.fchmod(fd, mode & 0o700)
    return False


def supported(directory: str) -> bool:
    """Whether files in directory can carry an ACL (tried on a temp file there)."""
    path = os.path.join(directory, f".acl-probe.{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        return grant_read(fd, 0)
    finally:
        os.close(fd)
        os.unlink(path)


def is_user_writable(st: os.stat_result) -> bool:
    """Whether a file with this lstat could be written, or chmod'ed, by someone other than root (the
    caller)."""
    return st.st_uid != os.geteuid() or bool(stat.S_IMODE(st.st_mode) & 0o022)
