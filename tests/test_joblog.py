import errno
import os
import re

import pytest

from gpusched import joblog
from gpusched.joblog import JobLog


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "7.log")


def open_log(path, *args, **kw):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    said = []
    return JobLog(fd, *args, say=said.append, **kw), said


def content(log):
    log.finish()
    with open(f"/proc/self/fd/{log.fd}", "rb") as f:
        return f.read()


def lines_of(n, width=100):
    return [b"line %08d " % i + b"x" * (width - 15) + b"\n" for i in range(n)]


def test_no_cap_keeps_everything(path):
    log, said = open_log(path)
    for line in lines_of(1000):
        log.write(line)
    assert content(log) == b"".join(lines_of(1000))
    assert said == []


def test_under_the_cap_nothing_is_dropped(path):
    log, _ = open_log(path, 1 << 20)
    data = b"".join(lines_of(10000))[: (1 << 20)]
    log.write(data)
    assert content(log) == data


def test_the_cap_keeps_the_head_and_the_tail_and_says_what_was_dropped(path):
    cap = 64 << 10
    log, said = open_log(path, cap)
    data = b"".join(lines_of(10000))                     # ~1 MB through a 64 KiB cap
    for i in range(0, len(data), 4096):
        log.write(data[i:i + 4096])
        assert log.size <= cap * 1.25 + 4096 + 200       # bounded all along, not only at the end
    out = content(log)
    head, rest = out[:cap // 2], out[cap // 2:]
    assert head == data[:cap // 2]
    marker, tail = rest.split(b"\n", 2)[1], rest.split(b"\n", 2)[2]
    m = re.fullmatch(rb"gpusched: (\d+) bytes of output dropped here \(max_log_size 64K keeps the first 32K "
                     rb"and the last 32K\)", marker)
    assert m, marker
    assert tail == data[-(cap // 2):]
    assert int(m.group(1)) == len(data) - cap
    assert len(out) <= cap + 200
    assert said == ["gpusched: the log reached max_log_size (64K); keeping its first 32K and its last 32K"]


def test_a_big_tail_is_kept_in_the_file_with_bounded_memory(path, monkeypatch):
    monkeypatch.setattr(joblog, "COPY_CHUNK", 4096)      # copies in several chunks, overlapping regions
    cap = 1 << 20
    log, _ = open_log(path, cap)
    data = os.urandom(5 << 20)
    for i in range(0, len(data), 65536):
        log.write(data[i:i + 65536])
    out = content(log)
    assert out[:cap // 2] == data[:cap // 2]
    assert out[-(cap // 2):] == data[-(cap // 2):]
    assert b"bytes of output dropped here" in out[cap // 2:cap // 2 + 200]


def test_an_earlier_attempts_output_stays_and_counts(path):
    with open(path, "wb") as f:
        f.write(b"attempt 1\n")
    log, _ = open_log(path, 1000)
    log.line("gpusched: attempt 2")
    log.write(b"x" * 5000 + b"\nlast\n")
    out = content(log)
    assert out.startswith(b"attempt 1\ngpusched: attempt 2\nxxx")
    assert out.endswith(b"x\nlast\n")
    assert len(out) <= 1000 + 200


def test_own_lines_start_on_a_line_of_their_own(path):
    log, _ = open_log(path)
    log.write(b"progress 50%\r")
    log.line("gpusched: job 7 exited with code 0")
    log.write(b"ok\n")
    log.line("gpusched: done")
    assert content(log) == b"progress 50%\r\ngpusched: job 7 exited with code 0\nok\ngpusched: done\n"


class Disk:
    def __init__(self, free):
        self.free = free
        self.calls = 0

    def __call__(self, fd):
        self.calls += 1
        return self.free


def test_logging_stops_under_the_floor_and_resumes(path):
    disk, now = Disk(10 << 20), [0.0]
    log, said = open_log(path, 0, 5 << 20, clock=lambda: now[0], free=disk)
    log.write(b"before\n")
    log.write(b"a" * 1000)
    disk.free = 1 << 20
    log.write(b"b" * (1 << 20))                          # a MiB more: looked at before it is written
    log.write(b"lost\n")
    assert log.low
    now[0] += 0.5
    log.write(b"lost too\n")
    disk.free = 10 << 20
    now[0] += 0.6                                        # a second later it is looked at again
    log.write(b"after\n")
    assert content(log) == (
        b"before\n" + b"a" * 1000 + b"\ngpusched: the log's filesystem has 1M free, under log_min_free (5M): "
        b"output is not logged until there is room again\n"
        b"gpusched: 1048590 bytes of output were not logged while the filesystem was low on space\nafter\n")
    assert said == ["gpusched: the log's filesystem has 1M free, under log_min_free (5M): output is not logged "
                    "until there is room again"]


def test_free_space_is_checked_cheaply(path):
    disk, now = Disk(10 << 20), [0.0]
    log, _ = open_log(path, 0, 1 << 20, clock=lambda: now[0], free=disk)
    for _ in range(4096):
        log.write(b"x" * 1024)                           # 4 MiB within "one second"
    assert disk.calls <= 5


def test_a_full_disk_loses_log_lines_never_raises_and_is_tried_again(path, monkeypatch):
    now = [0.0]
    log, said = open_log(path, clock=lambda: now[0])
    real, full = os.pwrite, [True]

    def pwrite(fd, data, offset):
        if fd == log.fd and full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", pwrite)
    log.write(b"x\n")
    log.line("gpusched: lost")
    now[0] += 1.5
    log.write(b"still lost\n")                          # tried again, said only once
    assert log.low
    full[0] = False
    now[0] += 1.5
    log.write(b"back\n")
    assert content(log) == (b"gpusched: 28 bytes of output were not logged while the filesystem was low on "
                            b"space\nback\n")
    assert said == ["gpusched: the log's filesystem is full (No space left on device): output is not logged "
                    "until there is room again"]


def test_a_broken_log_stops_quietly(path, monkeypatch):
    log, said = open_log(path, 1000)

    def eio(fd, data, offset):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "pwrite", eio)
    log.write(b"x" * 5000)
    log.write(b"y")
    log.finish()
    assert log.broken
    assert len(said) == 1 and "can't write the log any more" in said[0]
