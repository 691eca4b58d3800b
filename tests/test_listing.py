import json

from hypothesis import given
from hypothesis import strategies as st

from gpusched import lifecycle
from gpusched.access import Caller
from gpusched.jobfile import JobSpec
from gpusched.listing import HEADER, INFO_WIDTH, MAX_ENTRY, Listing, bounded_json, printable, row
from gpusched.model import job_to_dict

HOSTILE = "a\x1b]0;pwned\x07b\x1b[2J\rc\x9b1m\u202ed\u200be\u2028f\x7f\ud800"


def job(i, name="train", uid=1000, tags=(), reason=None, user="alice"):
    j = lifecycle.accepted(i, JobSpec(command="true", name=name, tags=tuple(tags)), user, uid, uid, f"{i}.toml",
                           1_700_000_000.0 + i)
    if reason is not None:
        j.reason = reason
    return j


def test_printable_escapes_what_a_terminal_acts_on():
    out = printable(HOSTILE)
    for bad in "\x1b\x07\r\x9b\u202e\u200b\u2028\x7f\ud800":
        assert bad not in out
    assert out == "a\\x1b]0;pwned\\x07b\\x1b[2J\\x0dc\\x9b1m\\u202ed\\u200be\\u2028f\\x7f\\ud800"
    assert printable("émoji 🙂 and 中文") == "émoji 🙂 and 中文"            # printable text is left alone
    assert printable("a\nb\tc", keep="\n\t") == "a\nb\tc"
    assert printable("a\nb") == "a\\x0ab"


@given(st.text())
def test_printable_output_is_printable_and_idempotent(s):
    out = printable(s)
    assert out.isprintable()
    assert printable(out) == out


def test_rows_escape_every_column():
    j = job(7, name="n\x1b[2J", reason="bad " + HOSTILE, user="u\x1bx")
    r = row(j)
    assert r.isprintable()
    assert "\\x1b" in r
    assert len(r) <= len(HEADER) + INFO_WIDTH


def test_oversized_entry_is_listed_cut_with_a_marker():
    big = job(1, tags=["t" * 1000] * 2000)
    text = bounded_json(job_to_dict(big))
    d = json.loads(text)
    assert len(text) <= MAX_ENTRY
    assert d["id"] == 1 and d["state"] == "queued" and d["user"] == "alice"
    assert "over the listing's limit" in d["truncated"]
    assert "tags" not in d
    small = json.loads(bounded_json(job_to_dict(job(2, tags=["x"]))))
    assert small["tags"] == ["x"] and "truncated" not in small


def test_pages_are_cut_by_bytes_and_by_count():
    listing = Listing()
    jobs = [job(i, tags=["t" * 1000] * 50) for i in range(1, 101)]       # ~50 KB each
    size = len(listing.entry(jobs[0])[0])
    text, last = listing.page(iter(jobs), Caller(0, True), False, True, 10 * size + 50, 1000)
    got = json.loads(text)
    assert [j["id"] for j in got] == list(range(1, len(got) + 1))
    assert 5 <= len(got) <= 10 and last == len(got)
    assert len(text) <= 10 * size + 50
    text, last = listing.page(iter(jobs), Caller(0, True), False, True, 1 << 30, 7)
    assert len(json.loads(text)) == 7 and last == 7
    text, last = listing.page(iter(jobs[:3]), Caller(0, True), False, True, 1 << 30, 7)
    assert len(json.loads(text)) == 3 and last is None
    # one entry bigger than the page still goes, alone
    text, last = listing.page(iter(jobs), Caller(0, True), False, True, 10, 7)
    assert len(json.loads(text)) == 1 and last == 1


def test_table_page_is_a_json_string_of_rows_with_the_header_first():
    listing = Listing()
    jobs = [job(i, name=f"j\x1b{i}") for i in range(1, 4)]
    text, last = listing.page(iter(jobs), Caller(5, False), True, True, 1 << 20, 10)
    lines = json.loads(text).split("\n")
    assert lines[0] == HEADER and len(lines) == 4 and last is None
    assert all(line.isprintable() for line in lines)
    text, _ = listing.page(iter(jobs), Caller(5, False), True, False, 1 << 20, 10)
    assert len(json.loads(text).split("\n")) == 3


