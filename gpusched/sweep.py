"""Job arrays: a job file's `[sweep]` table expanded into its elements. Pure: no I/O here.

A sweep is a tuple of (key, values) in the file's order. Its elements are the product of the values, in
itertools.product's order: the last key varies fastest, so element i's values are i written in the mixed
radix of the lists' lengths. Element i of an array is the file's job with `{key}` placeholders in its
command replaced by its values, the values in its environment (GPUSCHED_SWEEP_<KEY>, plus GPUSCHED_ARRAY_ID,
GPUSCHED_ARRAY_INDEX and GPUSCHED_ARRAY_SIZE) and the name `NAME[i]`. jobfile.py validates the table and the
placeholders; docs/jobfile.md has the rules users see.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from gpusched.jobfile import JobSpec

Scalar = str | int | float | bool
Sweep = tuple[tuple[str, tuple[Scalar, ...]], ...]

ENV_PREFIX = "GPUSCHED_SWEEP_"
INDEX = "index"                       # the built-in placeholder: the element's index in its array
# `{{` and `}}` are literal braces; `{name}` a placeholder; a lone brace is a mistake the parser reports
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


def size(sweep: Sweep) -> int:
    n = 1
    for _, values in sweep:
        n *= len(values)
    return n


def values(sweep: Sweep, index: int) -> list[tuple[str, Scalar]]:
    """Element `index`'s value of each key, in the sweep's key order (the last key varies fastest)."""
    out: list[tuple[str, Scalar]] = []
    for key, vals in reversed(sweep):
        index, i = divmod(index, len(vals))
        out.append((key, vals[i]))
    out.reverse()
    return out


def text(value: Scalar) -> str:
    """A value as its element sees it: booleans as TOML writes them, numbers as Python's shortest repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def tokens(s: str) -> Iterator[tuple[str, str | None]]:
    """The pieces of a command string: ("text", piece) for literal text (braces unescaped), ("key", name) for
    a placeholder, ("lone", brace) for a brace with no partner."""
    pos = 0
    for m in _TOKEN.finditer(s):
        if m.start() > pos:
            yield "text", s[pos:m.start()]
        tok = m.group(0)
        if tok in ("{{", "}}"):
            yield "text", tok[0]
        elif m.group(1) is not None:
            yield "key", m.group(1)
        else:
            yield "lone", tok
        pos = m.end()
    if pos < len(s):
        yield "text", s[pos:]


def placeholders(s: str) -> tuple[list[str], str | None]:
    """The placeholder names used in s, and the first problem (a lone brace), if any."""
    names: list[str] = []
    for kind, piece in tokens(s):
        if kind == "lone":
            return names, (f"a lone {piece!r}: with a [sweep], write {piece * 2!r} for a literal brace "
                           f"and {{key}} for a value")
        if kind == "key":
            names.append(piece or "")
    return names, None


def substitute(s: str, vals: dict[str, str], quote: bool) -> str:
    """s with each placeholder replaced by its value's text (shell-quoted when `quote`: a string command runs
    through the shell). The names must have been checked (jobfile.parse does)."""
    out = []
    for kind, piece in tokens(s):
        if kind == "key":
            v = vals[piece or ""]
            out.append(shlex.quote(v) if quote else v)
        else:
            out.append(piece or "")
    return "".join(out)


def element(spec: JobSpec, index: int, array_id: int) -> JobSpec:
    """Element `index` of the array `array_id` (its first element's job id) that `spec`'s sweep makes."""
    vals = {k: text(v) for k, v in values(spec.sweep, index)}
    vals[INDEX] = str(index)
    command: Any
    if isinstance(spec.command, str):
        command = substitute(spec.command, vals, quote=True)
    else:
        command = tuple(substitute(a, vals, quote=False) for a in spec.command)
    env = dict(spec.env)
    for key, _ in spec.sweep:
        env[env_name(key)] = vals[key]
    env.update({"GPUSCHED_ARRAY_ID": str(array_id), "GPUSCHED_ARRAY_INDEX": str(index),
                "GPUSCHED_ARRAY_SIZE": str(size(spec.sweep))})
    return dataclasses.replace(spec, command=command, env=env, name=f"{spec.name}[{index}]", sweep=())


def base_name(name: str, index: int) -> str:
    """An element's name without its `[index]`: the name its file gave."""
    return name.removesuffix(f"[{index}]")
