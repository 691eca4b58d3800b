"""submit, show, logs and the verbs on jobs (cancel, hold, release, requeue)."""

from __future__ import annotations

import argparse
import codecs
import os
import stat
import sys
import time
import tomllib
from typing import Any

from gpusched.ctl import client as clientmod
from gpusched.ctl import jobopts, offline
from gpusched.ctl.common import (FAILED, UNREACHABLE, USAGE, print_json, CtlError, _field, _resolve, _shown,
                                 job_target, printable, usage_value, warn)
from gpusched.ctl.waiting import dry_run_text
from gpusched.units import format_size

def cmd_submit(args: argparse.Namespace) -> int:
    """submit FILE|DIR..., or submit [OPTIONS] -- CMD: every file is checked before any is queued (one invalid
    file: nothing is submitted); then each is dropped into the spool and its id printed, one per line."""
    from gpusched import jobfile
    from gpusched.ctl import spoolfile
    jobs = _jobs(args)
    invalid = 0
    for label, _stem, data in jobs:
        try:
            spoolfile.check(data, _file_name(label), args)   # the daemon checks again; failing here loses nothing
        except jobfile.JobFileError as e:
            warn(f"invalid job file {label}:\n{e}")
            invalid += 1
    if invalid:
        raise CtlError(f"{invalid} of {len(jobs)} job file(s) invalid: nothing was submitted; fix them and "
                       f"submit again" if len(jobs) > 1 else f"{jobs[0][0]} is invalid: nothing was submitted")
    if args.dry_run:
        return _dry_run(jobs)
    client = None if args.no_wait else clientmod.Client()
    failed = 0
    for label, stem, data in jobs:
        name, ino = spoolfile.drop(data, stem, args)
        if client is None:
            print(printable(name))
            continue
        try:
            print(spoolfile.taken(client, name, ino, args.timeout)["id"])
        except CtlError as e:                            # rejected by the daemon: said, the others go on
            if e.code != FAILED or len(jobs) == 1:
                raise
            warn(f"{label}: {e}")
            failed += 1
    return FAILED if failed else 0


def _jobs(args: argparse.Namespace) -> list[tuple[str, str, bytes]]:
    """What to submit: (label for messages, spool name stem, the file's bytes with submit's own keys)."""
    if args.job_command:
        if args.files:
            raise CtlError("give job files, or a command after --, not both (gpuschedctl submit --gpus 1 -- "
                           "python train.py)", USAGE)
        try:
            doc = jobopts.job_doc(args, args.job_command)
        except jobopts.OptionError as e:
            raise CtlError(str(e), USAGE) from None
        label = f"the command {printable(' '.join(args.job_command))[:60]!r}"
        return [(label, doc["name"], _with_options(jobopts.job_toml(doc), args, label))]
    given = [f"--{name.replace('_', '-')}" for name in _JOB_OPTIONS if getattr(args, name, None) not in (None, [])]
    if given:
        raise CtlError(f"{', '.join(given)}: job options describe a command given after -- (gpuschedctl submit "
                       f"--gpus 1 -- python train.py); a job file says them itself", USAGE)
    if not args.files:
        raise CtlError("nothing to submit: give job files, a directory of them, or a command after -- "
                       "(gpuschedctl submit --gpus 1 -- python train.py)", USAGE)
    out = []
    for path in _expand(args.files):
        data = _read(path)
        base = os.path.basename(path)
        out.append((path, base[:-5] if base.endswith(".toml") else base, _with_options(data, args, path)))
    return out


# jobopts.add_options' destinations: given with job files, they are a mistake (the file says them)
_JOB_OPTIONS = ("name", "gpus", "gpu_memory", "gpu_type", "job_class", "priority", "time_limit", "memory", "cpus",
                "tasks", "workdir", "env", "export", "tags", "conda")
MAX_FILES = 10000          # job files one submit takes (a directory's *.toml)


def _expand(paths: list[str]) -> list[str]:
    """Each path, a directory standing for its *.toml files (not its subdirectories' nor hidden ones), sorted."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            try:
                names = sorted(n for n in os.listdir(path) if n.endswith(".toml") and not n.startswith("."))
            except OSError as e:
                raise CtlError(f"{path}: {e.strerror}; nothing was submitted") from None
            if not names:
                raise CtlError(f"{path}: a directory with no *.toml job file in it; nothing was submitted")
            out += [os.path.join(path, n) for n in names if not os.path.isdir(os.path.join(path, n))]
        else:
            out.append(path)
        if len(out) > MAX_FILES:
            raise CtlError(f"more than {MAX_FILES} job files at once; submit them in parts (or as one [sweep] "
                           f"file, docs/jobfile.md)")
    return out


def _read(path: str) -> bytes:
    """A job file's bytes (at most one over the limit, for the check to refuse): a regular file only, looked at
    before it is opened and again once open without blocking, so a FIFO or a terminal in a directory (anyone's
    may be given) can't hang submit, and a device is never read."""
    from gpusched import jobfile
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise CtlError(f"{path}: not a regular file; nothing was submitted")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror}; nothing was submitted") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CtlError(f"{path}: not a regular file; nothing was submitted")
        try:
            return f.read(jobfile.MAX_BYTES + 1)
        except OSError as e:
            raise CtlError(f"{path}: {e.strerror}; nothing was submitted") from None


