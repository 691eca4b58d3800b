"""The server's state: gpus; and admins' switches: drain/resume, pause/unpause a user."""

from __future__ import annotations

import argparse
from typing import Any

from gpusched.ctl import client as clientmod
from gpusched.ctl.common import print_json, _table, printable, safe
from gpusched.units import format_size

def cmd_switch(args: argparse.Namespace) -> int:
    """drain/resume the server, pause/unpause a user (admins)."""
    client = clientmod.Client()
    if args.command in ("drain", "resume"):
        print(printable(client.call("Drain", args.command == "drain")))
    else:
        print(f"{args.user}: {printable(client.call('Pause', args.user, args.command == 'pause'))}")
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    info = clientmod.Client().call("Gpus")
    if args.json:
        print_json("gpus", info["gpus"], simulated=info["simulated"], error=info.get("error"))
        return 0
    if info.get("error"):
        print(f"GPU probe failing: {safe(info['error'])}")
    if not info["gpus"]:
        print("no GPUs")
        return 0
    rows = [("GPU", "NAME", "MEMORY", "FREE", "STATE", "UUID")]
    for g in info["gpus"]:
        more = f" and {g['foreign_pids_more']} more" if g.get("foreign_pids_more") else ""
        state = g["state"] + (f" (pids {','.join(map(str, g['foreign_pids']))}{more})" if g["foreign_pids"] else "")
        rows.append((str(g["index"]), g["name"], format_size(g["memory_total"]), format_size(g["memory_free"]),
                     state, g["uuid"]))
    _table(rows)
    foreign = [("GPU", "PID", "USER", "GPU MEMORY", "COMMAND")]
    for g in info["gpus"]:
        for p in g.get("foreign") or ():
            memory = format_size(p["gpu_memory"]) if p.get("gpu_memory") is not None else "-"
            foreign.append((str(g["index"]), str(p["pid"]), p["user"], memory, p["cmdline"] or p["name"]))
    if len(foreign) > 1:
        print("\nprocesses gpusched did not start:")
        _table(foreign)
    if info["simulated"]:
        print("(simulated GPUs, from the config's [[gpus.simulated]])")
    return 0




def register(sub: Any) -> None:
    p = sub.add_parser("gpus", help="the GPUs and who holds them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_gpus)
    for verb, text in (("drain", "admins: start no new job (running ones finish); kept across restarts"),
                       ("resume", "admins: undo drain")):
        sub.add_parser(verb, help=text).set_defaults(fn=cmd_switch)
    for verb, text in (("pause", "admins: start none of USER's queued jobs until unpaused"),
                       ("unpause", "admins: undo pause")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("user")
        p.set_defaults(fn=cmd_switch)

