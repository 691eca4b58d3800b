import ctypes
import fcntl
import os
import socket
import stat
import tempfile
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpusched.jobfile import MAX_BYTES
from gpusched.spool import (NAME_MAX, REJECTED, WORK, Spool, SpoolWatcher, classify, cut_to_bytes, ignored,
                            parse_events, source_name, unsafe_name)

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



# --- names of any bytes (issue 7, item 11) --------------------------------------------------------------------

def make_spool(base: str) -> Spool:
    root = os.path.join(base, "spool")
    os.mkdir(root)
    os.mkdir(os.path.join(root, WORK), 0o700)
    os.mkdir(os.path.join(root, REJECTED), 0o700)
    return Spool(root)


# what a user can name a file: 1 to 255 bytes, anything but NUL and '/', and not "." or ".."
byte_names = st.binary(min_size=1, max_size=NAME_MAX).map(lambda b: b.replace(b"\0", b"x").replace(b"/", b"y")) \
    .filter(lambda b: b not in (b".", b".."))
job_ids = st.integers(min_value=1, max_value=10**15)


def _fits(name: str) -> bool:
    return len(name.encode("utf-8")) <= NAME_MAX           # strict: raises on a lone surrogate


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=byte_names, job_id=job_ids, outcome=st.sampled_from(["accepted", "rejected", "put_back"]))
def test_any_name_is_taken_read_and_finished_exactly_once(raw, job_id, outcome):
    with tempfile.TemporaryDirectory() as base:
        spool = make_spool(base)
        with open(os.path.join(os.fsencode(spool.root), raw), "wb") as f:
            f.write(JOB)
        name = os.fsdecode(raw)                             # what os.listdir and the watcher give
        taken = spool.take(name, job_id)
        assert taken is not None
        # the name it is known by can go anywhere (TOML, D-Bus, the journal); the work name fits NAME_MAX
        taken.name.encode("utf-8")
        assert _fits(os.path.basename(taken.path)) and os.path.basename(taken.path).startswith(f"{job_id}-")
        assert spool.entries() == []
        assert [i for i, _ in spool.work_entries()] == [job_id]
        if unsafe_name(name) is None:
            assert taken.problem is None and taken.data == JOB and taken.name == name
        else:
            assert taken.data is None and taken.problem == unsafe_name(name)
        # the daemon passes taken.name back: it must find the same entry
        if outcome == "accepted":
            spool.finish_accepted(job_id, taken.name)
            assert os.listdir(spool.rejected) == []
        elif outcome == "rejected":
            kept = spool.finish_rejected(job_id, taken.name)
            assert os.listdir(spool.rejected) == [os.path.basename(kept)] and _fits(os.path.basename(kept))
            with open(kept, "rb") as f:
                assert f.read() == JOB
        else:
            back = spool.put_back(job_id, taken.name)
            assert _fits(back) and back in os.listdir(spool.root)
        assert spool.work_entries() == []


@given(raw=byte_names, job_id=job_ids)
def test_work_name_is_the_same_for_the_raw_name_and_its_source_name(raw, job_id):
    name = os.fsdecode(raw)
    assert Spool._work_name(job_id, source_name(name)) == Spool._work_name(job_id, name)
    assert _fits(Spool._work_name(job_id, name))
    assert source_name(source_name(name)) == source_name(name)


@given(text=st.text(), limit=st.integers(min_value=0, max_value=300))
def test_cut_to_bytes_keeps_whole_characters(text, limit):
    text = source_name(text)
    cut = cut_to_bytes(text, limit)
    assert text.startswith(cut)
    assert len(cut.encode()) <= limit
    assert len(cut.encode()) > limit - 4 or cut == text     # at most one character (4 bytes) short


@pytest.mark.parametrize("raw, problem", [
    ("é" * 125 + ".toml", None),                            # 255 bytes, 130 characters
    ("a" * 255, None),
    ("caf\udce9.toml", "not valid UTF-8"),                 # Latin-1 é: the byte 0xe9 alone
    ("\udcff", "not valid UTF-8"),
    ("esc\x1b[31mred.toml", "control characters"),
    ("c1\x9b31m.toml", "control characters"),               # U+009B: CSI as one character
    ("new\nline.toml", "control characters"),
    ("evil\u202egnp.toml", "text-direction"),
    ("line\u2028sep.toml", "line separators"),
    ("日本語 ジョブ.toml", None),
])
def test_unsafe_names(raw, problem):
    got = unsafe_name(raw)
    assert (got is None) if problem is None else (problem in got)


def test_source_name_escapes_only_undecodable_bytes():
    assert source_name(os.fsdecode(b"caf\xe9\xff.toml")) == "caf\\xe9\\xff.toml"
    assert source_name("esc\x1b.toml") == "esc\x1b.toml"
    assert source_name("é.toml") == "é.toml"


def test_the_long_utf8_name_from_the_issue(spool):
    name = "é" * 125 + ".toml"                                # 255 bytes: "<id>-" + it does not fit
    with open(os.path.join(spool.root, name), "wb") as f:
        f.write(JOB)
    taken = spool.take(name, 123456)
    assert taken.problem is None and taken.name == name and taken.data == JOB
    kept = os.path.basename(spool.finish_rejected(123456, taken.name))
    assert len(kept.encode()) <= 255 and kept.startswith("123456-éé")


