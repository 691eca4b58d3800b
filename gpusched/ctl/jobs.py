"""submit, show, logs and the verbs on jobs (cancel, hold, release, requeue)."""

from __future__ import annotations

import argparse
import codecs
import os
import sys
import time
import tomllib
from typing import Any

from gpusched.ctl import client as clientmod
from gpusched.ctl import offline
from gpusched.ctl.common import (print_json, UNREACHABLE, CtlError, _field, _resolve, _shown,
                                 job_target, printable, usage_value, warn)
from gpusched.units import format_size

def cmd_submit(args: argparse.Namespace) -> int:
    from gpusched import jobfile                       # here: `list` and `show` need no job-file parser
    from gpusched.ctl import spoolfile
    try:
        with open(args.file, "rb") as f:
            data = f.read(jobfile.MAX_BYTES + 1)
    except OSError as e:
        raise CtlError(f"{args.file}: {e.strerror}") from None
    base = os.path.basename(args.file)
    data = _with_options(data, args)
    spoolfile.check(data, base, args)           # the daemon checks again; failing here loses nothing
    name, ino = spoolfile.drop(data, base[:-5] if base.endswith(".toml") else base, args)
    if args.no_wait:
        print(printable(name))
        return 0
    print(spoolfile.taken(clientmod.Client(), name, ino, args.timeout)["id"])
    return 0


def _with_options(data: bytes, args: argparse.Namespace) -> bytes:
    """The job file with submit's --after/--after-ok/--after-notok/--hold put in as keys (at its top, where
    a key is the file's own and not a table's); a key the file already has is refused, not merged."""
    extra = {"after": args.after, "after_ok": args.after_ok, "after_notok": args.after_notok}
    lines = [f"{k} = [{', '.join(map(str, v))}]" for k, v in extra.items() if v]
    if args.hold:
        lines.append("hold = true")
    if not lines:
        return data
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        doc = {}                                       # the parse below says what is wrong with it
    for line in lines:
        key = line.split(" ", 1)[0]
        if key in doc:
            raise CtlError(f"{args.file} already says {key}; change it there, not with --{key.replace('_', '-')}")
    return "\n".join(lines).encode() + b"\n" + data



def cmd_show(args: argparse.Namespace) -> int:
    try:
        client = clientmod.Client()
    except CtlError as e:                              # gpusched down: the caller's own status file
        if e.code != UNREACHABLE:
            raise
        job = offline.job(args, args.id, e)
    else:
        job = client.call("Show", _resolve(client, args.id))
    if args.json:
        print_json("job", job)
        return 0
    spec = job.pop("spec", {})
    for key, value in job.items():
        if key == "gpus":
            value = ", ".join(f"{g['index']} ({g['uuid']})" for g in value) or "-"
        if key == "history":
            for h in value:
                why = f" (preempted: {h['reason']})" if h.get("preempted") and h.get("reason") else ""
                _field(f"attempt {h.get('attempt')}", f"{h.get('outcome')}{why}")
            continue
        if key == "retry_gpu_memory":                  # on_gpu_oom: what later attempts reserve
            value = format_size(value)
        if key == "usage":
            for k, v in value.items():
                _field(k, usage_value(k, v))
            continue
        _field(key, value)
    for key, value in spec.items():
        _field(key, value)
    return 0



