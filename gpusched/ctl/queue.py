"""list: the queue (an array as one line unless --expand), page by page from the daemon."""

from __future__ import annotations

import argparse
from typing import Any
import json
import sys

from gpusched.ctl import client as clientmod
from gpusched.ctl.common import JSON_VERSION, safe

def cmd_list(args: argparse.Namespace) -> int:
    client = clientmod.Client()
    out = sys.stdout
    after, first = 0, True
    while True:                                        # page by page: a bus message has a size limit
        if args.json or args.expand:
            raw = client.raw("ListPage", args.all, after, not args.json)
        else:
            raw = client.raw("ListFolded", args.all, after)   # an array's jobs as one line
        if args.json:
            # printed as the daemon sent it: re-encoding 100,000 jobs here would cost more than the listing
            head, _, body = raw.partition(', "ok": [')
            last = int(head[len('{"last": '):])
            body = body[:-2]                           # drop "]}"
            out.write(('{"version": %d, "jobs": [' % JSON_VERSION if first else (",\n" if body else "")) + body)
        else:
            reply = json.loads(raw)
            last = reply["last"]
            if reply["ok"]:                            # rendered (and escaped) by the daemon; again here
                out.write(safe(reply["ok"]) + "\n")
        first = False
        if not last:
            break
        after = last
    if args.json:
        out.write("]}\n")
    return 0




def register(sub: Any) -> None:
    p = sub.add_parser("list", help="jobs in the queue and running (--all: with finished ones); an array "
                                    "as one line (--expand: each of its jobs)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-e", "--expand", action="store_true", help="list each job of an array on its own line")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