def test_a_work_entry_left_by_a_crash_reads_back_under_its_work_name(spool):
    raw = os.fsdecode(b"x\xff" * 100)
    with open(os.path.join(spool.root, raw), "wb") as f:
        f.write(JOB)
    spool.take(raw, 5)
    [(job_id, name)] = spool.work_entries()
    taken = spool.read_taken(job_id, name)
    assert taken is not None and taken.data == JOB
    spool.finish_accepted(job_id, name)
    assert spool.work_entries() == []


# --- expire_rejected -------------------------------------------------------------------------------------------

def test_expire_rejected_removes_old_entries_without_following_links(spool, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_bytes(b"keep")
    rej = spool.rejected
    with open(os.path.join(rej, "1-file.toml"), "wb") as f:
        f.write(b"x" * 50_000)
    os.symlink(precious, os.path.join(rej, "2-link.toml"))
    os.mkdir(os.path.join(rej, "3-dir.toml"))
    os.symlink(precious, os.path.join(rej, "3-dir.toml", "inner-link"))
    with open(os.path.join(rej, "3-dir.toml", "f"), "wb") as f:
        f.write(b"y" * 10_000)
    os.mkfifo(os.path.join(rej, "4-fifo.toml"))
    assert spool.expire_rejected(time.time() - 3600) == 0     # all are newer
    assert len(os.listdir(rej)) == 4
    freed = spool.expire_rejected(time.time() + 1)
    assert os.listdir(rej) == []
    assert freed >= 60_000
    assert (precious / "data").read_bytes() == b"keep"


def test_expire_rejected_goes_by_ctime_not_the_submitters_mtime(spool):
    p = os.path.join(spool.rejected, "1-old-looking.toml")
    with open(p, "wb") as f:
        f.write(JOB)
    os.utime(p, (0, 0))                                        # the submitter set it to 1970
    assert spool.expire_rejected(time.time() - 3600) == 0
    assert os.path.exists(p)


# --- the watcher ----------------------------------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)


class Seen:
    def __init__(self):
        self.names: list[str] = []
        self.cond = threading.Condition()
        self.reports: list[str] = []

    def __call__(self, name):
        with self.cond:
            self.names.append(name)
            self.cond.notify_all()

    def wait_for(self, name, timeout=5.0):
        with self.cond:
            return self.cond.wait_for(lambda: name in self.names, timeout)


@pytest.fixture
def watched(spool):
    seen = Seen()
    w = SpoolWatcher(spool.root, seen, report=seen.reports.append)
    w.start()
    yield spool, w, seen
    w.stop()


def _drop(spool, name, data=JOB):
    path = os.path.join(os.fsencode(spool.root), os.fsencode(name))
    with open(path, "wb") as f:
        f.write(data)


def test_watcher_fd_is_close_on_exec(watched):
    _, w, _ = watched
    assert fcntl.fcntl(w.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_watcher_announces_closed_files_and_odd_names(watched):
    spool, _, seen = watched
    _drop(spool, "job.toml")
    assert seen.wait_for("job.toml")
    odd = os.fsdecode(b"caf\xe9\n\x1b.toml")
    _drop(spool, odd)
    assert seen.wait_for(odd)
    os.symlink("/etc/passwd", os.path.join(spool.root, "link.toml"))
    assert seen.wait_for("link.toml")
    _drop(spool, ".hidden")
    _drop(spool, "after.toml")
    assert seen.wait_for("after.toml") and ".hidden" not in seen.names


def test_watcher_survives_a_watch_added_by_someone_holding_its_fd(watched, tmp_path):
    spool, w, seen = watched
    old = w.fd
    stolen = os.dup(w.fd)                       # what a job that inherited the fd (or root via pidfd_getfd) has
    try:
        other = tmp_path / "elsewhere"
        other.mkdir()
        assert libc.inotify_add_watch(stolen, os.fsencode(other), 0x100) > 0
        (other / "x").write_bytes(b"")          # an event of a watch the watcher never added
        _drop(spool, "next.toml")
        assert seen.wait_for("next.toml")
        deadline = time.monotonic() + 5
        while w.fd == old and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.fd != old and w.reopened == 1  # moved to an instance nobody else holds
        _drop(spool, "after.toml")
        assert seen.wait_for("after.toml")
        # the holder of the old fd sees nothing of the spool any more
        os.set_blocking(stolen, False)
        try:
            while os.read(stolen, 65536):
                pass
        except BlockingIOError:
            pass
        _drop(spool, "secret.toml")
        assert seen.wait_for("secret.toml")
        with pytest.raises(BlockingIOError):
            os.read(stolen, 65536)
    finally:
        os.close(stolen)


def test_watcher_rewatches_when_its_watch_is_removed(watched):
    spool, w, seen = watched
    stolen = os.dup(w.fd)
    try:
        assert libc.inotify_rm_watch(stolen, w._wd) == 0
    finally:
        os.close(stolen)
    deadline = time.monotonic() + 5
    while w.reopened == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    _drop(spool, "still.toml")
    assert seen.wait_for("still.toml")


def test_watcher_survives_a_failing_callback(spool):
    seen = Seen()
    calls = []

    def on_entry(name):
        calls.append(name)
        if name == "boom.toml":
            raise KeyError(name)
        seen(name)

    w = SpoolWatcher(spool.root, on_entry, report=seen.reports.append)
    w.start()
    try:
        _drop(spool, "boom.toml")
        _drop(spool, "fine.toml")
        assert seen.wait_for("fine.toml")
        assert "boom.toml" in calls and any("KeyError" in r for r in seen.reports)
    finally:
        w.stop()


@given(st.binary(max_size=600))
def test_parse_events_never_raises(buf):
    for wd, mask, name in parse_events(buf):
        assert b"\0" not in name
