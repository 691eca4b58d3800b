"""Man pages and shell completions as installed (the box installs the .deb): `man gpuschedctl` and the other
pages render and say what they should, and bash's completion, sourced as alice with a job of hers queued,
completes her job id (and not bob's) from the real daemon."""

from __future__ import annotations

import re
import shlex

import pytest

from gpusched.manual import pages

COMPLETIONS = ("/usr/share/bash-completion/completions/gpuschedctl",         # the .deb's
               "/usr/local/share/bash-completion/completions/gpuschedctl")   # scripts/install's


def man(gs, *args: str) -> str:
    """A page as a person reads it, at 80 columns, without a pager."""
    p = gs.sh("MANWIDTH=80 MANPAGER=cat man " + " ".join(args), check=False)
    assert p.returncode == 0, p.stderr
    return " ".join(p.stdout.split())          # words, whatever man's justification did to the spaces


@pytest.fixture
def has_man(gs):
    if gs.sh("command -v man", check=False).returncode != 0:
        pytest.skip("man-db is not installed here (scripts/setup-deps installs it)")


def test_man_gpuschedctl_renders_and_names_every_verb(gs, has_man):
    text = man(gs, "gpuschedctl")
    assert "gpuschedctl - submit, watch and manage gpusched jobs" in text
    verbs = gs.sh("gpuschedctl --help").stdout
    listed = re.findall(r"(?m)^    ([a-z][\w-]*)(?:\s|$)", verbs)          # argparse's list of commands
    assert {"submit", "cancel", "list", "history"} <= set(listed)
    for verb in listed:
        assert f"gpuschedctl {verb} [-h]" in text, verb
    assert "EXIT CODES" in text and "gpuschedctl __complete [-h]" not in text     # the hidden verb


@pytest.mark.parametrize("page", pages.PAGES[1:], ids=lambda p: pages.file_name(p))
def test_man_pages_of_the_files_and_the_daemon(gs, has_man, page):
    text = man(gs, str(page.section), page.name)
    assert f"{page.name} - {page.what}" in text
    expect = {"gpusched-job": ["time_limit", "limits.memory", "on_gpu_oom"],
              "gpusched.toml": ["spool_dir", "max_running", "admin_group"],
              "gpuschedd": ["GPUSCHED_JOB_ID", "/var/spool/gpusched", "SIGTERM"]}[page.name]
    for word in expect:
        assert word in text, (page.name, word)


def complete(gs, user: str, line: str) -> list[str]:
    """COMPREPLY for `line` (its last word being completed) from the installed bash completion, as `user`."""
    words = line.split(" ")
    path = next(p for p in COMPLETIONS if gs.sh(f"test -f {p}", check=False).returncode == 0)
    script = (f"source {path}; COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _shtab_gpuschedctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    return gs.sh(f"bash -c {shlex.quote(script)}", user=user).stdout.split()


def test_bash_completes_the_callers_own_job_ids(gs):
    gs.clear()
    gs.sh("gpuschedctl drain")                           # nothing starts: the jobs stay queued
    try:
        mine = gs.submit("alice", 'name = "tab-me"\ncommand = "true"\ngpus = 0\n')
        theirs = gs.submit("bob", 'name = "not-yours"\ncommand = "true"\ngpus = 0\n')
        got = complete(gs, "alice", "gpuschedctl cancel ")
        assert str(mine) in got and str(theirs) not in got, got
        assert not any(w.startswith("-") for w in got), got        # ids, not only options
        listed = gs.sh("time gpuschedctl __complete jobs", user="alice")
        assert f"{mine}\ttab-me (queued)" in listed.stdout and "not-yours" not in listed.stdout, listed
        listed = gs.sh("time gpuschedctl __complete jobs --all", user="alice")
        assert f"{mine}\ttab-me (queued)" in listed.stdout, listed
        assert str(mine) in complete(gs, "alice", f"gpuschedctl show {str(mine)[:-1]}"), listed   # a prefix
        # the verbs and the options complete too
        assert complete(gs, "alice", "gpuschedctl can") == ["cancel"]
        assert "--now" in complete(gs, "alice", "gpuschedctl cancel --")
    finally:
        gs.sh("gpuschedctl resume", check=False)
        gs.clear()


def test_zsh_and_fish_scripts_are_valid_where_those_shells_are(gs):
    checked = 0
    for shell, path in (("zsh", "/usr/share/zsh/vendor-completions/_gpuschedctl"),
                        ("fish", "/usr/share/fish/vendor_completions.d/gpuschedctl.fish")):
        if gs.sh(f"test -f {path}", check=False).returncode != 0:
            continue                                       # installed by scripts/install: /usr/local
        if gs.sh(f"command -v {shell}", check=False).returncode == 0:
            p = gs.sh(f"{shell} -n {path}", check=False)
            assert p.returncode == 0, p.stderr
            checked += 1
    if not checked:
        pytest.skip("neither zsh nor fish is installed here, or the scripts are not the .deb's")


def test_the_package_ships_the_pages_and_completions(gs):
    p = gs.sh("dpkg -L gpusched", check=False)
    if p.returncode != 0:
        pytest.skip("gpusched was installed from the checkout here (scripts/install), not as the .deb")
    files = set(p.stdout.split())
    for page in pages.PAGES:
        assert f"/usr/share/man/man{page.section}/{pages.file_name(page)}.gz" in files, page.name
    assert {"/usr/share/bash-completion/completions/gpuschedctl", "/usr/share/zsh/vendor-completions/_gpuschedctl",
            "/usr/share/fish/vendor_completions.d/gpuschedctl.fish"} <= files
    assert not any("/gpusched/manual" in f for f in files)           # the generator itself stays out
