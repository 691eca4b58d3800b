"""gpuschedctl: submit, list, show, logs, cancel, gpus. Talks to the daemon over the system bus; drops job
files into the spool as the calling user; reads logs straight from the file (the file's mode decides who).

Everything it prints for people goes through listing.printable (names, reasons and file names come from
other users: a raw ESC or bidi override would write on the reader's terminal); --json stays exact. A job's
log is escaped the same way (keeping newlines and tabs) when it goes to a terminal, and copied raw when
stdout is a pipe or a file, or with --raw: see cmd_logs.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import pwd
import re
import sys
import time
import tomllib
from datetime import datetime
from typing import Any, NoReturn

from gpusched import config as configmod
from gpusched import jobfile
from gpusched.access import Access, group_names
from gpusched.listing import printable
from gpusched.model import FINAL, State
from gpusched.units import format_duration, format_size, parse_duration

CALL_TIMEOUT = 120.0       # seconds: a daemon that hangs gets an error, not a client that waits for ever


class CtlError(Exception):
    pass


def safe(text: str) -> str:
    """For people: each line through printable (the line breaks themselves are ours)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def warn(message: str) -> None:
    print(f"gpuschedctl: {safe(message)}", file=sys.stderr)


def die(message: str, code: int = 1) -> NoReturn:
    warn(message)
    sys.exit(code)


class Client:
    def __init__(self) -> None:
        try:
            from gi.repository import GLib
            from pydbus import SystemBus
            self._glib_error = GLib.Error
            self._api = SystemBus().get("org.gpusched1", "/org/gpusched1")
        except Exception as e:  # noqa: BLE001 - no bus, no daemon, no permission: one clear line
            raise CtlError(f"can't reach gpusched on the system bus ({bus_error(e)}); "
                           f"is gpusched.service running?") from None

    def raw(self, method: str, *args: Any) -> str:
        try:
            raw = getattr(self._api, method)(*args, timeout=CALL_TIMEOUT)
        except self._glib_error as e:
            raise CtlError(f"gpusched did not answer {method}: {bus_error(e)}") from None
        except AttributeError:
            raise CtlError(f"this gpusched has no {method} (is the daemon older than gpuschedctl? "
                           f"restart gpusched.service)") from None
        if not raw.startswith(('{"ok": ', '{"last": ')):
            try:
                reply = json.loads(raw)
            except ValueError:
                reply = {}
            raise CtlError(reply.get("error") or f"unexpected answer to {method}: {raw[:200]}")
        return raw

    def call(self, method: str, *args: Any) -> Any:
        reply = json.loads(self.raw(method, *args))
        if "error" in reply:
            raise CtlError(reply["error"])
        return reply["ok"]


# what the bus's own errors mean for someone running gpuschedctl
_BUS_ERRORS = {
    "org.freedesktop.DBus.Error.ServiceUnknown": "gpusched is not on the system bus (not running, or "
                                                 "reconnecting after a bus restart)",
    "org.freedesktop.DBus.Error.NameHasNoOwner": "gpusched is not on the system bus (not running, or "
                                                 "reconnecting after a bus restart)",
    "org.freedesktop.DBus.Error.NoReply": "no answer in time (gpusched is busy or hung)",
    "org.freedesktop.DBus.Error.Timeout": "no answer in time (gpusched is busy or hung)",
    "org.freedesktop.DBus.Error.LimitsExceeded": "the message was over the bus's size limit",
    "org.freedesktop.DBus.Error.AccessDenied": "the system bus refused the call",
    "org.freedesktop.DBus.Error.Disconnected": "the connection to the system bus was lost",
    "org.freedesktop.DBus.Error.UnknownMethod": "this gpusched does not know that call (is the daemon older "
                                                "than gpuschedctl? restart gpusched.service)",
}


def bus_error(e: Exception) -> str:
    """A bus error in words: what it means, then the bus's own name and text for the curious."""
    try:
        from gi.repository import Gio, GLib
    except ImportError:
        return str(e)
    if not isinstance(e, GLib.Error):
        return str(e)
    if not Gio.DBusError.is_remote_error(e):
        if e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
            return f"no answer within {CALL_TIMEOUT:.0f}s (gpusched is busy or hung)"
        return e.message
    name = Gio.DBusError.get_remote_error(e)
    text = e.message.removeprefix(f"GDBus.Error:{name}: ")
    if name.startswith("unknown."):                # pydbus's name for an exception in the daemon
        return f"gpusched failed ({name[len('unknown.'):]}: {text}); journalctl -u gpusched says more"
    meaning = _BUS_ERRORS.get(name)
    return f"{meaning} [{name}: {text}]" if meaning else f"{name}: {text}"