def _file_name(label: str) -> str:
    return os.path.basename(label) if os.path.sep in label or label.endswith(".toml") else "command.toml"


def _dry_run(jobs: list[tuple[str, str, bytes]]) -> int:
    """submit --dry-run: the daemon's own verdict on each file as the caller's, and where and when it would
    start now; nothing is written to the spool."""
    try:
        client = clientmod.Client()
    except CtlError as e:
        raise CtlError(f"valid here, but {e}; so nothing can be said of where it would run", e.code) from None
    failed = 0
    for label, _stem, data in jobs:
        try:
            d = client.call("Check", _file_name(label), data.decode("utf-8", "surrogateescape"))
        except CtlError as e:
            if e.code != FAILED:
                raise
            warn(f"{label}: {e}")
            failed += 1
            continue
        print(f"{printable(label)}: valid: {printable(d['name'])} of {printable(d['user'])}, "
              f"{d['jobs']} job(s), {d['gpus_requested']} GPU(s) each, priority {d['priority']}")
        print("  " + printable(dry_run_text(d, time.time())))
    return FAILED if failed else 0


def _with_options(data: bytes, args: argparse.Namespace, label: str) -> bytes:
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
            raise CtlError(f"{label} already says {key}; change it there, not with --{key.replace('_', '-')}")
    return "\n".join(lines).encode() + b"\n" + data


def cmd_priority(args: argparse.Namespace) -> int:
    job_id, index = args.id
    answer = clientmod.Client().call("Priority", job_id, -1 if index is None else index, args.priority)
    print(f"job {_shown(args.id)}: {printable(answer)}")
    return 0


def _priority(text: str) -> int:
    from gpusched import jobfile
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number (lower is more urgent)") from None
    lo, hi = jobfile.PRIORITY_RANGE
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{value} is out of range ({lo} to {hi})")
    return value



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
        if _state(client, args.id) != "queued":
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
            if _state(client, args.id) in FINAL | {State.QUEUED}:   # ended or requeued
                emit(f.read(), final=True)
                return 0
            time.sleep(0.25)


def _state(client: Any, job_id: int) -> str:
    """A job's state, for the polls of logs -f: from Outcomes, cheap whatever the queue holds (Show of a
    queued job works out its place in the whole queue, too much to ask four times a second)."""
    return str(client.call("Outcomes", [job_id])[0]["state"])


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
    p = sub.add_parser("submit", help="submit job files (or a directory's *.toml), or a command after --: "
                                      "validate, drop into the spool, print one job id per file",
                       usage="%(prog)s [-h] [--dry-run] [--no-wait] [OPTIONS] FILE|DIR... \n"
                             "       %(prog)s [--dry-run] [--no-wait] [JOB OPTIONS] -- COMMAND [ARGS...]",
                       description="Submit job files (a directory: each *.toml in it, sorted), or a command "
                                   "given after -- (the job options then make its job file). Every file is "
                                   "checked first: if one is invalid, nothing is submitted. Then each is queued "
                                   "and its id printed, one per line (an array's id for a [sweep] file); a "
                                   "file the daemon rejects is said, the others are queued, and the exit "
                                   "status is 1.")
    p.add_argument("files", nargs="*", metavar="FILE|DIR")
    p.add_argument("--dry-run", action="store_true",
                   help="check the files as gpusched would (as yours) and say where and when each would start "
                        "now; nothing is queued")
    p.add_argument("--no-wait", action="store_true",
                   help="don't wait for the daemon to take them: print the spool names instead of job ids")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the daemon to take each file (default 30)")
    for opt in ("after", "after-ok", "after-notok"):
        p.add_argument(f"--{opt}", type=int, action="append", default=[], metavar="ID",
                       help=f"add job ID to the file's {opt.replace('-', '_')} (repeatable)")
    p.add_argument("--hold", action="store_true", help="queue it on hold (`gpuschedctl release` lets it start)")
    jobopts.add_options(p)
    p.set_defaults(fn=cmd_submit, takes_command=True)

    p = sub.add_parser("priority", help="change a queued job's priority (lower is more urgent, among your own "
                                        "jobs); yours: only less urgent; admins: any",
                       description="Change a queued job's priority, the job file's `priority`: lower is more "
                                   "urgent, and it orders only its owner's own jobs. Owners may only make a job "
                                   "less urgent (N at least its current priority, and never below the server's "
                                   "min_user_priority); root and admins may set any. An array's id: each of "
                                   "its queued jobs.")
    p.add_argument("id", type=job_target, metavar="ID", help="a job id, an array's id, or ID[i] / ID_i")
    p.add_argument("priority", type=_priority, metavar="N")
    p.set_defaults(fn=cmd_priority)

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
