"""`notify = "mail"`: the job's outcome by mail. Run as `python3 -m gpusched.notify` in a hook unit, as the
job's user (hooks.py), with the outcome in GPUSCHED_* variables: composes a short message and hands it to the
system's sendmail. The job's output is never sent beyond a bounded tail of its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from email.message import EmailMessage
from typing import Mapping

TAIL_LINES = 20
TAIL_BYTES = 4096


def tail(path: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """The last lines of a log, at most `limit` bytes read, unprintable characters escaped."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError as e:
        return f"(the log can't be read: {e.strerror})"
    text = data.decode("utf-8", "replace")
    kept = text.splitlines()[-lines:]
    if size > limit and len(kept) == len(text.splitlines()):
        kept = kept[1:]                               # the first line was cut by the byte limit
    return "\n".join("".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in line) for line in kept)


def compose(env: Mapping[str, str], log_tail: str) -> EmailMessage:
    job, name, state = env.get("GPUSCHED_JOB_ID", "?"), env.get("GPUSCHED_JOB_NAME", ""), env.get("GPUSCHED_STATE", "")
    msg = EmailMessage()
    msg["To"] = env.get("GPUSCHED_MAIL_TO") or env.get("GPUSCHED_USER", "")
    msg["Subject"] = f"gpusched: job {job} ({name[:80]}) {state}"
    body = [f"Job {job} ({name}) of {env.get('GPUSCHED_USER', '')} ended: {state}."]
    for key, label in (("GPUSCHED_EXIT_CODE", "exit code"), ("GPUSCHED_SIGNAL", "signal"),
                       ("GPUSCHED_REASON", "reason"), ("GPUSCHED_ATTEMPT", "attempt"), ("GPUSCHED_LOG", "log")):
        if env.get(key):
            body.append(f"{label}: {env[key]}")
    if log_tail:
        body += ["", f"The last lines of its log (at most {TAIL_LINES}):", log_tail]
    body += ["", f"(sent by gpusched; gpuschedctl show {job} says more)"]
    msg.set_content("\n".join(body) + "\n")
    return msg


def main() -> int:
    env = os.environ
    sendmail = env.get("GPUSCHED_SENDMAIL", "/usr/sbin/sendmail")
    log = env.get("GPUSCHED_LOG", "")
    msg = compose(env, tail(log) if log else "")
    to = msg["To"]
    if not to:
        print("gpusched notify: no recipient", file=sys.stderr)
        return 1
    done = subprocess.run([sendmail, "-oi", "--", to], input=msg.as_bytes(), timeout=60)
    if done.returncode:
        print(f"gpusched notify: {sendmail} exited with {done.returncode}", file=sys.stderr)
    else:
        print(f"gpusched notify: mailed job {env.get('GPUSCHED_JOB_ID', '?')}'s outcome to {to}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
