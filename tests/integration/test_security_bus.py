"""Issue 7, the bus and the CLI, attempted for real as alice and bob against the service in the box: a listing
bigger than the bus's message limit, the bus daemon dying under gpusched, `cancel --now` against a job that
ignores its stop signal for a 5-minute grace, and terminal escapes in file names, reasons and commands."""

from __future__ import annotations

import json
import re
import math
import time
import uuid

from gpusched import jobfile
from tests.integration.conftest import SPOOL

BUS_LIMIT = 32 << 20               # dbus-daemon's default max_message_size on the system bus
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def main_pid(gs) -> str:
    return gs.sh("systemctl show -p MainPID --value gpusched").stdout.strip()


def biggest_tags() -> list[str]:
    """The most listing bytes a user's job file may carry, under the parser's rules as they are: tags of
    emoji (each 4 bytes in the file, 12 in the listing's ASCII JSON), as many and as long as accepted,
    aiming at ~900 KB of JSON per job (a listing entry is cut at 1 MiB)."""
    for length in (128, 64, 32, 16, 8):
        for count in (600, 256, 128, 64, 32, 16, 8):
            tags = [f"{i:04d}" + "\U0001f642" * (length - 4) for i in range(count)]
            text = f'command = "true"\ngpus = 8\ntags = {json.dumps(tags, ensure_ascii=False)}\n'
            try:
                jobfile.parse(text.encode(), "big.toml", owner_is_root=False)
            except jobfile.JobFileError:
                continue
            return tags
    raise AssertionError("the parser accepts no tags at all")


def purge(gs, ids: list[int]) -> None:
    """Finished records stay listed for weeks (--all); these are tens of MB that would slow every later
    test's `list --all`, so they are removed while the service is stopped (it reads the rest back)."""
    files = " ".join(f"jobs/{i}.toml jobs/{i}.status.toml status/{i}.toml" for i in ids)
    gs.sh(f"systemctl stop gpusched && cd {gs.state} && rm -f {files} && systemctl start gpusched")


def test_listing_bigger_than_the_bus_limit_is_paged_and_the_daemon_stays(gs):
    pid = main_pid(gs)
    tag = uuid.uuid4().hex[:8]
    tags = biggest_tags()
    entry = len(json.dumps(tags)) + 600                     # the rest of a listing entry is small
    n = max(40, math.ceil(1.05 * BUS_LIMIT / entry))
    assert n <= 3000, f"tags are capped so low that {n} jobs would be needed to pass the bus limit"
    # queued for ever: 8 GPUs wanted, 4 exist; the reason says so
    text = f'command = "true"\nname = "big-{tag}"\ngpus = 8\ntags = {json.dumps(tags, ensure_ascii=False)}\n'
    # (cp: written and closed in place, as users do; a `mv` of many files races the daemon taking them)
    gs.box.run(f"cat > ~/big.toml && for i in $(seq {n}); do cp ~/big.toml {SPOOL}/big-{tag}-$i.toml; done",
               user="alice", input=text)
    ids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            mine = [j for j in json.loads(gs.sh("gpuschedctl list --json", user="alice").stdout)["jobs"]
                    if j["name"] == f"big-{tag}"]
            ids = [j["id"] for j in mine]
            if len(mine) == n:
                break
            time.sleep(0.5)
        assert len(ids) == n and all(j["state"] == "queued" for j in mine)

        # bob lists everything: the JSON alone is over the bus's limit for one message
        for flags in ("--json", "--json --all"):
            out = gs.sh(f"gpuschedctl list {flags}", user="bob").stdout
            assert len(out) > BUS_LIMIT, len(out)
            got = [j for j in json.loads(out)["jobs"] if j.get("name") == f"big-{tag}"]
            assert sorted(j["id"] for j in got) == sorted(ids)
            assert all(j["tags"] == tags and "source" not in j for j in got)
        table = gs.sh("gpuschedctl list", user="bob").stdout
        assert sum(f"big-{tag}" in line for line in table.splitlines()) == n
        # each reply on the bus is bounded; the client follows the pages
        pages = gs.sh("python3 -c 'from pydbus import SystemBus; import json\n"
                      "api = SystemBus().get(\"org.gpusched1\", \"/org/gpusched1\"); after = 0\n"
                      "while True:\n"
                      "    raw = api.ListPage(False, after, False); print(len(raw))\n"
                      "    after = json.loads(raw)[\"last\"]\n"
                      "    if not after: break'", user="bob").stdout.split()
        assert len(pages) > 1 and max(int(p) for p in pages) <= 8 << 20, pages
        assert main_pid(gs) == pid and gs.active()
    finally:
        if ids:
            gs.sh("gpuschedctl cancel " + " ".join(map(str, ids)), user="alice", check=False, timeout=300)
            purge(gs, ids)


def test_daemon_survives_losing_the_bus(gs):
    pid = main_pid(gs)
    gs.sh("systemctl kill -s KILL dbus.service", check=False)   # the bus daemon dies (socket activation
    deadline = time.monotonic() + 15                            # brings a new one on the next connection)
    while True:
        p = gs.sh("gpuschedctl list", user="bob", check=False)
        if p.returncode == 0:
            break
        assert time.monotonic() < deadline, f"gpuschedctl list still fails: {p.stderr}"
        time.sleep(0.2)
    assert main_pid(gs) == pid and gs.active()
    n = gs.submit("alice", 'command = "echo after the bus came back"\ngpus = 1\n')
    gs.wait(n, "succeeded", timeout=30)
    journal = gs.journal("-u", "gpusched", "--since", "-2min")
    assert "lost the system bus" in journal and "back on the system bus" in journal


