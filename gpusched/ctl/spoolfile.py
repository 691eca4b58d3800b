"""The one way a job reaches the daemon from the command line: a job file written into the spool as the
calling user (submit, submit -- CMD, run), then the daemon's word that it took it.

The file is checked here first with the daemon's own rules (jobfile.parse with the caller's limits), so a
mistake is reported before anything is queued; the daemon checks again, and its verdict is the one that
counts.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from gpusched import jobfile
from gpusched.ctl.common import CtlError, _caller, _config, _privileged, _spool_dir
from gpusched.spool import ignored


def check(data: bytes, name: str, args: argparse.Namespace) -> jobfile.JobSpec:
    """The job file as the daemon will judge it for the caller (raises jobfile.JobFileError)."""
    cfg = _config(args)
    return jobfile.parse(data, name, owner_is_root=os.getuid() == 0, limits=cfg.job_limits(*_caller()),
                         privileged=_privileged(cfg))


def drop(data: bytes, stem: str, args: argparse.Namespace) -> tuple[str, int]:
    """Write `data` into the spool under a free name made from `stem` (O_EXCL, never through a link);
    the daemon takes the file when it is closed. (name, inode)."""
    spool = _spool_dir(args)
    stem = stem.replace("/", "_")                      # --name a/b: a name, not a path out of the spool
    if ignored(f"{stem}.toml") or not stem:            # --name '#x': the daemon never takes such a name
        stem = f"job-{stem}".rstrip("-")
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
        os.close(fd)
    return name, ino


def taken(client: Any, name: str, ino: int, timeout: float) -> dict[str, Any]:
    """Wait for the daemon to take the file `name` (inode `ino`): its job's id and state (Outcomes'). A
    rejection raises CtlError with the daemon's reason (Show's). Not Show for every file: a queued job's Show
    works out its place in the whole queue, which a directory of files into a long queue would ask each time."""
    deadline = time.monotonic() + timeout
    while (job_id := client.call("Lookup", name, ino)) == 0:
        if time.monotonic() > deadline:
            raise CtlError(f"{name} is in the spool but gpusched has not taken it after {timeout:.0f}s")
        time.sleep(0.02)
    outcome = client.call("Outcomes", [job_id])[0]
    if outcome["state"] == "rejected":
        raise CtlError(f"job {job_id} rejected: {client.call('Show', job_id).get('reason', '')}")
    return outcome