def cmd_logs(args: argparse.Namespace) -> int:
    from gpusched.model import FINAL, State
    try:
        client = clientmod.Client()
    except CtlError as e:                              # gpusched down: the log its status file names
        if e.code != UNREACHABLE:
            raise
        job = offline.job(args, args.id, e)
        args.id, args.follow = job["id"], False        # nobody to say when it ends: what is there now
    else:
        args.id = _resolve(client, args.id)
        job = client.call("Show", args.id)
    while args.follow and job["state"] == "queued" and not job.get("log"):
        time.sleep(0.25)                               # wait for it to start
        job = client.call("Show", args.id)
    path = job.get("log")
    if not path:
        if "source" not in job:                        # the daemon hides private fields from others
            raise CtlError(f"job {args.id} belongs to {job['user']}; its log is readable only by "
                           f"{job['user']} and root")
        raise CtlError(f"job {args.id} has no log yet: it hasn't started")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CtlError(f"job {args.id}: no output yet ({path})") from None
    except PermissionError:
        raise CtlError(f"job {args.id}: the log {path} is readable only by {job['user']} and root") from None
    out = sys.stdout.buffer
    # The log is the job's own output, but it is not only its owner who reads it (root and admins do): on
    # a terminal its escapes would act on the reader's terminal, so there it is shown like `less` shows
    # it, controls escaped (newlines and tabs kept; a lone CR, a progress bar's, shown as a line end).
    # Piped or redirected, or with --raw, it is copied byte for byte, like `cat`.
    escape = not args.raw and out.isatty()
    decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")

    def emit(chunk: bytes, final: bool = False) -> None:
        if escape:
            text = decoder.decode(chunk, final).replace("\r\n", "\n").replace("\r", "\n")
            chunk = printable(text, keep="\n\t").encode()
        out.write(chunk)
        out.flush()

    with f:
        while True:
            chunk = f.read(65536)
            if chunk:
                emit(chunk)
                continue
            if not args.follow:
                emit(b"", final=True)
                return 0
            if client.call("Show", args.id)["state"] in FINAL | {State.QUEUED}:   # ended or requeued
                emit(f.read(), final=True)
                return 0
            time.sleep(0.25)


def cmd_cancel(args: argparse.Namespace) -> int:
    args.method = "CancelNow" if args.now else "Cancel"
    return cmd_act(args)


def cmd_requeue(args: argparse.Namespace) -> int:
    args.method = "RequeueHeld" if args.hold else "Requeue"
    return cmd_act(args)


_VERBS = {"Cancel": "cancel", "CancelNow": "cancel-now", "Hold": "hold", "Release": "release",
          "Requeue": "requeue"}


def cmd_act(args: argparse.Namespace) -> int:
    """cancel, hold, release, requeue: each id in turn (an array's id: each of its jobs the verb applies to;
    ID[i]: that element alone); non-zero if any was refused."""
    client = clientmod.Client()
    failed = 0
    for target in args.ids:
        job_id, index = target
        try:
            if index is None:
                answer = client.call(args.method, job_id)
            else:
                answer = client.call("ElementAct", _VERBS[args.method], job_id, index)
            print(f"job {_shown(target)}: {printable(answer)}")
        except CtlError as e:
            warn(str(e))
            failed += 1
    return 1 if failed else 0




def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="validate a job file, drop it into the spool, print the job id")
    p.add_argument("file")
    p.add_argument("--no-wait", action="store_true", help="don't wait for the daemon to take it")
    p.add_argument("--timeout", type=float, default=30.0)
    for opt in ("after", "after-ok", "after-notok"):
        p.add_argument(f"--{opt}", type=int, action="append", default=[], metavar="ID",
                       help=f"add job ID to the file's {opt.replace('-', '_')} (repeatable)")
    p.add_argument("--hold", action="store_true", help="queue it on hold (`gpuschedctl release` lets it start)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("show", help="everything about one job (ID, or ID[i]: element i of array ID)")
    p.add_argument("id", type=job_target)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("logs", help="a job's output (ID, or ID[i]: element i of array ID)")
    p.add_argument("id", type=job_target)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.add_argument("--raw", action="store_true",
                   help="copy the output byte for byte even to a terminal (by default control characters "
                        "are escaped there)")
    p.set_defaults(fn=cmd_logs)

    p = sub.add_parser("cancel", help="cancel queued or running jobs (running ones get their grace); an "
                                      "array's id: all its jobs; ID[i] or ID_i: element i of array ID")
    p.add_argument("ids", type=job_target, nargs="+")
    p.add_argument("--now", action="store_true",
                   help="kill running jobs at once (SIGKILL to all their processes), whatever their grace")
    p.set_defaults(fn=cmd_cancel)

    for verb, method, text in (("hold", "Hold", "keep queued jobs from starting until released"),
                               ("release", "Release", "let held jobs start"),
                               ("requeue", "Requeue", "stop running jobs (with their grace) and queue them again")):
        p = sub.add_parser(verb, help=text + " (an array's id: all its jobs; ID[i]: element i)")
        p.add_argument("ids", type=job_target, nargs="+")
        p.set_defaults(fn=cmd_act, method=method)
        if verb == "requeue":
            p.add_argument("--hold", action="store_true", help="hold them in the queue until released")
            p.set_defaults(fn=cmd_requeue)
