"""A job file from command-line options: `gpuschedctl submit [OPTIONS] -- CMD ARGS...` and `gpuschedctl run`
write one for the user, so the spool stays the one way in (the file is the record of what was asked).

Pure: options and a command in, the TOML bytes out. Each option is a job-file key of docs/jobfile.md, with
the same name; the daemon validates the result as any file.
"""

from __future__ import annotations

import argparse
import os
from typing import Any



def add_options(p: argparse.ArgumentParser) -> None:
    """The job-file keys a command line can set (the same names as in the file)."""
    g = p.add_argument_group("job options (each is the job-file key of the same name; docs/jobfile.md)")
    g.add_argument("--name", help="the job's name (default: the command's first word)")
    g.add_argument("--gpus", type=int, help="how many GPUs (default 1; 0: a CPU-only job)")
    g.add_argument("--gpu-memory", metavar="SIZE", help='only GPUs with this much memory free ("20G")')
    g.add_argument("--gpu-type", metavar="TEXT", help='only GPUs whose name contains this ("A100")')
    g.add_argument("--class", dest="job_class", metavar="CLASS", help="the job's class (the server's config)")
    g.add_argument("--priority", type=int, help="among your own jobs: lower is more urgent (default 100)")
    g.add_argument("--time-limit", metavar="DURATION", help='stop it after this long ("2h")')
    g.add_argument("--memory", metavar="SIZE", help="limits.memory: the kernel's OOM killer stops it beyond")
    g.add_argument("--cpus", type=float, help="limits.cpus: CPU time, in CPUs' worth (2.5)")
    g.add_argument("--tasks", type=int, help="limits.tasks: most processes and threads at once")
    g.add_argument("--workdir", help="where it starts (default: the current directory)")
    g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set a variable (repeatable)")
    g.add_argument("--export", action="append", default=[], metavar="NAME",
                   help="pass this variable of your environment on (repeatable; nothing else is passed)")
    g.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG", help="a label (repeatable)")
    g.add_argument("--conda", metavar="ENV", help="run it in this conda environment")


class OptionError(ValueError):
    pass


def job_doc(args: argparse.Namespace, command: list[str], environ: dict[str, str] | None = None,
            cwd: str | None = None) -> dict[str, Any]:
    """The job file, as a dict, for `command` (run without a shell, as an array) with the options of
    add_options. `environ` and `cwd` are the caller's (for --export and the default workdir)."""
    if not command:
        raise OptionError("no command: put it after --, as in `gpuschedctl submit --gpus 1 -- python train.py`")
    environ = os.environ if environ is None else environ
    doc: dict[str, Any] = {"command": list(command),
                           "name": args.name or os.path.basename(command[0])[:128] or "job"}
    for key, attr in (("gpus", "gpus"), ("gpu_memory", "gpu_memory"), ("gpu_type", "gpu_type"),
                      ("class", "job_class"), ("priority", "priority"), ("time_limit", "time_limit"),
                      ("conda", "conda")):
        value = getattr(args, attr, None)
        if value is not None:
            doc[key] = value
    doc["workdir"] = args.workdir or cwd or os.getcwd()
    env: dict[str, str] = {}
    for name in args.export:
        if name not in environ:
            raise OptionError(f"--export {name}: there is no {name} in your environment")
        env[name] = environ[name]
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise OptionError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    if env:
        doc["env"] = env
    if args.tags:
        doc["tags"] = list(args.tags)
    limits = {k: v for k, v in (("memory", args.memory), ("cpus", args.cpus), ("tasks", args.tasks))
              if v is not None}
    if limits:
        doc["limits"] = limits
    return doc


def job_toml(doc: dict[str, Any]) -> bytes:
    import tomli_w
    return tomli_w.dumps(doc).encode()
