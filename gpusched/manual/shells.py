"""gpuschedctl's completion scripts for bash, zsh and fish, from its parser (verbs.py).

bash and zsh: shtab, which writes static scripts (no Python started on each Tab, unlike argcomplete) and calls
a shell function of ours for the arguments verbs.completes marks. fish: shtab 1.5.5 (Debian 12) has no fish,
so the `complete -c` lines are written here from the same walk. Job ids and names come from the hidden
`gpuschedctl __complete` (ctl/completion.py), run under `timeout` with its errors dropped, so a Tab never
hangs or prints on the prompt.

Names are the caller's own, but may hold anything but control characters; they are never given to bash's
`compgen -W`, which would expand `$(...)` in them: the bash functions filter lines with a quoted prefix
match instead."""

from __future__ import annotations

import argparse

from gpusched.manual import verbs as v

PROG = "gpuschedctl"
ASK = "timeout 3 gpuschedctl __complete"          # the hidden verb, bounded (coreutils' timeout)

# each helper: its __complete arguments
_ASKS = {v.JOBS: "jobs --all", v.LIVE_JOBS: "jobs", v.NAMES: "names"}

# Each helper's arguments to `__complete` are passed as words, never split from one string: shtab's script
# sets IFS to a newline before calling them, and zsh doesn't split an unquoted parameter at all.
BASH_PREAMBLE = f"""\
# gpusched: job ids and names from the caller's own jobs (gpuschedctl __complete)
# _gpuschedctl_ask WORD ARGS...: the first field of each line of `gpuschedctl __complete ARGS` starting with WORD
_gpuschedctl_ask() {{
  local word=$1 line
  shift
  while IFS= read -r line; do
    line=${{line%%$'\\t'*}}
    [[ $line == "$word"* ]] && printf '%s\\n' "$line"
  done < <({ASK} "$@" 2>/dev/null)
}}
_gpuschedctl_jobs() {{ _gpuschedctl_ask "$1" {_ASKS[v.JOBS]}; }}
_gpuschedctl_live_jobs() {{ _gpuschedctl_ask "$1" {_ASKS[v.LIVE_JOBS]}; }}
_gpuschedctl_names() {{ _gpuschedctl_ask "$1" {_ASKS[v.NAMES]}; }}
_gpuschedctl_users() {{ compgen -u -- "$1"; }}
"""

ZSH_PREAMBLE = f"""\
# gpusched: job ids (with their names and states) and names from the caller's own jobs (gpuschedctl __complete)
_gpuschedctl_describe() {{
  local -a lines
  lines=(${{(f)"$({ASK} "$@" 2>/dev/null)"}})
  lines=(${{lines//:/\\\\:}})
  lines=(${{lines/$'\\t'/:}})
  _describe -t jobs job lines
}}
_gpuschedctl_jobs() {{ _gpuschedctl_describe {_ASKS[v.JOBS]}; }}
_gpuschedctl_live_jobs() {{ _gpuschedctl_describe {_ASKS[v.LIVE_JOBS]}; }}
_gpuschedctl_names() {{
  local -a names
  names=(${{(f)"$({ASK} {_ASKS[v.NAMES]} 2>/dev/null)"}})
  compadd -a names
}}
"""

# what shtab calls for each kind (its own for files and directories)
_BASH = {v.JOBS: "_gpuschedctl_jobs", v.LIVE_JOBS: "_gpuschedctl_live_jobs", v.NAMES: "_gpuschedctl_names",
         v.USER: "_gpuschedctl_users", v.FILE: "_shtab_compgen_files", v.DIR: "_shtab_compgen_dirs"}
_ZSH = {v.JOBS: "_gpuschedctl_jobs", v.LIVE_JOBS: "_gpuschedctl_live_jobs", v.NAMES: "_gpuschedctl_names",
        v.USER: "_users", v.FILE: "_files", v.DIR: "_files -/"}


def _mark(parser: argparse.ArgumentParser) -> None:
    """Tell shtab what each argument completes to (its `.complete`), and give each verb its help as the
    description shtab's zsh script shows beside it. Changes the parser: give it a fresh one."""
    for a in parser._actions:
        kind = v.completes(a, "")
        if kind in _BASH and not isinstance(a, argparse._SubParsersAction):
            a.complete = {"bash": _BASH[kind], "zsh": _ZSH[kind]}
    sub = v.subparsers(parser)
    for c in sub._get_subactions():
        p = sub.choices[c.dest]
        p.description = p.description or c.help
        for a in p._actions:
            kind = v.completes(a, c.dest)
            if kind in _BASH:
                a.complete = {"bash": _BASH[kind], "zsh": _ZSH[kind]}


