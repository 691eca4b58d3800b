import os
import socket
import stat

import pytest

from gpusched.jobfile import MAX_BYTES
from gpusched.spool import REJECTED, WORK, Spool, classify, ignored, unsafe_name

JOB = b'command = "python train.py"\n'


@pytest.fixture
def spool(tmp_path):
    # Spool.init() insists on root-owned directories; build the layout by hand instead
    root = tmp_path / "spool"
    root.mkdir()
    (root / WORK).mkdir(mode=0o700)
    (root / REJECTED).mkdir(mode=0o700)
    return Spool(str(root))


# --- ignored / unsafe_name ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    ".work", ".rejected", ".hidden.toml", ".job.toml.swp", "job.toml~", "#job.toml#", "job.toml.swp",
    "job.toml.swo", "job.toml.swx", "job.tmp", "job.toml.part", "job.toml.bak", "job.toml.kate-swp", "4913",
    "4913.toml", "~lock.job.toml#",
])
def test_ignored_names(name):
    assert ignored(name)


@pytest.mark.parametrize("name", ["job.toml", "train", "my-job.TOML", "job.toml.txt", "49", "a~b", "x#"])
def test_job_names_are_not_ignored(name):
    assert not ignored(name)


@pytest.mark.parametrize("name", ["a\nb.toml", "tab\there", "esc\x1b[31m", "del\x7f", "\x00"])
def test_control_characters_are_unsafe(name):
    assert unsafe_name(name) == "file name contains control characters"


@pytest.mark.parametrize("name", ["job.toml", "spaces are fine.toml", "ünïcødé.toml", "a;b&c"])
def test_ordinary_names_are_safe(name):
    assert unsafe_name(name) is None


# --- classify ----------------------------------------------------------------------------------------------------

def test_classify_regular_file(tmp_path):
    p = tmp_path / "job.toml"
    p.write_bytes(JOB)
    assert classify(os.lstat(p)) is None


def test_classify_symlink(tmp_path):
    (tmp_path / "target").write_bytes(JOB)
    os.symlink(tmp_path / "target", tmp_path / "link")
    assert classify(os.lstat(tmp_path / "link")) == "is a symbolic link (never followed)"


def test_classify_dangling_symlink(tmp_path):
    os.symlink("/nonexistent/nowhere", tmp_path / "link")
    assert classify(os.lstat(tmp_path / "link")) == "is a symbolic link (never followed)"


def test_classify_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert classify(os.lstat(tmp_path / "fifo")) == "is a FIFO"


def test_classify_directory(tmp_path):
    (tmp_path / "d").mkdir()
    assert classify(os.lstat(tmp_path / "d")) == "is a directory"


def test_classify_socket(tmp_path):
    path = str(tmp_path / "s")
    if len(path) >= 100:
        pytest.skip("tmp path too long for a unix socket")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        assert classify(os.lstat(path)) == "is a socket"


def test_classify_device_node():
    assert classify(os.lstat("/dev/null")) == "is a device node"


def test_classify_hard_link(tmp_path):
    (tmp_path / "a").write_bytes(JOB)
    os.link(tmp_path / "a", tmp_path / "b")
    assert classify(os.lstat(tmp_path / "b")) == "has 2 hard links (a job file must have exactly one)"


