"""gpuschedctl's parser, made of each command module's `register`, and main(): one line per error, the exit
codes of common.py."""

from __future__ import annotations

import argparse
import os
import sys

from gpusched.ctl import accounting, admin, completion, interactive, jobs, queue, settings, top, waiting
from gpusched.ctl.common import CtlError, die

MODULES = (jobs, queue, admin, accounting, waiting, settings, top, interactive, completion)
# config.DEFAULT_PATH (tests/test_listfiles.py checks they agree): importing the config module costs a read
# command more than the listing files do (it brings the job-file and policy modules)
DEFAULT_CONFIG = "/etc/gpusched/gpusched.toml"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpuschedctl", description="Submit and manage gpusched jobs.")
    ap.add_argument("--config", default=os.environ.get("GPUSCHED_CONFIG", DEFAULT_CONFIG))
    ap.add_argument("--spool", help="spool directory (default: from the config)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    # COMMAND, not argparse's {verb,...}: that would name the hidden __complete (completion.py)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `gpuschedctl submit [OPTIONS] -- CMD ARGS...`: what follows the first -- is a command, not gpuschedctl's
    command = argv[argv.index("--") + 1:] if "--" in argv else None
    parser = build_parser()
    args = parser.parse_args(argv if command is None else argv[:argv.index("--")])
    if command is not None and not getattr(args, "takes_command", False):
        parser.error(f"{args.command} takes no command after --")
    args.job_command = command or []
    try:
        return args.fn(args)
    except CtlError as e:
        die(str(e), e.code)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001
        from gpusched import jobfile                    # here, not on every command's path
        if isinstance(e, jobfile.JobFileError):
            die(f"invalid job file:\n{e}")
        if args.debug:
            raise
        die(f"{type(e).__name__}: {e} (run with --debug for a traceback)")


if __name__ == "__main__":
    sys.exit(main())
