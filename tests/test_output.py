import random
import time

import pytest

from gpusched.output import LineSplitter


def split(chunks, max_line=16):
    s = LineSplitter(max_line)
    out = []
    for c in chunks:
        out += s.feed(c)
    return out + s.finish()


@pytest.mark.parametrize("chunks, lines", [
    ([b"a\nb\n"], [b"a", b"b"]),
    ([b"a\nb"], [b"a", b"b"]),                          # the unfinished last line comes at the end
    ([b"a", b"b", b"\n"], [b"ab"]),
    ([b"a\r\nb\r\n"], [b"a", b"b"]),                    # CRLF is one line end
    ([b"a\r", b"\nb\n"], [b"a", b"b"]),                 # also split across two reads
    ([b"a\r", b"", b"\nb\n"], [b"a", b"b"]),            # an empty read changes nothing
    ([b"\n\n"], [b"", b""]),
    ([b"a\r"], [b"a"]),
    ([], []),
    ([b""], []),
])
def test_line_ends(chunks, lines):
    assert split(chunks) == lines


def test_a_burst_of_redraws_keeps_only_the_last_one_of_the_read():
    assert split([b"10%\r20%\r30%\r"]) == [b"30%"]
    assert split([b"10%\r20%\r", b"30%\r"]) == [b"20%", b"30%"]
    assert split([b"10%\r20%\rdone\n"]) == [b"done"]     # overwritten by the final line
    assert split([b"10%\r20%\rpartial"]) == [b"20%", b"partial"]
    assert split([b"a\nb\n10%\r20%\rc\n"]) == [b"a", b"b", b"c"]  # "\n" lines are never skipped


def test_long_lines_are_cut_and_memory_stays_bounded():
    s = LineSplitter(4)
    assert s.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    assert len(s._partial) <= 4
    assert s.feed(b"k\n") == [b"ijk"]
    assert s.feed(b"0123456789\n") == [b"0123", b"4567", b"89"]
    assert s.feed(b"0123") == []
    assert s.feed(b"4") == [b"0123"]
    assert s.finish() == [b"4"]
    assert s.finish() == []


def test_no_byte_is_lost_or_reordered_without_redraws():
    rng = random.Random(7)
    data = bytes(rng.choice(b"ab\n\r") for _ in range(20000)).replace(b"\r", b"\r\n") + b"\n"
    cuts = sorted(rng.sample(range(1, len(data)), 300))
    chunks = [data[i:j] for i, j in zip([0] + cuts, cuts + [len(data)])]
    got = split(chunks, max_line=7)
    expected = []
    for line in data.replace(b"\r\n", b"\n").split(b"\n")[:-1]:
        while len(line) > 7:
            expected.append(line[:7])
            line = line[7:]
        expected.append(line)
    assert got == expected


def test_32_mib_without_a_newline_is_linear():
    # the old buf += data; buf.split(b"\n") took seconds here (quadratic); this takes a fraction of one
    data = b"x" * (32 << 20) + b"\r"
    s = LineSplitter()
    t = time.process_time()
    pieces = []
    for i in range(0, len(data), 65536):
        pieces += s.feed(data[i:i + 65536])
    pieces += s.finish()
    assert time.process_time() - t < 2.0
    assert sum(map(len, pieces)) == 32 << 20
    assert max(map(len, pieces)) == s.max_line


def test_32_mib_of_progress_bars_makes_few_lines_quickly():
    bar = b"".join(b" 45%%|####    | %d/1000000 [00:01<00:02, 400.00it/s]\r" % i for i in range(10000))
    data = bar * ((32 << 20) // len(bar) + 1)
    s = LineSplitter()
    t = time.process_time()
    lines = []
    for i in range(0, len(data), 65536):
        lines += s.feed(data[i:i + 65536])
    assert time.process_time() - t < 2.0
    assert len(lines) <= 2 * (len(data) // 65536 + 1)   # about one per read
    assert lines[-1].startswith(b" 45%|")


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineSplitter(0)
