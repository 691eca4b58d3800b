"""gpusched.acl: the xattr format, and for real (as root, on this machine's filesystem) that a shared file is
readable by its user and nobody else, and writable by nobody but root."""

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from gpusched import acl

NOBODY, DAEMON = 65534, 1       # two users that exist on Debian


def test_encode_sorts_entries_and_decode_reads_them_back():
    entries = [(acl.OTHER, 0, acl.UNDEFINED_ID), (acl.USER, 4, 1000), (acl.USER_OBJ, 6, acl.UNDEFINED_ID),
               (acl.MASK, 4, acl.UNDEFINED_ID), (acl.GROUP_OBJ, 0, acl.UNDEFINED_ID)]
    blob = acl.encode(entries)
    assert blob[:4] == b"\x02\x00\x00\x00" and len(blob) == 4 + 5 * 8
    assert acl.decode(blob) == sorted(entries)
    assert [t for t, _, _ in acl.decode(blob)] == [0x01, 0x02, 0x04, 0x10, 0x20]


def test_the_read_only_acl_is_the_one_getfacl_would_show():
    # user::rw- user:1000:r-- group::--- mask::r-- other::---
    assert acl.decode(acl.read_only_for(1000, 6)) == [
        (acl.USER_OBJ, 6, acl.UNDEFINED_ID), (acl.USER, 4, 1000), (acl.GROUP_OBJ, 0, acl.UNDEFINED_ID),
        (acl.MASK, 4, acl.UNDEFINED_ID), (acl.OTHER, 0, acl.UNDEFINED_ID)]


@pytest.mark.parametrize("blob", [b"", b"\x02\x00\x00", b"\x01\x00\x00\x00", b"\x02\x00\x00\x00" + b"x" * 7])
def test_decode_refuses_what_is_not_an_acl(blob):
    with pytest.raises(ValueError):
        acl.decode(blob)


@pytest.fixture
def shared_dir():
    """A directory every user may enter (pytest's tmp_path is root's 0700), on this machine's filesystem."""
    if os.geteuid() != 0:
        pytest.skip("needs root: files are given to root and read as other users")
    d = tempfile.mkdtemp(prefix="gsacl-", dir="/var/tmp")
    try:
        os.chmod(d, 0o755)
        if not acl.supported(d):
            pytest.skip(f"{d}: this filesystem has no POSIX ACLs")
        yield d
    finally:
        shutil.rmtree(d)


def as_user(uid: int, code: str) -> str:
    """Run Python code as uid; returns what it prints."""
    p = subprocess.run([sys.executable, "-c", code], user=uid, group=uid, extra_groups=[], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


TRY = """
import os
path = {path!r}
out = []
for what, f in (("read", lambda: open(path, "rb").read()), ("append", lambda: open(path, "ab")),
                ("chmod", lambda: os.chmod(path, 0o666)), ("unlink", lambda: os.unlink(path))):
    try:
        r = f()
        out.append(f"{{what}}=" + (r.decode() if isinstance(r, bytes) else "ok"))
    except OSError as e:
        out.append(f"{{what}}={{e.errno}}")
print(" ".join(out))
"""


def test_a_shared_file_is_root_s_readable_by_its_user_only(shared_dir):
    path = os.path.join(shared_dir, "7.log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchown(fd, NOBODY, 0)                          # as the old monitor left it: the user's
    os.write(fd, b"hello")
    assert acl.share(fd, NOBODY, 0o600) is True
    os.close(fd)
    st = os.lstat(path)
    # the group bits show the ACL's mask (r), not the group's right: group::--- in the ACL
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640)
    assert acl.decode(os.getxattr(path, acl.XATTR)) == acl.decode(acl.read_only_for(NOBODY, 6))
    # its user reads it and nothing more; any other user not even that
    denied = f"append={errno.EACCES} chmod={errno.EPERM} unlink={errno.EACCES}"
    assert as_user(NOBODY, TRY.format(path=path)) == f"read=hello {denied}"
    assert as_user(DAEMON, TRY.format(path=path)) == f"read={errno.EACCES} {denied}"


def test_a_status_copy_keeps_its_owner_read_only(shared_dir):
    path = os.path.join(shared_dir, "7.toml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o400)
    assert acl.share(fd, NOBODY, 0o400) is True
    os.close(fd)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o440
    assert acl.decode(os.getxattr(path, acl.XATTR))[0] == (acl.USER_OBJ, 4, acl.UNDEFINED_ID)


def test_without_acls_the_file_is_its_user_s_the_old_way(shared_dir, monkeypatch):
    def no_acls(*a):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    monkeypatch.setattr(acl.os, "setxattr", no_acls)
    path = os.path.join(shared_dir, "7.log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    assert acl.share(fd, NOBODY, 0o600) is False
    os.close(fd)
    st = os.lstat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o600)
    assert acl.supported(shared_dir) is False


def test_other_errors_are_not_taken_for_a_missing_feature(shared_dir, monkeypatch):
    def broken(*a):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(acl.os, "setxattr", broken)
    fd = os.open(os.path.join(shared_dir, "x"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):
            acl.grant_read(fd, NOBODY)
    finally:
        os.close(fd)
