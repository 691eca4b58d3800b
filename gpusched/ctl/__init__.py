"""gpuschedctl: the command line of gpusched. Talks to the daemon over the system bus; drops job files into
the spool as the calling user; reads logs straight from the file (the file's mode decides who).

Everything it prints for people goes through listing.printable (names, reasons and file names come from
other users: a raw ESC or bidi override would write on the reader's terminal); --json stays exact. A job's
log is escaped the same way (keeping newlines and tabs) when it goes to a terminal, and copied raw when
stdout is a pipe or a file, or with --raw: see jobs.cmd_logs.

One module per group of commands, each with its `register(subparsers)`: jobs (submit, show, logs, cancel,
hold, release, requeue), queue (list), admin (gpus, drain, resume, pause, unpause), accounting (stats,
history), top (the live view; its screen and keys in topview.py); common.py holds what they share, client.py the bus. Importing this package imports no D-Bus
library: only a command that calls the daemon does (client.Client).
"""

from gpusched.ctl.main import build_parser, main

__all__ = ["build_parser", "main"]
