"""The manual (gpusched/manual): the man pages and completions cover every verb of gpuschedctl's parser and
every key of the job file, wide tables and links are rewritten for man, the completion scripts are valid
for their shells, and bash's completes job ids (from a stand-in gpuschedctl) without expanding what a job
name holds. ctl/completion.py: only the caller's own jobs, escaped, bounded."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from gpusched import jobfile
from gpusched.ctl import completion
from gpusched.ctl.main import build_parser
from gpusched.manual import pages, shells
from gpusched.manual import verbs as v

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doc(name):
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as f:
        return f.read()


def ctl_markdown():
    page = pages.PAGES[0]
    return pages.page_markdown(page, doc(page.doc), pages.ctl_synopsis(), pages.ctl_extra(build_parser()))


# --- the parser -----------------------------------------------------------------------------------------

def test_every_verb_has_a_help_line_so_the_manual_and_completions_show_it():
    parser = build_parser()
    choices = set(v.subparsers(parser).choices)
    public = {verb.name for verb in v.verbs(parser)}
    assert v.hidden(parser) == ["__complete"], "a verb without help= is left out of --help, man and completions"
    assert public == choices - {"__complete"}
    assert {"submit", "show", "logs", "cancel", "list", "history"} <= public


def test_job_arguments_complete_job_ids_and_acting_verbs_only_live_ones():
    by_name = {verb.name: verb for verb in v.verbs(build_parser())}
    kinds = {name: {a.completes for a in verb.args} for name, verb in by_name.items()}
    for name in ("cancel", "hold", "release", "requeue"):
        assert v.LIVE_JOBS in kinds[name]
    for name in ("show", "logs"):
        assert v.JOBS in kinds[name]
    assert {a.completes for a in by_name["submit"].args if a.dest.startswith("after")} == {v.JOBS}
    # every argument that takes a job (by its type) completes one, whatever verb it is on
    for name, verb in by_name.items():
        parser = v.subparsers(build_parser()).choices[name]
        for action in parser._actions:
            if action.type is v.job_target:
                assert v.completes(action, name) in (v.JOBS, v.LIVE_JOBS), name


# --- man pages ------------------------------------------------------------------------------------------

def test_gpuschedctl_page_has_every_verb_and_option():
    md = ctl_markdown()
    for verb in v.verbs(build_parser()):
        assert f"\n## {verb.name}\n" in md, verb.name
        for arg in verb.args:
            for flag in arg.flags:
                assert f"**{flag}**" in md, (verb.name, flag)
    assert "# EXIT CODES" in md and "# JSON OUTPUT" in md      # docs/cli.md's sections come along
    assert "# SUBMITTING\n" in md and "# INTERACTIVE JOBS: RUN\n\n# " not in md   # a section with text comes; an empty one does not
    assert "## __complete" not in md and "gpuschedctl __complete [" not in md


def test_job_file_page_has_every_key_as_a_tagged_paragraph():
    page = pages.BY_DOC["jobfile.md"]
    md = pages.page_markdown(page, doc(page.doc))
    tags = set(re.findall(r"^`([^`]+)`$", md, re.M))
    for key in jobfile.TOP_KEYS:
        assert key in tags or f"[{key}]" in tags, key
    for key in jobfile.LIMIT_KEYS:
        assert f"limits.{key}" in tags, key
    assert "| --- |" not in md.split("# KEYS")[1].split("\n# ")[0]      # the key table is a list now


def test_a_wide_table_becomes_tagged_paragraphs_and_a_narrow_one_stays():
    narrow = "| a | b |\n| --- | --- |\n| 0 | ok |"
    assert pages.tables(narrow) == narrow
    wide = ("| key | type | meaning |\n| --- | --- | --- |\n"
            f"| `gpus` | integer | {'x ' * 50}with a \\| pipe |")
    out = pages.tables(wide)
    assert "| --- |" not in out
    assert "`gpus`\n\n:   *type*: integer\n" in out
    assert "with a | pipe" in out


def test_links_name_the_man_page_or_the_installed_doc():
    assert pages.links("see [config.md](config.md)") == "see **gpusched.toml**(5)"
    assert pages.links("[the keys](jobfile.md#keys)") == "the keys (see **gpusched-job**(5))"
    assert pages.links("[below](#environment)") == "below"
    assert pages.links("[policy.md](policy.md)") == "/usr/share/doc/gpusched/policy.md"
    assert pages.links("[site](https://example.org)") == "[site](https://example.org)"


@pytest.mark.skipif(not shutil.which("pandoc"), reason="pandoc is not installed (scripts/setup-deps installs it)")
@pytest.mark.parametrize("page", pages.PAGES, ids=lambda p: pages.file_name(p))
def test_each_page_renders_in_man_without_errors(page, tmp_path):
    md = ctl_markdown() if page.name == "gpuschedctl" else pages.page_markdown(page, doc(page.doc))
    text = pages.roff(page, md, "0.1.0")
    assert text.startswith(".\\\"") or ".TH" in text.split("\n", 5)[-1] or ".TH" in text
    assert f'.TH "{page.name}" "{page.section}"' in text
    if not shutil.which("man"):
        pytest.skip("man (man-db) is not installed: rendered roff only")
    path = tmp_path / pages.file_name(page)
    path.write_text(text)
    # as lintian checks a page: warnings on, at 80 columns
    p = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(path)], capture_output=True,
                       text=True, env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
    problems = [line for line in p.stderr.splitlines() if "cannot adjust line" not in line and line.strip()]
    assert p.returncode == 0 and not problems, p.stderr[-2000:]
    shown = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True,
                           env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"}).stdout
    assert "NAME" in shown and page.what.split(",")[0] in " ".join(shown.split())
    # no table wider than the terminal (tbl draws its rules with these; code blocks may be wider, as in any page)
    assert all(len(line) <= 80 for line in shown.splitlines() if "\u2502" in line or "\u2500" in line)


# --- completion scripts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_valid_and_names_every_verb(shell):
    pytest.importorskip("shtab", reason="python3-shtab is not installed (scripts/setup-deps installs it)")
    script = getattr(shells, shell)(build_parser())
    for verb in v.verbs(build_parser()):
        assert re.search(rf"\b{re.escape(verb.name)}\b", script), verb.name
    assert "__complete" not in script.replace("gpuschedctl __complete", "")
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed: its script is not syntax-checked here")
    p = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


FAKE = """#!/bin/bash
# a stand-in gpuschedctl: what `__complete` prints for alice
case "$#:$*" in        # the count too: "jobs --all" as one word would be a bug
  "2:__complete jobs") printf '7\\ttrain (running)\\n12\\teval (queued)\\n' ;;
  "3:__complete jobs --all") printf '3\\told (succeeded)\\n7\\ttrain (running)\\n12\\teval (queued)\\n' ;;
  "2:__complete names") printf '%s\\n' train '$(touch PWNED)' 'two words' ;;
  *) echo "gpuschedctl: bad arguments: $#:$*" >&2; exit 2 ;;