def bash(parser: argparse.ArgumentParser) -> str:
    import shtab
    _mark(parser)
    script = shtab.complete(parser, shell="bash", preamble={"bash": BASH_PREAMBLE})
    return _header() + fix_shtab_choices(script) + "\n"


# shtab 1.5.5's bash script (Debian 12's) offers only the first of a list of choices, so `gpuschedctl <Tab>`
# completed `submit` and nothing else (tqdm/shtab#86, fixed upstream in later releases): the choices are
# read as an array and given to compgen split on blanks, not on the newlines our functions' lines use
_CHOICES_BUG = ('local current_action_choices_var="${current_action}_choices"',
                'local current_action_choices_var="${current_action}_choices[@]"')
_COMPREPLY_BUG = ("""    COMPREPLY=( $(compgen -W "${current_action_choices}" -- "${completing_word}") \\
                $([ -n "${current_action_compgen}" ] \\
                  && "${current_action_compgen}" "${completing_word}") )""",
                  """    COMPREPLY=( $([ -n "${current_action_compgen}" ] \\
                  && "${current_action_compgen}" "${completing_word}") )
    unset IFS
    COMPREPLY+=( $(compgen -W "${current_action_choices}" -- "${completing_word}") )""")


def fix_shtab_choices(script: str) -> str:
    """The script with shtab#86 fixed where it has it (a newer shtab's is left as it is)."""
    for bug, fix in (_CHOICES_BUG, _COMPREPLY_BUG):
        script = script.replace(bug, fix)
    return script


def zsh(parser: argparse.ArgumentParser) -> str:
    import shtab
    _mark(parser)
    script = shtab.complete(parser, shell="zsh", preamble={"zsh": ZSH_PREAMBLE})
    first, _, rest = script.partition("\n")        # "#compdef gpuschedctl" must stay the first line
    return first + "\n" + _header() + rest + "\n"


def _header() -> str:
    return "# gpuschedctl's completions, generated by gpusched/manual from its parser: do not edit.\n"


# --- fish ----------------------------------------------------------------------------------------------

def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_FISH_FUNCS = {kind: f"__gpuschedctl_{kind.replace('-', '_')}" for kind in _ASKS}


def fish(parser: argparse.ArgumentParser) -> str:
    out = [_header().rstrip(), f"complete -c {PROG} -f                 # no file names unless an argument takes one"]
    for kind, func in _FISH_FUNCS.items():
        out.append(f"function {func}; {ASK} {_ASKS[kind]} 2>/dev/null; end")
    verbs = v.verbs(parser)
    top = "__fish_use_subcommand"
    for arg in v.arguments(parser):
        out.append(_fish_arg(top, arg))
    for verb in verbs:
        out.append(f"complete -c {PROG} -n {top} -a {verb.name} -d {_fish_quote(_short(verb.help))}")
    for verb in verbs:
        cond = _fish_quote(f"__fish_seen_subcommand_from {verb.name}")
        for arg in verb.args:
            out.append(_fish_arg(cond, arg))
    return "\n".join(line for line in out if line) + "\n"


def _fish_arg(cond: str, arg: v.Arg) -> str:
    what = _fish_values(arg)
    head = f"complete -c {PROG} -n {cond}"
    if not arg.flags:                                # a positional: its values where the verb is
        return f"{head} {what}" if what else ""
    flags = " ".join(f"-s {f[1:]}" if len(f) == 2 else f"-l {f[2:]}" for f in arg.flags)
    value = (" -r " + what if what else " -r") if arg.metavar else ""
    return f"{head} {flags}{value} -d {_fish_quote(_short(arg.help or arg.metavar or arg.dest))}"


def _fish_values(arg: v.Arg) -> str:
    if arg.completes in _FISH_FUNCS:
        return f"-x -a {_fish_quote('(' + _FISH_FUNCS[arg.completes] + ')')}"
    if arg.completes == v.CHOICES:
        return f"-x -a {_fish_quote(' '.join(arg.choices))}"
    if arg.completes == v.FILE:
        return "-F"
    if arg.completes == v.DIR:
        return f"-x -a {_fish_quote('(__fish_complete_directories)')}"
    if arg.completes == v.USER:
        return f"-x -a {_fish_quote('(__fish_complete_users)')}"
    return ""


def _short(text: str) -> str:
    """fish shows a description on one short line."""
    return text if len(text) <= 80 else text[:77].rstrip() + "..."
