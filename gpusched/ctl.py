"""gpuschedctl: submit, list, show, logs, cancel, gpus. Talks to the daemon over the system bus; drops job
files into the spool as the calling user; reads logs straight from the file (the file's mode decides who)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NoReturn

from gpusched import config as configmod
from gpusched import jobfile
from gpusched.units import format_size

FINAL_STATES = {"succeeded", "failed", "cancelled", "rejected"}


class CtlError(Exception):
    pass


def die(message: str, code: int = 1) -> NoReturn:
    print(f"gpuschedctl: {message}", file=sys.stderr)
    sys.exit(code)


class Client:
    def __init__(self) -> None:
        try:
            from gi.repository import GLib
            from pydbus import SystemBus
            self._glib_error = GLib.Error
            self._api = SystemBus().get("org.gpusched1", "/org/gpusched1")
        except Exception as e:  # noqa: BLE001 - no bus, no daemon, no permission: one clear line
            raise CtlError(f"can't reach gpusched on the system bus ({_short(e)}); is gpusched.service running?")

    def raw(self, method: str, *args: Any) -> str:
        try:
            raw = getattr(self._api, method)(*args)
        except self._glib_error as e:
            raise CtlError(f"gpusched did not answer {method}: {_short(e)}") from None
        if not raw.startswith(('{"ok": ', '{"last": ')):
            reply = json.loads(raw)
            raise CtlError(reply.get("error", f"unexpected answer to {method}"))
        return raw

    def call(self, method: str, *args: Any) -> Any:
        reply = json.loads(self.raw(method, *args))
        if "error" in reply:
            raise CtlError(reply["error"])
        return reply["ok"]


def _short(e: Exception) -> str:
    text = str(e)
    return text.rsplit(": ", 1)[-1] if "GDBus.Error" in text else text


def _spool_dir(args: argparse.Namespace) -> str:
    if args.spool:
        return args.spool
    try:
        return configmod.load(args.config).spool_dir
    except configmod.ConfigError:
        return configmod.Config().spool_dir


# --- commands -------------------------------------------------------------------------------------------

def cmd_submit(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            data = f.read(jobfile.MAX_BYTES + 1)
    except OSError as e:
        raise CtlError(f"{args.file}: {e.strerror}") from None
    base = os.path.basename(args.file)
    jobfile.parse(data, base, owner_is_root=os.getuid() == 0)        # the daemon checks again; fail early
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
        print(name)
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


def cmd_list(args: argparse.Namespace) -> int:
    client = Client()
    out = sys.stdout
    after, first = 0, True
    while True:                                        # page by page: a bus message has a size limit
        raw = client.raw("ListPage", args.all, after, not args.json)
        if args.json:
            # printed as the daemon sent it: re-encoding 100,000 jobs here would cost more than the listing
            head, _, body = raw.partition(', "ok": [')
            last = int(head[len('{"last": '):])
            body = body[:-2]                           # drop "]}"
            out.write(("[" if first else (",\n" if body else "")) + body)
        else:
            reply = json.loads(raw)
            last = reply["last"]
            if reply["ok"]:
                out.write(reply["ok"] + "\n")
        first = False
        if not last:
            break
        after = last
    if args.json:
        out.write("]\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    job = Client().call("Show", args.id)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    spec = job.pop("spec", {})
    for key, value in job.items():
        if key == "gpus":
            value = ", ".join(f"{g['index']} ({g['uuid']})" for g in value) or "-"
        if key == "history":
            for h in value:
                print(f"{'attempt ' + str(h.get('attempt')):>14}: {h.get('outcome')}")
            continue
        print(f"{key:>14}: {value}")
    for key, value in spec.items():
        if key == "command" and isinstance(value, str) and "\n" in value:
            value = value.replace("\n", "\n" + " " * 16)
        print(f"{key:>14}: {value}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = Client()
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
    with f:
        out = sys.stdout.buffer
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not args.follow:
                return 0
            if client.call("Show", args.id)["state"] in FINAL_STATES | {"queued"}:   # ended or requeued
                rest = f.read()
                out.write(rest)
                out.flush()
                return 0
            time.sleep(0.25)


def cmd_cancel(args: argparse.Namespace) -> int:
    client = Client()
    failed = 0
    for job_id in args.ids:
        try:
            print(f"job {job_id}: {client.call('Cancel', job_id)}")
        except CtlError as e:
            print(f"gpuschedctl: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_gpus(args: argparse.Namespace) -> int:
    info = Client().call("Gpus")
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if info.get("error"):
        print(f"GPU probe failing: {info['error']}")
    if not info["gpus"]:
        print("no GPUs")
        return 0
    rows = [("GPU", "NAME", "MEMORY", "FREE", "STATE", "UUID")]
    for g in info["gpus"]:
        state = g["state"] + (f" (pids {','.join(map(str, g['foreign_pids']))})" if g["foreign_pids"] else "")
        rows.append((str(g["index"]), g["name"], format_size(g["memory_total"]), format_size(g["memory_free"]),
                     state, g["uuid"]))
    _table(rows)
    if info["simulated"]:
        print("(simulated GPUs, from the config's [[gpus.simulated]])")
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


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
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("list", help="jobs in the queue and running (--all: with finished ones)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("show", help="everything about one job")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("logs", help="a job's output")
    p.add_argument("id", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(fn=cmd_logs)

    p = sub.add_parser("cancel", help="cancel queued or running jobs (running ones get their grace)")
    p.add_argument("ids", type=int, nargs="+")
    p.set_defaults(fn=cmd_cancel)

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
