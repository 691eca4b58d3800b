"""gpuschedctl's parser as plain data for the completions and the man page: its verbs, each with its help,
usage and arguments, and what each argument completes to (job ids, job names, files, users, choices).
Pure: it reads the argparse objects and changes nothing."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from gpusched.ctl.common import job_target

# what an argument's value completes to
JOBS = "jobs"              # the caller's job ids, those the daemon still keeps (finished too)
LIVE_JOBS = "live-jobs"    # the caller's queued and running job ids
NAMES = "names"            # the caller's job names
FILE, DIR, USER, CHOICES, NOTHING = "file", "dir", "user", "choices", ""

# verbs that act on jobs still queued or running: a finished job's id would only be refused
LIVE_VERBS = frozenset({"cancel", "hold", "release", "requeue"})


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]       # ("-f", "--follow"); () for a positional
    dest: str
    metavar: str                 # what the value is called; "" for a flag that takes none
    help: str
    completes: str               # one of JOBS ... NOTHING
    choices: tuple[str, ...]
    many: bool                   # repeatable option, or a positional of several values


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    usage: str                   # "gpuschedctl cancel [-h] [--now] ids [ids ...]"
    args: tuple[Arg, ...]


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def verbs(parser: argparse.ArgumentParser) -> list[Verb]:
    """The public verbs (those with a help line), in the parser's order."""
    sub = subparsers(parser)
    return [Verb(c.dest, c.help or "", _usage(sub.choices[c.dest]), arguments(sub.choices[c.dest], c.dest))
            for c in sub._get_subactions() if c.help != argparse.SUPPRESS]


def hidden(parser: argparse.ArgumentParser) -> list[str]:
    """The verbs without a help line (completion.py's __complete), which --help, the man page and the
    completions leave out."""
    public = {v.name for v in verbs(parser)}
    return [name for name in subparsers(parser).choices if name not in public]


def arguments(parser: argparse.ArgumentParser, verb: str = "") -> tuple[Arg, ...]:
    """Every argument of `parser` but --help and the verbs themselves."""
    out = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.help == argparse.SUPPRESS:
            continue
        takes = a.nargs != 0
        metavar = (a.metavar or (a.dest.upper() if a.option_strings else a.dest)) if takes else ""
        out.append(Arg(tuple(a.option_strings), a.dest, str(metavar), _help(a), completes(a, verb),
                       tuple(map(str, a.choices or ())),
                       isinstance(a, argparse._AppendAction) or a.nargs in ("+", "*")))
    return tuple(out)


def completes(a: argparse.Action, verb: str) -> str:
    """What a value of `a` completes to, from its type, name and metavar, so a verb added later is covered
    without a word here: a job_target (or an argument called id/ids, or ID) takes job ids."""
    if a.nargs == 0:
        return NOTHING
    if a.choices:
        return CHOICES
    if a.type is job_target or a.dest in ("id", "ids") or a.metavar == "ID":
        return LIVE_JOBS if verb in LIVE_VERBS else JOBS
    if a.dest == "name":
        return NAMES
    if a.dest in ("file", "config"):
        return FILE
    if a.dest in ("spool", "dir", "workdir"):
        return DIR
    if a.dest == "user":
        return USER
    return NOTHING


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage: ").split())


def _help(a: argparse.Action) -> str:
    """The help as --help shows it (%(default)s and the like filled in), on one line."""
    text = a.help or ""
    if "%" in text:
        try:
            text = text % {**vars(a), "prog": "gpuschedctl"}
        except (KeyError, TypeError, ValueError):
            pass
    return " ".join(text.split())
