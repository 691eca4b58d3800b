"""gpuschedctl's human output (ctl/render.py): colour only where wanted, relative times, fitting to the
terminal's width without breaking alignment, the queue's rows on a terminal."""

import io

import pytest

from gpusched import lifecycle
from gpusched.ctl import render
from gpusched.ctl.render import Terminal
from gpusched.jobfile import JobSpec
from gpusched.listing import HEADER, fold_row, row


def test_colour_only_on_a_terminal_and_never_with_no_color_or_a_dumb_terminal():
    assert render.colour_wanted(True, "auto", {"TERM": "xterm"})
    assert not render.colour_wanted(False, "auto", {"TERM": "xterm"})
    assert not render.colour_wanted(True, "auto", {"TERM": "xterm", "NO_COLOR": "1"})
    assert not render.colour_wanted(True, "auto", {"TERM": "xterm", "NO_COLOR": "no"})   # any value
    assert not render.colour_wanted(True, "auto", {"TERM": "xterm", "NO_COLOR": ""})    # set, even empty: as top
    assert not render.colour_wanted(True, "auto", {"TERM": "dumb"})
    assert render.colour_wanted(False, "always", {"NO_COLOR": "1"})                      # asked for outright
    assert not render.colour_wanted(True, "never", {})


def test_a_pipe_is_not_a_terminal():
    t = render.terminal(io.StringIO(), environ={"TERM": "xterm"})
    assert t == Terminal(None, False) and not t.tty


@pytest.mark.parametrize("delta, text", [(0.2, "just now"), (42, "42s ago"), (185, "3m ago"), (7200, "2h ago"),
                                         (86400 * 12 + 5, "12d ago"), (-180, "in 3m")])
def test_relative_times(delta, text):
    assert render.relative(1_000_000 - delta, 1_000_000) == text


def test_fit_cuts_by_terminal_columns_and_marks_the_cut():
    assert render.fit("abcdef", 6) == "abcdef"
    assert render.fit("abcdef", 4) == "abc…"
    assert render.fit("中文中文", 5) == "中文…"                     # wide characters take two columns
    assert render.width_of(render.fit("中文中文", 5)) <= 5
    assert render.fit("e\u0301" * 4, 4) == "e\u0301" * 4           # combining marks take none
    assert render.fit("abc", 0) == ""


def test_fit_table_narrows_the_widest_column_and_keeps_alignment():
    rows = [("GPU", "NAME", "JOB"), ("0", "a very long name of a simulated GPU", "12"), ("1", "short", "7")]
    plain = render.fit_table(rows, None)
    assert plain[1] == "0    a very long name of a simulated GPU  12"
    lines = render.fit_table(rows, 30)
    assert all(render.width_of(line) <= 30 for line in lines)
    assert lines[1].startswith("0    a very long name") and "…" in lines[1] and lines[1].endswith("12")
    at = lines[0].index("JOB")
    assert lines[1].index("12") == at and lines[2].index("7") == at    # still aligned
    tiny = render.fit_table(rows, 8)
    assert all(render.width_of(line) <= 8 for line in tiny)


def job(state="queued", name="train"):
    j = lifecycle.accepted(12, JobSpec(command="x", name=name, gpus=1), "alice", 1000, 1000, "a.toml", 1000.0)
    j.state = state
    return j


def test_a_queue_row_on_a_terminal_has_its_time_relative_its_state_coloured_and_fits():
    r = row(job("running"))
    term = Terminal(width=60, colour=True)
    out = render.queue_row(r, 1000, 1000 + 185, term)
    assert "\x1b[32mrunning\x1b[0m" in out
    plain = out.replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert render.width_of(plain) <= 60 and plain.endswith("…")
    wide = render.queue_row(r, 1000, 1000 + 185, Terminal(width=200, colour=False))
    assert "\x1b" not in wide
    start, sub, end = render.queue_columns(r)
    assert wide[sub:end].strip() == "3m ago" and wide[:sub] == r[:sub] and wide[end:] == r[end:].rstrip()


def test_a_cut_state_still_gets_its_colour_and_an_array_row_keeps_its_columns():
    r = row(job("dependency_failed"))
    assert "\x1b[31mdependen…\x1b[0m" in render.queue_row(r, None, 0, Terminal(200, True))
    elements = [job("running"), job("queued")]
    for i, e in enumerate(elements):
        e.array_id, e.array_index = 12345678, i * 100
    folded = fold_row(12345678, elements)                    # an ID wider than its column, never cut
    out = render.queue_row(folded, 1000, 1060, Terminal(300, False))
    start, sub, end = render.queue_columns(folded)
    assert out[sub:end].strip() == "1m ago" and out[start:].startswith("array")


def test_the_header_keeps_its_names_and_no_colour():
    lines = list(render.queue_table(HEADER, [], None, 0, Terminal(40, True)))
    assert lines == [render.fit(HEADER, 40)]