def test_cancel_now_kills_at_once_whatever_the_grace(gs):
    n = gs.submit("alice", 'command = "trap \\"\\" TERM; sleep 1000"\ngpus = 2\ngrace = "5m"\n')
    gs.wait(n, "running")
    time.sleep(0.5)                                   # the trap is set before anyone cancels
    p = gs.sh(f"gpuschedctl cancel --now {n}", user="bob", check=False)
    assert p.returncode != 0 and "belongs to alice" in p.stderr
    assert gs.status(n)["state"] == "running"
    t0 = time.monotonic()
    out = gs.sh(f"gpuschedctl cancel --now {n}", user="alice").stdout
    assert out.strip() == f"job {n}: killed"
    st = gs.wait(n, "cancelled", timeout=20)
    assert time.monotonic() - t0 < 20                 # against a grace of 300 s
    assert st.get("signal") == "SIGKILL", st
    gpus = json.loads(gs.sh("gpuschedctl gpus --json", user="bob").stdout)["gpus"]
    assert all(g["job"] != n for g in gpus) and all(g["state"] == "free" for g in gpus)
    p = gs.sh(f"gpuschedctl cancel --now {n}", user="alice", check=False)
    assert p.returncode != 0 and "already ended" in p.stderr


def put(gs, user: str, name: str, text: str) -> None:
    """A spool entry whose name may hold any byte but / and NUL, written as `user`."""
    gs.box.run(f"python3 -c 'import os, sys; open(os.path.join(\"{SPOOL}\", bytes.fromhex(sys.argv[1]).decode()), "
               f"\"w\").write(sys.stdin.read())' {name.encode().hex()}", user=user, input=text)


def test_terminal_escapes_never_reach_a_terminal(gs):
    evil = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m\u202e"
    tag = uuid.uuid4().hex[:8]
    good = f"esc-{tag}.toml"                          # accepted: escapes in its command, env and output
    bad = f"bad-{tag}-{evil}.toml"                    # rejected for its name, which is its job's name, its
                                                      # source and in its reason
    toml_evil = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in evil)
    put(gs, "alice", good, f'command = "printf \'\\\\033]0;pwned\\\\007\'; echo {tag}"\nname = "esc-{tag}"\n'
                           f'gpus = 0\n[env]\nX = "{toml_evil}"\n')
    put(gs, "alice", bad, f'command = "true"\nname = "{toml_evil}"\n"bogus{toml_evil}" = 1\n')
    ok = gs.job_by_source("alice", good, timeout=20)
    rejected = gs.job_by_source("alice", bad, timeout=20)
    gs.wait(ok["id"], "succeeded")
    gs.wait(rejected["id"], "rejected")
    full = {j["id"]: j for j in json.loads(gs.sh("gpuschedctl list --json --all", user="alice").stdout)["jobs"]}
    assert full[ok["id"]]["source"] == good and full[rejected["id"]]["source"] == bad     # exact in JSON
    assert bad in full[rejected["id"]]["reason"] and full[rejected["id"]]["name"] == bad
    shown = json.loads(gs.sh(f"gpuschedctl show --json {ok['id']}", user="alice").stdout)["job"]
    assert shown["spec"]["command"].startswith("printf '\\033]0;pwned\\007'")

    outputs = {}
    for user in ("alice", "bob"):
        for cmd in ("list --all", "list", f"show {ok['id']}", f"show {rejected['id']}", "gpus",
                    f"cancel {rejected['id']}", f"logs {ok['id']}"):
            # on a tty, without colour: then no ESC at all may reach it
            p = gs.sh(f"NO_COLOR=1 script -qec 'gpuschedctl {cmd}' /dev/null", user=user, check=False)
            outputs[(user, cmd)] = p.stdout + p.stderr
    for (user, cmd), out in outputs.items():
        assert not any(c in out.replace("\r\n", "\n") for c in RAW), (user, cmd, out)
    # in colour, the only escapes are list's own colour codes (SGR, ESC [ digits m)
    coloured = gs.sh("script -qec 'gpuschedctl list --all' /dev/null", user="bob", check=False).stdout
    assert "\x1b[" in coloured and not any(c in re.sub(r"\x1b\[[0-9;]*m", "", coloured).replace("\r\n", "\n")
                                           for c in RAW), coloured
    assert "\\x1b]0;pwned\\x07" in outputs[("alice", f"show {rejected['id']}")]        # escaped, still there
    assert f"esc-{tag}" in outputs[("bob", "list --all")]
    assert "\\x1b]0;pwned\\x07" in outputs[("alice", f"logs {ok['id']}")]               # on a tty: escaped
    raw_log = gs.sh(f"gpuschedctl logs {ok['id']}", user="alice").stdout                # piped: exact
    assert raw_log.startswith("\x1b]0;pwned\x07")
    assert gs.active()
