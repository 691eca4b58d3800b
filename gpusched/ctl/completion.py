"""`gpuschedctl __complete jobs|names`: what the shell completions (made by gpusched/manual) ask for on Tab,
the caller's own job ids (each with its name and state, for shells that show a description) or job names,
one per line. Not listed by --help: it is for the completion scripts.

It runs on every Tab, so it is quick and bounded: a short bus timeout, a deadline for paging through the
queue, at most MAX_LINES lines. It prints only the caller's own jobs (their ids and names are theirs to know;
an administrator's Tab too lists only their own), and every name through printable, so a name can't put an
escape on the terminal or a tab or line break into the lines the shell splits."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import time
from typing import Any, Callable

from gpusched.ctl import client as clientmod
from gpusched.ctl.common import printable

MAX_LINES = 500            # newest first: more than anyone scrolls through after a Tab
BUS_TIMEOUT = 2.0          # seconds for one call: a hung daemon costs a moment, not the prompt
DEADLINE = 2.0             # seconds of paging through a very long queue before answering with what was found


def own_jobs(client: Any, user: str, all: bool, deadline: float,
             clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:
    """The jobs of `user` in the daemon's listing (all: with the finished ones it keeps), page by page until
    the last page or the deadline."""
    jobs, after = [], 0
    while True:
        reply = json.loads(client.raw("ListPage", all, after, False))
        jobs += [j for j in reply["ok"] if isinstance(j, dict) and j.get("user") == user]
        after = reply.get("last") or 0
        if not after or clock() > deadline:
            return jobs


def lines(kind: str, jobs: list[dict[str, Any]]) -> list[str]:
    """`jobs`: "ID<tab>NAME (STATE)"; `names`: each name once; newest first, at most MAX_LINES."""
    jobs = sorted(jobs, key=lambda j: -int(j["id"]))
    if kind == "names":
        seen = dict.fromkeys(printable(str(j.get("name", ""))) for j in jobs)
        return [n for n in seen if n][:MAX_LINES]
    return [f"{int(j['id'])}\t{printable(str(j.get('name', '')))} ({printable(str(j.get('state', '')))})"
            for j in jobs][:MAX_LINES]


def cmd_complete(args: argparse.Namespace) -> int:
    user = pwd.getpwuid(os.getuid()).pw_name
    client = clientmod.Client(timeout=BUS_TIMEOUT)
    # names complete --name filters over history too; job ids: finished jobs only where the verb reads them
    jobs = own_jobs(client, user, args.all or args.kind == "names", time.monotonic() + DEADLINE)
    for line in lines(args.kind, jobs):
        print(line)
    return 0


def register(sub: Any) -> None:
    # no help=: argparse (3.11) would list it as "==SUPPRESS==", and shtab completes only verbs with a help
    p = sub.add_parser("__complete")
    p.add_argument("kind", choices=("jobs", "names"))
    p.add_argument("--all", action="store_true", help="with the finished jobs the daemon still keeps")
    p.set_defaults(fn=cmd_complete)