def test_public_entries_hide_private_fields_from_others():
    listing = Listing()
    j = job(1, uid=1000)
    mine = json.loads(listing.page(iter([j]), Caller(1000, False), False, True, 1 << 20, 10)[0])[0]
    theirs = json.loads(listing.page(iter([j]), Caller(1001, False), False, True, 1 << 20, 10)[0])[0]
    assert mine["source"] == "1.toml" and "source" not in theirs


def test_a_table_page_says_when_each_row_was_submitted_for_relative_times():
    listing = Listing()
    jobs = [job(i) for i in range(1, 4)]
    submitted = []
    listing.page(iter(jobs), Caller(5, False), True, True, 1 << 20, 10, submitted=submitted)
    assert submitted == [1_700_000_001, 1_700_000_002, 1_700_000_003]      # the header has none
    submitted = []
    listing.page(iter(jobs), Caller(5, False), False, True, 1 << 20, 10, submitted=submitted)
    assert submitted == []                                                 # JSON entries carry their own


def test_a_watcher_hears_of_each_change_and_takes_them_once():
    listing = Listing()
    heard = []
    listing.invalidate(1)                               # nobody watching: nothing kept
    listing.watch(lambda: heard.append(1))
    listing.invalidate(2)
    listing.invalidate(3, array_id=3)
    listing.invalidate(3)                               # a later call without the array keeps it
    assert len(heard) == 3 and listing.take_changed() == {2: 0, 3: 3} and listing.take_changed() == {}


def test_the_entry_cache_keeps_recent_entries_within_its_bytes(monkeypatch):
    """The bus's pages render on demand; the cache holds at most CACHE_BYTES of recent entries (a cache of
    every job cost 1 KB a job: docs/performance.md), always the last one, and a change drops a job's."""
    from gpusched import listing as listingmod
    listing = Listing()
    jobs = [job(i) for i in range(1, 201)]
    listing.entry(jobs[0])
    one = listing._cached                                # the first job's entry, all three parts
    monkeypatch.setattr(listingmod, "CACHE_BYTES", 10 * one + one // 2)
    for j in jobs:
        listing.entry(j)
    assert list(listing._cache) == [j.id for j in jobs[-10:]]
    assert listing._cached == sum(listingmod._size(e) for e in listing._cache.values()) <= 10 * one + one // 2
    listing.entry(jobs[-10])                            # used again: the last to go
    listing.entry(jobs[0])
    assert jobs[-10].id in listing._cache and jobs[-9].id not in listing._cache
    listing.invalidate(jobs[-1].id)
    assert jobs[-1].id not in listing._cache
    assert listing._cached == sum(listingmod._size(e) for e in listing._cache.values())
    jobs[0].reason = "changed"                           # what is rendered after a change is the new text
    listing.invalidate(jobs[0].id)
    assert "changed" in listing.entry(jobs[0])[0]
    monkeypatch.setattr(listingmod, "CACHE_BYTES", 1)
    assert listing.entry(jobs[5]) and list(listing._cache) == [jobs[5].id]   # one bigger than it all: kept


def test_a_table_page_renders_rows_alone_and_a_json_page_one_entry_a_job(monkeypatch):
    from gpusched import listing as listingmod
    listing = Listing()
    jobs = [job(i, uid=1000 + i % 2) for i in range(1, 5)]
    dumped = []
    real = listingmod.job_to_dict
    monkeypatch.setattr(listingmod, "job_to_dict", lambda j: dumped.append(j.id) or real(j))
    listing.page(iter(jobs), Caller(1000, False), True, True, 1 << 20, 10)
    assert dumped == [] and all(e[listingmod.FULL] is None for e in listing._cache.values())
    text, _ = listing.page(iter(jobs), Caller(1000, False), False, True, 1 << 20, 10)
    assert dumped == [1, 2, 3, 4]
    assert ["source" in e for e in json.loads(text)] == [False, True, False, True]
    assert json.loads(text) == [json.loads(listing.entry(j)[0 if j.uid == 1000 else 1]) for j in jobs]
