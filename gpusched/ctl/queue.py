"""list: the queue (an array as one line unless --expand).

Where it comes from, fastest first: the listing files the daemon keeps under /run (listfiles.py: no bus,
no PyGObject); the bus, page by page (--all, or when the files can't answer: `--debug` says why); and,
when gpusched is not running at all, the caller's own jobs from their status files (offline.py).

On a terminal the table is fitted to its width, SUBMITTED reads "3m ago" and states are in colour
(render.py); piped or redirected it is the plain table scripts have always read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Iterable

from gpusched import listfiles
from gpusched.ctl import render
from gpusched.ctl.common import JSON_VERSION, UNREACHABLE, CtlError, safe, warn


def cmd_list(args: argparse.Namespace) -> int:
    term = render.terminal(choice=args.color)
    if not args.all:
        try:
            if args.json:
                _write_json(listfiles.read(lambda listing: listing.entries(os.getuid())))
            else:
                _from_files(not args.expand, term)
            return 0
        except listfiles.Unusable as e:
            if args.debug:
                warn(f"listing files not used: {e}; asking gpusched on the bus")
    from gpusched.ctl import client as clientmod        # here: PyGObject costs more than the files do
    try:
        client = clientmod.Client()
    except CtlError as e:
        if e.code != UNREACHABLE:
            raise
        from gpusched.ctl import offline
        return offline.cmd_list(args, term, e)
    if args.json:
        _json_from_bus(client, args.all)
    else:
        _table_from_bus(client, args.all, not args.expand, term)
    return 0


def _from_files(folded: bool, term: render.Terminal) -> None:
    def read(listing: listfiles.Listing) -> tuple[str, list[bytes], list[int]]:
        return (listing.header, *listing.table(folded, with_submitted=term.tty))
    header, chunks, submitted = listfiles.read(read)
    if not term.tty and not term.colour:
        out = sys.stdout.buffer                        # as the daemon rendered (and escaped) it, byte for byte
        out.write(header.encode() + b"\n")
        for chunk in chunks:
            out.write(chunk + b"\n")
        return
    rows = [row for chunk in chunks for row in chunk.decode().split("\n")]
    write_table(header, rows, submitted, term)


def write_table(header: str, rows: list[str], submitted: list[int] | None, term: render.Terminal) -> None:
    """The queue's table: on a terminal (or with --color=always) fitted, "3m ago" and coloured; else as is.
    Rows come escaped (the daemon's listing.printable); escaped again here all the same, before the only
    escape codes that may reach the terminal, render's own colours, are added."""
    header, rows = safe(header), [safe(row) for row in rows]
    lines: Iterable[str] = [header, *rows]
    if term.tty or term.colour:
        lines = render.queue_table(header, rows, submitted, time.time(), term)
    sys.stdout.write("".join(line + "\n" for line in lines))


def _write_json(chunks: list[bytes]) -> None:
    out = sys.stdout.buffer
    out.write(b'{"version": %d, "jobs": [' % JSON_VERSION)
    out.write(listfiles.ENTRY_SEP.join(chunk for chunk in chunks if chunk))     # the files' entries as they are
    out.write(b"]}\n")


def _json_from_bus(client: Any, all: bool) -> None:
    out = sys.stdout
    after, first = 0, True
    while True:                                        # page by page: a bus message has a size limit
        raw = client.raw("ListPage", all, after, False)
        # printed as the daemon sent it: re-encoding 100,000 jobs here would cost more than the listing
        head, _, body = raw.partition(', "ok": [')
        last = int(head[len('{"last": '):])
        body = body[:-2]                               # drop "]}"
        out.write(('{"version": %d, "jobs": [' % JSON_VERSION if first else (",\n" if body else "")) + body)
        first = False
        if not last:
            break
        after = last
    out.write("]}\n")


def _table_from_bus(client: Any, all: bool, folded: bool, term: render.Terminal) -> None:
    rows: list[str] = []
    submitted: list[int] = []
    after = 0
    while True:
        if folded:
            reply = json.loads(client.raw("ListFolded", all, after))   # an array's jobs as one line
        else:
            reply = json.loads(client.raw("ListPage", all, after, True))
        if reply["ok"]:                                # rendered (and escaped) by the daemon; again here
            rows.extend(safe(reply["ok"]).split("\n"))
        submitted.extend(reply.get("submitted", ()))   # a daemon before 11 sends none: dates stay dates
        if not reply["last"]:
            break
        after = reply["last"]
    header, rows = rows[0], rows[1:]
    write_table(header, rows, submitted if len(submitted) == len(rows) else None, term)


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="jobs in the queue and running (--all: with finished ones); an array "
                                    "as one line (--expand: each of its jobs)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-e", "--expand", action="store_true", help="list each job of an array on its own line")
    p.add_argument("--json", action="store_true")
    p.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto",
                   help="colour the states: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), "
                        "always, never")
    p.set_defaults(fn=cmd_list)