def _config(args: argparse.Namespace) -> configmod.Config:
    try:
        return configmod.load(args.config)
    except (configmod.ConfigError, OSError):
        return configmod.Config()


def _spool_dir(args: argparse.Namespace) -> str:
    return args.spool or _config(args).spool_dir


def _privileged(cfg: configmod.Config) -> bool:
    """As the daemon judges it (access.py: root, or a member of admin_group), for the local check only."""
    return Access(cfg.admin_group).is_admin(os.getuid())


def _caller() -> tuple[str, list[str]]:
    """The caller's user name and groups, which decide the classes the file may ask for (as the daemon decides
    for the file's owner, which the caller will be)."""
    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:
        return "", []
    return pw.pw_name, group_names(pw.pw_name, pw.pw_gid)


# --- commands -------------------------------------------------------------------------------------------

def cmd_submit(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            data = f.read(jobfile.MAX_BYTES + 1)
    except OSError as e:
        raise CtlError(f"{args.file}: {e.strerror}") from None
    base = os.path.basename(args.file)
    data = _with_options(data, args)
    # the daemon checks again, with the same limits; failing here loses nothing and says the same
    cfg = _config(args)
    jobfile.parse(data, base, owner_is_root=os.getuid() == 0, limits=cfg.job_limits(*_caller()),
                  privileged=_privileged(cfg))
    spool = _spool_dir(args)
    stem = base[:-5] if base.endswith(".toml") else base
    stem = stem.lstrip(".") or "job"
    for n in range(1000):
        name = f"{stem}.toml" if n == 0 else f"{stem}-{n}.toml"
        try:
            fd = os.open(os.path.join(spool, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise CtlError(f"can't write into the spool {spool}: {e.strerror}") from None
    else:
        raise CtlError(f"no free name for {stem}.toml in {spool}")
    try:
        ino = os.fstat(fd).st_ino
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)                                   # the daemon takes the file at this close
    if args.no_wait:
        print(printable(name))
        return 0
    client = Client()
    deadline = time.monotonic() + args.timeout
    while (job_id := client.call("Lookup", name, ino)) == 0:
        if time.monotonic() > deadline:
            raise CtlError(f"{name} is in the spool but gpusched has not taken it after {args.timeout:.0f}s")
        time.sleep(0.02)
    job = client.call("Show", job_id)
    if job["state"] == "rejected":
        raise CtlError(f"job {job_id} rejected: {job.get('reason', '')}")
    print(job_id)
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


def cmd_list(args: argparse.Namespace) -> int:
    client = Client()
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
            out.write(("[" if first else (",\n" if body else "")) + body)
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
        out.write("]\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    client = Client()
    job = client.call("Show", _resolve(client, args.id))
    if args.json:
        print(json.dumps(job, indent=2))
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


def _field(key: str, value: Any) -> None:
    """One `show` line; a value's own line breaks (a reason, a command) are kept, indented, and every line
    escaped."""
    lines = (value if isinstance(value, str) else str(value)).split("\n")
    print(f"{printable(key):>14}: " + ("\n" + " " * 16).join(printable(line) for line in lines))


def cmd_logs(args: argparse.Namespace) -> int:
    client = Client()
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
_TARGET = re.compile(r"([0-9]+)(?:\[([0-9]+)\]|_([0-9]+))?")


def job_target(text: str) -> tuple[int, int | None]:
    """A job id (`12`; an array's id is its first element's and stands for the whole array), or one element of
    an array (`12[3]`, or Slurm's `12_3`, which needs no quoting in a shell): (id, index or None)."""
    m = _TARGET.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (12), nor an array's element (12[3] or 12_3)")
    index = m.group(2) or m.group(3)
    job_id, index = int(m.group(1)), None if index is None else int(index)
    if job_id >= 1 << 63 or (index is not None and index >= 1 << 31):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: no job has an id (or an array an index) that large")
    return job_id, index


def _resolve(client: Client, target: tuple[int, int | None]) -> int:
    """The job id of a target (an element's own id for `12[3]`)."""
    job_id, index = target
    return job_id if index is None else int(client.call("Element", job_id, index))


def _shown(target: tuple[int, int | None]) -> str:
    return str(target[0]) if target[1] is None else f"{target[0]}[{target[1]}]"


def cmd_act(args: argparse.Namespace) -> int:
    """cancel, hold, release, requeue: each id in turn (an array's id: each of its jobs the verb applies to;
    ID[i]: that element alone); non-zero if any was refused."""
    client = Client()
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


def cmd_switch(args: argparse.Namespace) -> int:
    """drain/resume the server, pause/unpause a user (admins)."""
    client = Client()
    if args.command in ("drain", "resume"):
        print(printable(client.call("Drain", args.command == "drain")))
    else:
        print(f"{args.user}: {printable(client.call('Pause', args.user, args.command == 'pause'))}")
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    info = Client().call("Gpus")
    if args.json:
        print(json.dumps(info, indent=2))
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


def _table(rows: list[tuple[str, ...]]) -> None:
    rows = [tuple(printable(str(c)) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


# --- issue 9: accounting (stats, history) ------------------------------------------------------------------

def parse_since(text: str | None, now: float) -> float:
    """--since: a duration back from now ("7d", "12h", "90m") or a local date or time ("2026-11-01",
    "2026-11-01 14:00", ISO 8601 with a "T" or a zone); none: 0 (everything still kept)."""
    if not text:
        return 0.0
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise CtlError(f"--since {text!r}: expected a duration back from now (\"7d\", \"12h\") or a date "
                       f"(\"2026-11-01\", \"2026-11-01 14:00\")") from None


def usage_value(key: str, value: Any) -> str:
    """One accounting figure for people."""
    if value is None:
        return "-"
    if key in ("gpu_memory_peak", "memory_peak", "memory_peak_max"):
        return format_size(int(value))
    if key == "energy_joules":
        return _energy(float(value))
    if key in ("cpu_seconds", "wait_mean", "wait_max"):
        return format_duration(float(value))
    if key.startswith("gpu_hours"):
        return f"{float(value):.3f}"
    return str(value)


def _energy(joules: float, estimated: bool = False) -> str:
    text = f"{joules / 3.6e6:.2f} kWh" if joules >= 3.6e5 else f"{joules / 1000:.1f} kJ"
    return ("~" if estimated else "") + text


def cmd_stats(args: argparse.Namespace) -> int:
    rows = Client().call("Usage", args.user or "", parse_since(args.since, time.time()))
    if args.json:
        print(json.dumps(rows, indent=2))
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
    reply = Client().call("History", args.user or "", args.name or "", args.state or "",
                          parse_since(args.since, time.time()), max(1, min(args.limit, 5000)))
    jobs = reply["jobs"]
    if args.json:
        print(json.dumps(jobs, indent=2))
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpuschedctl", description="Submit and manage gpusched jobs.")
    ap.add_argument("--config", default=os.environ.get("GPUSCHED_CONFIG", configmod.DEFAULT_PATH))
    ap.add_argument("--spool", help="spool directory (default: from the config)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="validate a job file, drop it into the spool, print the job id")
    p.add_argument("file")
    p.add_argument("--no-wait", action="store_true", help="don't wait for the daemon to take it")
    p.add_argument("--timeout", type=float, default=30.0)
    for opt in ("after", "after-ok", "after-notok"):
        p.add_argument(f"--{opt}", type=int, action="append", default=[], metavar="ID",
                       help=f"add job ID to the file's {opt.replace('-', '_')} (repeatable)")
    p.add_argument("--hold", action="store_true", help="queue it on hold (`gpuschedctl release` lets it start)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("list", help="jobs in the queue and running (--all: with finished ones); an array "
                                    "as one line (--expand: each of its jobs)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-e", "--expand", action="store_true", help="list each job of an array on its own line")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

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
    for verb, text in (("drain", "admins: start no new job (running ones finish); kept across restarts"),
                       ("resume", "admins: undo drain")):
        sub.add_parser(verb, help=text).set_defaults(fn=cmd_switch)
    for verb, text in (("pause", "admins: start none of USER's queued jobs until unpaused"),
                       ("unpause", "admins: undo pause")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("user")
        p.set_defaults(fn=cmd_switch)

    p = sub.add_parser("stats", help="per user: jobs, GPU-hours reserved and used, energy, waits")
    p.add_argument("--user", help="only this user (others than yourself: admins only)")
    p.add_argument("--since", metavar="D", help='jobs ended since: a duration back ("7d") or a date ("2026-11-01")')
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_stats)

    p = sub.add_parser("history", help="finished jobs with their accounting (yours; admins: everyone's)")
    p.add_argument("--user", help="this user's jobs (another's: what list --all shows, without accounting)")
    p.add_argument("--name", help="only jobs of this name")
    p.add_argument("--state", help="only jobs that ended so (succeeded, failed, cancelled, ...)")
    p.add_argument("--since", metavar="D", help='ended since: a duration back ("7d") or a date ("2026-11-01")')
    p.add_argument("--limit", type=int, default=1000, help="the newest N (default 1000, at most 5000)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_history)

    p = sub.add_parser("gpus", help="the GPUs and who holds them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_gpus)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CtlError as e:
        die(str(e))
    except jobfile.JobFileError as e:
        die(f"invalid job file:\n{e}")
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001
        if args.debug:
            raise
        die(f"{type(e).__name__}: {e} (run with --debug for a traceback)")


if __name__ == "__main__":
    sys.exit(main())
