"""stats and history: accounting (issue 9)."""

from __future__ import annotations

import argparse
from typing import Any
import time
from datetime import datetime

from gpusched.ctl import client as clientmod
from gpusched.ctl.common import print_json, _energy, _table, parse_since, usage_value, warn

def cmd_stats(args: argparse.Namespace) -> int:
    rows = clientmod.Client().call("Usage", args.user or "", parse_since(args.since, time.time()))
    if args.json:
        print_json("users", rows)
        return 0
    if not rows:
        print("no jobs in that period")
        return 0
    cpu = any("cpu_seconds" in r for r in rows)
    table = [("USER", "JOBS", "RUNNING", "GPU-H RESERVED", "GPU-H USED", "ENERGY", "WAIT MEAN", "WAIT MAX")
             + (("CPU TIME", "PEAK RAM") if cpu else ())]
    for r in rows:
        table.append((r["user"], str(r["jobs"]), str(r["running"]), f"{r['gpu_hours_reserved']:.3f}",
                      f"{r['gpu_hours_used']:.3f}", _energy(r["energy_joules"], r.get("energy_estimated", False)),
                      usage_value("wait_mean", r.get("wait_mean")), usage_value("wait_max", r.get("wait_max")))
                     + ((usage_value("cpu_seconds", r.get("cpu_seconds")),
                         usage_value("memory_peak", r.get("memory_peak_max"))) if cpu else ()))
    _table(table)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    since, limit = parse_since(args.since, time.time()), max(1, min(args.limit, 5000))
    if args.tag:                                       # HistoryTagged: History with a tag (a newer daemon's)
        reply = clientmod.Client().call("HistoryTagged", args.user or "", args.name or "", args.state or "",
                                        args.tag, since, limit)
    else:
        reply = clientmod.Client().call("History", args.user or "", args.name or "", args.state or "", since, limit)
    jobs = reply["jobs"]
    if args.json:
        print_json("jobs", jobs, more=reply.get("more", 0))
    elif jobs:
        table = [("ID", "USER", "NAME", "STATE", "ENDED", "GPUS", "GPU-H RES", "GPU-H USED", "GPU MEM PEAK",
                  "ENERGY", "CPU TIME", "PEAK RAM")]
        for j in jobs:
            u = j.get("usage") or {}
            ended = j.get("ended")
            table.append((str(j["id"]), j["user"], j["name"], j["state"],
                          datetime.fromisoformat(ended).astimezone().strftime("%m-%d %H:%M:%S") if ended else "-",
                          ",".join(str(g["index"]) for g in j.get("gpus") or ()) or "-",
                          usage_value("gpu_hours_reserved", u.get("gpu_hours_reserved")),
                          usage_value("gpu_hours_used", u.get("gpu_hours_used")),
                          usage_value("gpu_memory_peak", u.get("gpu_memory_peak")),
                          _energy(u["energy_joules"], u.get("energy_estimated", False)) if "energy_joules" in u
                          else "-",
                          usage_value("cpu_seconds", j.get("cpu_seconds")),
                          usage_value("memory_peak", j.get("memory_peak"))))
        _table(table)
    else:
        print("no finished jobs match")
    if reply.get("more") and not args.json:
        warn(f"{reply['more']} older matching job(s) not shown (--limit, --since)")
    return 0




def register(sub: Any) -> None:
    p = sub.add_parser("stats", help="per user: jobs, GPU-hours reserved and used, energy, waits")
    p.add_argument("--user", help="only this user (others than yourself: admins only)")
    p.add_argument("--since", metavar="D", help='jobs ended since: a duration back ("7d") or a date ("2026-11-01")')
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_stats)

    p = sub.add_parser("history", help="finished jobs with their accounting (yours; admins: everyone's)")
    p.add_argument("--user", help="this user's jobs (another's: what list --all shows, without accounting)")
    p.add_argument("--name", help="only jobs of this name")
    p.add_argument("--state", help="only jobs that ended so (succeeded, failed, cancelled, dependency_failed, "
                                   "rejected)")
    p.add_argument("--tag", help="only jobs whose file has this tag (`tags`, or submit --tag)")
    p.add_argument("--since", metavar="D", help='ended since: a duration back ("7d") or a date ("2026-11-01")')
    p.add_argument("--limit", type=int, default=1000, help="the newest N (default 1000, at most 5000)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_history)