esac
"""


def complete_bash(tmp_path, words):
    """COMPREPLY of the generated bash script for `words` (the last one being completed)."""
    pytest.importorskip("shtab", reason="python3-shtab is not installed (scripts/setup-deps installs it)")
    script = tmp_path / "gpuschedctl.bash"
    script.write_text(shells.bash(build_parser()))
    fake = tmp_path / "bin" / "gpuschedctl"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE)
    fake.chmod(0o755)
    words_sh = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    test = (f"source {script}; COMP_WORDS=({words_sh}); COMP_CWORD={len(words) - 1}; "
            f"_shtab_gpuschedctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    p = subprocess.run(["bash", "-c", test], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_bash_completes_live_job_ids_for_cancel_and_every_kept_one_for_show(tmp_path):
    assert sorted(complete_bash(tmp_path, ["gpuschedctl", "cancel", ""])) == ["12", "7"]
    assert complete_bash(tmp_path, ["gpuschedctl", "cancel", "1"]) == ["12"]
    assert sorted(complete_bash(tmp_path, ["gpuschedctl", "show", ""])) == ["12", "3", "7"]
    assert sorted(complete_bash(tmp_path, ["gpuschedctl", "submit", "--after", ""])) == ["12", "3", "7"]


def test_bash_completes_verbs_and_options(tmp_path):
    assert complete_bash(tmp_path, ["gpuschedctl", "can"]) == ["cancel"]
    assert complete_bash(tmp_path, ["gpuschedctl", "s"]) == ["submit", "show", "stats"]     # shtab#86 fixed
    assert "--now" in complete_bash(tmp_path, ["gpuschedctl", "cancel", "--"])
    assert "__complete" not in complete_bash(tmp_path, ["gpuschedctl", "__"])


def test_bash_never_expands_a_job_name(tmp_path):
    names = complete_bash(tmp_path, ["gpuschedctl", "history", "--name", ""])
    assert "$(touch PWNED)" in names and "two words" in names
    assert not (tmp_path / "PWNED").exists()


# --- gpuschedctl __complete -----------------------------------------------------------------------------

class Pages:
    """The daemon's ListPage, two pages, with other users' jobs among alice's."""

    def __init__(self, jobs, per_page=2):
        self.jobs, self.per_page, self.calls = jobs, per_page, []

    def raw(self, method, all, after, table):
        self.calls.append((method, all, after, table))
        rest = [j for j in self.jobs if j["id"] > after]
        page = rest[:self.per_page]
        last = page[-1]["id"] if len(rest) > self.per_page else 0
        return json.dumps({"last": last, "ok": page})


JOBS = [{"id": 1, "user": "alice", "name": "a", "state": "queued"},
        {"id": 2, "user": "bob", "name": "bob's secret", "state": "running"},
        {"id": 3, "user": "alice", "name": "x\x1b]0;t\x07\ty\nz", "state": "running"},
        {"id": 4, "user": "alice", "name": "a", "state": "held"}]


def test_complete_lists_only_the_callers_jobs_newest_first_escaped():
    client = Pages(JOBS)
    jobs = completion.own_jobs(client, "alice", False, deadline=float("inf"))
    assert [j["id"] for j in jobs] == [1, 3, 4] and len(client.calls) == 2
    out = completion.lines("jobs", jobs)
    assert [line.split("\t")[0] for line in out] == ["4", "3", "1"]
    assert all(line.count("\t") == 1 and "\x1b" not in line and "\n" not in line for line in out)
    assert "bob" not in "".join(out)
    assert completion.lines("names", jobs) == ["a", "x\\x1b]0;t\\x07\\x09y\\x0az"]


def test_complete_stops_paging_at_its_deadline_and_caps_its_lines():
    client = Pages(JOBS, per_page=1)
    jobs = completion.own_jobs(client, "alice", True, deadline=0.0, clock=lambda: 1.0)
    assert len(client.calls) == 1 and [j["id"] for j in jobs] == [1]
    many = [{"id": i, "user": "alice", "name": f"n{i}", "state": "queued"} for i in range(2000)]
    assert len(completion.lines("jobs", many)) == completion.MAX_LINES


def test_complete_is_hidden_from_help():
    p = subprocess.run([sys.executable, "-m", "gpusched.ctl", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and "__complete" not in p.stdout and "SUPPRESS" not in p.stdout