def test_classify_big_file(tmp_path):
    p = tmp_path / "big"
    with open(p, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    assert classify(os.lstat(p)) == f"is larger than {MAX_BYTES} bytes ({MAX_BYTES + 1})"


def test_classify_file_of_exactly_max_bytes(tmp_path):
    p = tmp_path / "max"
    with open(p, "wb") as f:
        f.truncate(MAX_BYTES)
    assert classify(os.lstat(p)) is None


# --- entries / take ------------------------------------------------------------------------------------------------

def test_entries_skip_dotfiles_and_temp_files(spool):
    root = spool.root
    for name in ("b.toml", "a.toml", ".hidden", "c.toml~", "d.swp"):
        with open(os.path.join(root, name), "wb") as f:
            f.write(JOB)
    assert spool.entries() == ["a.toml", "b.toml"]


def test_take_moves_the_entry_into_work_and_reads_it(spool):
    src = os.path.join(spool.root, "job.toml")
    with open(src, "wb") as f:
        f.write(JOB)
    taken = spool.take("job.toml", 7)
    assert taken is not None
    assert taken.problem is None
    assert taken.data == JOB
    assert taken.name == "job.toml"
    assert taken.path == os.path.join(spool.root, WORK, "7-job.toml")
    assert not os.path.exists(src)
    assert os.path.exists(taken.path)
    assert stat.S_ISREG(taken.st.st_mode)
    assert spool.entries() == []
    assert spool.work_entries() == [(7, "job.toml")]


def test_take_of_a_vanished_entry(spool):
    assert spool.take("gone.toml", 3) is None


def test_take_of_a_symlink_does_not_follow_it(spool, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b'command = "cat /etc/shadow"\n')
    os.symlink(secret, os.path.join(spool.root, "evil.toml"))
    taken = spool.take("evil.toml", 8)
    assert taken is not None
    assert taken.problem == "is a symbolic link (never followed)"
    assert taken.data is None
    assert stat.S_ISLNK(os.lstat(taken.path).st_mode)
    assert secret.read_bytes() == b'command = "cat /etc/shadow"\n'


def test_take_of_a_fifo_does_not_block(spool):
    os.mkfifo(os.path.join(spool.root, "pipe.toml"))
    taken = spool.take("pipe.toml", 9)
    assert taken.problem == "is a FIFO"
    assert taken.data is None


def test_take_of_a_hard_link(spool, tmp_path):
    other = tmp_path / "other"
    other.write_bytes(JOB)
    os.link(other, os.path.join(spool.root, "linked.toml"))
    taken = spool.take("linked.toml", 10)
    assert taken.problem == "has 2 hard links (a job file must have exactly one)"
    assert taken.data is None


def test_take_of_a_directory(spool):
    os.mkdir(os.path.join(spool.root, "dir.toml"))
    taken = spool.take("dir.toml", 11)
    assert taken.problem == "is a directory"
    assert taken.data is None


def test_take_of_a_big_file(spool):
    with open(os.path.join(spool.root, "big.toml"), "wb") as f:
        f.truncate(MAX_BYTES + 10)
    taken = spool.take("big.toml", 12)
    assert taken.problem == f"is larger than {MAX_BYTES} bytes ({MAX_BYTES + 10})"
    assert taken.data is None


def test_take_of_an_empty_file(spool):
    open(os.path.join(spool.root, "empty.toml"), "wb").close()
    taken = spool.take("empty.toml", 13)
    assert taken.problem is None
    assert taken.data == b""


def test_take_of_a_name_with_control_characters(spool):
    name = "bad\nname.toml"
    with open(os.path.join(spool.root, name), "wb") as f:
        f.write(JOB)
    taken = spool.take(name, 14)
    assert taken.problem == "file name contains control characters"
    assert taken.data is None
    assert os.path.basename(taken.path) == "14-bad?name.toml"


def test_finish_rejected_keeps_the_entry(spool):
    os.symlink("/etc/passwd", os.path.join(spool.root, "evil.toml"))
    spool.take("evil.toml", 15)
    dest = spool.finish_rejected(15, "evil.toml")
    assert dest == os.path.join(spool.root, REJECTED, "15-evil.toml")
    assert os.readlink(dest) == "/etc/passwd"
    assert spool.work_entries() == []


def test_finish_accepted_removes_the_work_copy(spool):
    with open(os.path.join(spool.root, "ok.toml"), "wb") as f:
        f.write(JOB)
    spool.take("ok.toml", 16)
    spool.finish_accepted(16, "ok.toml")
    assert spool.work_entries() == []
    spool.finish_accepted(16, "ok.toml")   # a second time is harmless


def test_read_taken_after_a_crash(spool):
    with open(os.path.join(spool.root, WORK, "21-crashed.toml"), "wb") as f:
        f.write(JOB)
    with open(os.path.join(spool.root, WORK, "junk"), "wb") as f:
        f.write(b"x")
    assert spool.work_entries() == [(21, "crashed.toml")]
    taken = spool.read_taken(21, "crashed.toml")
    assert taken.problem is None and taken.data == JOB
    assert spool.read_taken(22, "missing.toml") is None
