"""Job file format v1: TOML bytes in, a validated JobSpec or a JobFileError out. Pure: no I/O here.

docs/jobfile.md documents every key; examples/jobs/ has one file per feature.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Mapping

from gpusched import sweep
from gpusched.units import format_duration, format_size, parse_duration, parse_signal, parse_size

MAX_BYTES = 1 << 20
MAX_ARRAY_BYTES = 16 << 20     # an array's jobs x the larger of its file and an element's command, at most
MAX_PLACEHOLDERS = 256         # {key} in a command (each is substituted for every element)
DEFAULT_PRIORITY = 100
DEFAULT_GRACE = 180.0
MAX_GPUS = 64
MAX_NAME = 128
# Every value a job keeps is bounded, so no file can make a listing, a status file or the daemon's memory big
MAX_TAGS = 32
MAX_TAG = 64
MAX_ENV = 1024                 # variables; real jobs set a handful
MAX_PATH = 4095                # bytes, as PATH_MAX counts them (without the NUL)
MAX_GPU_TYPE = 128
MAX_UUID = 128
MAX_UNIT_STRING = 64           # a size, duration or signal written as a string ("1d12h"): longer is a mistake
MAX_CLASS = 64
PRIORITY_RANGE = (-(1 << 31), (1 << 31) - 1)
# A rejected file's reason goes into its status, the journal and every listing: report the first problems only
MAX_PROBLEMS = 20
MAX_MESSAGE = 300              # characters of one problem's message
MAX_KEY_SHOWN = 64             # characters of a key in a message
MAX_REASON = 4096              # bytes of the whole report (str(JobFileError)), "and N more problems" included

# Set by gpusched for every job; a job may not override them (they decide which GPUs it sees and who it is).
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES",
                          "HOME", "USER", "LOGNAME", "SHELL"})
RESERVED_ENV_PREFIX = "GPUSCHED_"
# used with fullmatch: "$" would also match before a final newline
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)
_CONDA_NAME = re.compile(r"[A-Za-z0-9_.+/-]+")
_GPU_UUID = re.compile(r"(GPU|MIG)-[A-Za-z0-9-]+")
CLASS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_SECONDS = 100 * 365 * 86400.0      # durations beyond a century are mistakes (and overflow systemd's usec)
MAX_U63 = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """A job's [limits] table: cgroup limits on its scope."""
    memory: int | None = None      # bytes, MemoryMax
    cpus: float | None = None      # CPUs, CPUQuota
    tasks: int | None = None       # TasksMax


@dataclass(frozen=True, slots=True)
class Limits:
    """What this server lets a file ask for (from the daemon's config: Config.job_limits()). Urgency is granted,
    not claimed: a file that is neither root's nor an admin's may not be more urgent than min_priority, nor ask
    for a class it was not granted; grace and time_limit are capped for every file but root's, so no job can
    hold its GPUs past what the server allows."""
    min_priority: int = DEFAULT_PRIORITY   # the most urgent (lowest) priority a user's file may have
    max_grace: float = 600.0               # seconds
    max_time_limit: float = 0.0            # seconds; 0: no cap
    # job classes: each configured class's longest time limit (0: no cap); None: the server has no classes
    classes: Mapping[str, float] | None = None
    default_class: str | None = None       # the class of a file that names none
    allowed_classes: frozenset[str] = frozenset()   # the classes this file's owner may ask for
    windows: frozenset[str] = frozenset()  # the time windows the config defines ([windows.NAME])
    max_array_size: int = 1000             # jobs one [sweep] may expand into (max_array_size)


@dataclass(frozen=True, slots=True)
class JobSpec:
    command: str | tuple[str, ...]
    name: str
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    conda: str | None = None
    tags: tuple[str, ...] = ()
    gpus: int = 1
    gpu_memory: int | None = None
    gpu_type: str | None = None
    gpu_ids: tuple[int | str, ...] = ()
    priority: int = DEFAULT_PRIORITY
    limits: ResourceLimits = ResourceLimits()
    time_limit: float | None = None
    grace: float = DEFAULT_GRACE
    stop_signal: int = 15
    preemptible: bool = True
    user: str | None = None
    job_class: str | None = None          # `class` in the file; None: the server's default class
    resumable: bool = False               # checkpoints on its stop signal and resumes when started again
    share: bool = False                   # may share its GPUs with other sharing jobs (needs gpu_memory)
    # issue 9: the lifecycle (docs/jobfile.md). Dependencies by job id or by name among the owner's jobs
    after: tuple[int | str, ...] = ()     # start once these ended, whatever the outcome
    after_ok: tuple[int | str, ...] = ()  # start once these succeeded; never if one didn't
    after_notok: tuple[int | str, ...] = ()   # start once these failed or were cancelled; never if one succeeded
    singleton: bool = False               # at most one job of this name and owner active at a time
    hold: bool = False                    # queued on hold: starts only once released
    retries: int = 0                      # attempts after a failure, with backoff
    retry_on: tuple[int, ...] = ()        # only these exit codes are retried (empty: any failure)
    window: str | None = None             # starts only while this configured time window is open
    on_gpu_oom: str | None = None         # ON_GPU_OOM; None: a GPU out-of-memory is a failure like any other
    # issue 9, features 4 and 12 (docs/jobfile.md): a warning signal before a stop; hooks and notification
    warn_signal: int | None = None        # sent to the job's main process warn_before ahead of a stop
    warn_before: float | None = None      # seconds; set (default 60) whenever warn_signal is
    on_finish: str | None = None          # run by bash as the job's user after its final end
    notify: str | None = None             # "mail": the outcome by the system's sendmail
    # issue 9, job arrays (sweep.py): the [sweep] table, (key, values) in file order; () for one job and for
    # an array's element (its values are then in its command and env); max_parallel: elements active at once
    sweep: tuple[tuple[str, tuple[str | int | float | bool, ...]], ...] = ()
    max_parallel: int = 0                 # 0: no limit
    # issue 11, `gpuschedctl run`: the Unix socket of the terminal the job attaches to (gpusched/ptyrelay.py)
    attach: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class"] = d.pop("job_class")
        for key in ("resumable", "share", "singleton", "hold", "retries", "max_parallel"):   # shown only when asked for
            if not d[key]:
                del d[key]
        for key in ("after", "after_ok", "after_notok", "retry_on"):
            d[key] = list(d[key])
        d["sweep"] = {k: list(v) for k, v in self.sweep}
        d["command"] = self.command if isinstance(self.command, str) else list(self.command)
        d["tags"] = list(self.tags)
        d["gpu_ids"] = list(self.gpu_ids)
        return {k: v for k, v in d.items() if v not in (None, {}, [])}


def file_doc(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A job file's document again from a job's spec (JobSpec.to_dict, what `show` gives its owner): the keys
    and units a person writes (sizes "32G", durations "2h", signals by name), defaults left out. For Clone and
    resubmission: parse(tomli_w.dumps(file_doc(spec))) is the same job. Left out: `user` (the owner comes from
    the file's owner) and `attach` (a terminal that has gone)."""
    def size(n: int) -> str | int:
        text = format_size(int(n))
        return text if parse_size(text) == n else int(n)

    def duration(s: float) -> str | float:
        text = format_duration(s)
        return text if parse_duration(text) == s else s

    doc: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("user", "attach") or value is None:
            continue
        if key == "limits":
            table = {k: v for k, v in dict(value).items() if v is not None}
            if "memory" in table:
                table["memory"] = size(table["memory"])
            if table:
                doc[key] = table
        elif key == "gpu_memory":
            doc[key] = size(value)
        elif key in ("time_limit", "warn_before"):
            doc[key] = duration(value)
        elif key == "grace":
            if value != DEFAULT_GRACE:
                doc[key] = duration(value)
        elif key in ("stop_signal", "warn_signal"):
            if not (key == "stop_signal" and value == 15):
                doc[key] = parse_signal(value).name
        elif key == "priority" and value == DEFAULT_PRIORITY or key == "preemptible" and value is True:
            continue
        elif key == "sweep" and not value or key == "max_parallel":
            continue
        else:
            doc[key] = value
    if doc.get("sweep") and spec.get("max_parallel"):
        doc["sweep"] = {"max_parallel": spec["max_parallel"], **doc["sweep"]}     # it belongs in [sweep]
    return doc


@dataclass(frozen=True, slots=True)
class Problem:
    key: str | None
    line: int | None
    message: str


class JobFileError(Exception):
    """A rejected file. `problems` holds at most MAX_PROBLEMS; `more` counts those found but not kept.
    str() is the report, one problem per line, never more than MAX_REASON bytes."""

    def __init__(self, filename: str, problems: list[Problem], more: int = 0):
        self.filename = filename
        self.problems = problems
        self.more = more
        super().__init__(filename)

    def __str__(self) -> str:
        lines: list[str] = []
        size = 0
        budget = MAX_REASON - 80 - len(_clip(self.filename, 255).encode())    # room for the "more" line
        for p in self.problems:
            line = format_problem(self.filename, p)
            size += len(line.encode()) + 1
            if size > budget and lines:
                break
            lines.append(line)
        rest = len(self.problems) - len(lines) + self.more
        if rest:
            lines.append(f"{_clip(self.filename, 255)}: ... and {rest} more problem{'s' if rest > 1 else ''} "
                         f"(only the first are reported)")
        return "\n".join(lines)


def format_problem(filename: str, p: Problem) -> str:
    filename = _clip(filename, 255)
    where = filename if p.line is None else f"{filename}:{p.line}"
    message = _clip(p.message, MAX_MESSAGE)
    return f"{where}: {_show_key(p.key)}: {message}" if p.key else f"{where}: {message}"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 3] + "..."


def _show_key(key: str) -> str:
    # a quoted TOML key can hold anything, terminal escapes included: show it escaped, and not all of it
    if not key.isprintable():
        key = key.encode("unicode_escape").decode("ascii")
    return _clip(key, MAX_KEY_SHOWN)


# --- where a key stands in the text (tomllib gives values, not lines) -------------------------------------

_HEADER = re.compile(r"\s*\[([^\[\]]*)\]\s*(?:#.*)?")      # linear: no overlapping quantifiers
_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_INLINE_KEY = re.compile(r"""(?:[{,]\s*)([A-Za-z0-9_-]+|"[^"]*")\s*=""")
_MAX_KEY_PARTS = 16
_MAX_DOTTED = 128
# linear: starts only at a word's start, and never gives back what a part consumed (possessive)
_DEEP_KEY = re.compile(r"""(?<![A-Za-z0-9_-])(?:(?:[A-Za-z0-9_-]++|"[^"\n]*+"|'[^'\n]*+')[ \t]*+\.[ \t]*+){%d,}"""
                       % _MAX_DOTTED)


def _split_key(raw: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", raw)]


def _lines(text: str) -> Iterator[str]:
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def key_lines(text: str, wanted: Collection[str] | None = None) -> dict[str, int]:
    """Map 'key' and 'table.key' to the 1-based line where it is set. Good enough for error messages:
    lines inside multi-line strings are skipped, and lines are split at "\n" only, as TOML counts them.
    With `wanted`, stops reading once every key in it has been seen (a big file's first problems are cheap)."""
    lines: dict[str, int] = {}
    missing = set(wanted) if wanted is not None else None
    table: list[str] = []
    in_string: str | None = None
    for n, line in enumerate(_lines(text), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        h = _HEADER.fullmatch(line)
        if h:
            table = _split_key(h.group(1))[:_MAX_KEY_PARTS]
            lines.setdefault(".".join(table), n)
        elif k := _KEY.match(line):
            path = (table + _split_key(k.group(1)))[:_MAX_KEY_PARTS]
            for i in range(1, len(path) + 1):
                lines.setdefault(".".join(path[:i]), n)
            rest = line[k.end():]
            if rest.lstrip().startswith("{"):
                for ik in _INLINE_KEY.findall(rest):
                    lines.setdefault(".".join(path + [ik.strip("\"'")]), n)
        if missing is not None:
            missing.difference_update([key for key in missing if key in lines])
            if not missing:
                break
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
                break
    return lines


# --- validation ---------------------------------------------------------------------------------------------

class _Checker:
    """Collects problems: the first MAX_PROBLEMS are kept, the rest only counted. Lines are looked up at the end,
    for the kept ones only."""

    def __init__(self, text: str):
        self.text = text
        self.problems: list[Problem] = []
        self.more = 0
        self._locate: list[int] = []          # indices of problems whose line is to be found

    @property
    def full(self) -> bool:
        return len(self.problems) >= MAX_PROBLEMS

    def fail(self, key: str, message: str, *, locate: bool = True) -> None:
        if self.full:
            self.more += 1
            return
        if locate:
            self._locate.append(len(self.problems))
        self.problems.append(Problem(key, None, _clip(message, MAX_MESSAGE)))

    def take(self, key: str, value: Any, conv: Callable[[Any], Any]) -> Any:
        try:
            return conv(value)
        except (ValueError, TypeError, OverflowError) as e:
            self.fail(key, str(e) if not isinstance(e, OverflowError) else "the number is too large")
            return None

    def error(self, filename: str) -> JobFileError:
        keys = {self.problems[i].key for i in self._locate}
        lines = key_lines(self.text, {k for k in keys if k})
        for i in self._locate:
            key = self.problems[i].key or ""
            line = lines.get(key)
            if line is None and "." in key:
                line = lines.get(key.rsplit(".", 1)[0])
            self.problems[i] = dataclasses.replace(self.problems[i], line=line)
        return JobFileError(filename, self.problems, self.more)


def _typename(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def _expect(kind: type | tuple[type, ...], what: str) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ValueError(f"expected {what}, got a boolean")
        if not isinstance(v, kind):
            raise ValueError(f"expected {what}, got {_typename(v)}")
        return v
    return conv


def _command(v: Any) -> str | tuple[str, ...]:
    if isinstance(v, str):
        if not v.strip():
            raise ValueError("the command is empty")
        if "\0" in v:
            raise ValueError("the command contains a NUL character")
        return v
    if isinstance(v, list):
        if not v:
            raise ValueError("the command array is empty")
        if not all(isinstance(a, str) for a in v):
            raise ValueError("every element of a command array must be a string")
        if any("\0" in a for a in v) or not v[0]:
            raise ValueError("the command array has an empty program or a NUL character")
        return tuple(v)
    raise ValueError(f"expected a string or an array of strings, got {_typename(v)}")


def _name(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if not v or len(v) > MAX_NAME:
        raise ValueError(f"a name must be 1 to {MAX_NAME} characters")
    if not v.isprintable():
        raise ValueError("a name can't contain control characters (or other unprintable ones)")
    return v


DEPENDENCY_KEYS = ("after", "after_ok", "after_notok")
MAX_DEPENDENCIES = 64      # ids or names per dependency key
MAX_RETRIES = 100


def _dependencies(v: Any) -> tuple[int | str, ...]:
    """Job ids (integers) or job names (strings) of the owner's jobs; one of them alone, or an array."""
    items = v if isinstance(v, list) else [v]
    if len(items) > MAX_DEPENDENCIES:
        raise ValueError(f"{len(items)} jobs; at most {MAX_DEPENDENCIES}")
    out: list[int | str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ValueError(f"expected job ids (integers) or job names (strings), got {_typename(item)}")
        if isinstance(item, int):
            if item < 1:
                raise ValueError(f"{item} is not a job id (ids start at 1)")
            out.append(item)
        else:
            out.append(_name(item))
    return tuple(dict.fromkeys(out))


ON_GPU_OOM = ("fail", "retry-exclusive", "retry-more-memory")


def _on_gpu_oom(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if v not in ON_GPU_OOM:
        close = _did_you_mean(v, set(ON_GPU_OOM))
        raise ValueError(f"{_clip(v, 40)!r}: must be one of " + ", ".join(f'"{o}"' for o in ON_GPU_OOM) + close)
    return v


# --- job arrays ([sweep]; sweep.py expands them) ---
MAX_SWEEP_KEYS = 16
MAX_SWEEP_KEY = 64             # characters of a key
MAX_SWEEP_VALUE = 1024         # characters of a string value
MAX_ARRAY_SIZE = 100000        # the ceiling of the config's max_array_size (and of a file read back)
_SWEEP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _sweep(c: _Checker, table: Any, kw: dict[str, Any], limits: Limits | None) -> None:
    """[sweep]: lists of scalar values (their product is the array), and max_parallel. Bounded: at most
    max_array_size jobs, MAX_SWEEP_KEYS lists, values of at most MAX_SWEEP_VALUE characters."""
    if not isinstance(table, dict):
        c.fail("sweep", f"expected a table ([sweep]) of lists of values, got {_typename(table)}")
        return
    cap = min(limits.max_array_size, MAX_ARRAY_SIZE) if limits is not None else MAX_ARRAY_SIZE
    out: list[tuple[str, tuple[Any, ...]]] = []
    upper: dict[str, str] = {}
    total, broken = 1, False
    for key, vals in table.items():
        where = f"sweep.{key}"
        if key == "max_parallel":
            n = c.take(where, vals, _positive_int)
            if n is not None:
                kw["max_parallel"] = n
            continue
        broken = True                                    # until this list is kept
        if not _SWEEP_KEY.fullmatch(key) or len(key) > MAX_SWEEP_KEY:
            c.fail(where, f"not a sweep key: letters, digits and '_', not starting with a digit, at most "
                          f"{MAX_SWEEP_KEY} characters (it becomes {{key}} in command and {sweep.ENV_PREFIX}KEY)")
        elif key == sweep.INDEX:
            c.fail(where, "{index} is the element's index, set by gpusched: choose another name")
        elif key.upper() in upper:
            c.fail(where, f"names the same variable as {upper[key.upper()]!r} ({sweep.env_name(key)}): "
                          f"keys must differ in more than case")
        elif not isinstance(vals, list):
            c.fail(where, f"expected a list of values to sweep over, got {_typename(vals)}")
        elif not vals:
            c.fail(where, "the list is empty: the array would have no job")
        elif len(vals) > cap:
            c.fail(where, f"{len(vals)} values: more than the {cap} jobs an array may have (max_array_size)")
        elif (odd := next((v for v in vals if not isinstance(v, (str, int, float, bool))), None)) is not None:
            c.fail(where, f"values must be strings, integers, floats or booleans, got {_typename(odd)}")
        elif any(isinstance(v, str) and (len(v) > MAX_SWEEP_VALUE or "\0" in v) for v in vals):
            c.fail(where, f"a string value is longer than {MAX_SWEEP_VALUE} characters or has a NUL character")
        else:
            broken = False
            upper[key.upper()] = key
            total *= len(vals)
            out.append((key, tuple(vals)))
    if len(out) > MAX_SWEEP_KEYS:
        c.fail("sweep", f"sweeps over {len(out)} keys; at most {MAX_SWEEP_KEYS}")
    elif not out and not broken:
        c.fail("sweep", "has no list of values to sweep over (lr = [1e-3, 3e-4], ...)")
    elif total > cap:
        c.fail("sweep", f"expands into {total} jobs; at most {cap} (max_array_size)")
    elif out and not broken:
        kw["sweep"] = tuple(out)
        if "command" in kw:
            _placeholders(c, kw["command"], kw["sweep"], total)
        if kw.get("singleton"):
            c.fail("singleton", "can't be set with [sweep] (each job of an array has its own name): "
                                "max_parallel = 1 in [sweep] runs them one at a time")


def _placeholders(c: _Checker, command: str | tuple[str, ...], swept: Any, total: int) -> None:
    """Every {key} of the command names a sweep key (or {index}); no lone brace; at most MAX_PLACEHOLDERS; no
    element's command over MAX_BYTES, nor all of them together over MAX_ARRAY_BYTES (each element keeps its
    command: a small file must not make gigabytes); an argv's program never empty."""
    # shlex.quote: the value in '...', each ' inside it becoming '"'"' (4 more bytes)
    longest = {k: max(len(sweep.text(v)) for v in vals) + 2 + 4 * max(sweep.text(v).count("'") for v in vals)
               for k, vals in swept}
    longest[sweep.INDEX] = 6
    known = ", ".join(k for k, _ in swept)
    size = count = 0
    for n, arg in enumerate([command] if isinstance(command, str) else command):
        names, problem = sweep.placeholders(arg)
        if problem:
            c.fail("command", problem)
            return
        count += len(names)
        if count > MAX_PLACEHOLDERS:
            c.fail("command", f"more than {MAX_PLACEHOLDERS} {{placeholders}}")
            return
        for name in names:
            if name not in longest:
                c.fail("command", f"{{{name}}}: no such key in [sweep] (it has {known}, and {{index}}); "
                                  f"write {{{{ and }}}} for literal braces")
                return
            size += longest[name]
        size += len(arg)
        if n == 0 and not isinstance(command, str) and names:
            literal = "".join(p or "" for kind, p in sweep.tokens(arg) if kind == "text")
            empty = [k for k, vals in swept if k in names and "" in vals]
            if not literal and empty:
                c.fail("command", f"the program (the command's first element) is empty for {{{empty[0]}}} = \"\"")
    if size > MAX_BYTES:
        c.fail("command", f"with the longest [sweep] values the command is over {MAX_BYTES} bytes")
    elif size * total > MAX_ARRAY_BYTES:
        c.fail("command", f"{total} jobs of a command of up to {size} bytes: over {MAX_ARRAY_BYTES >> 20} MiB in "
                          f"all; a shorter command (read long values from a file by {{index}}) or fewer jobs")


def _exit_codes(v: Any) -> tuple[int, ...]:
    items = _expect(list, "an array of exit codes (1 to 255)")(v)
    if len(items) > 255:
        raise ValueError("at most 255 exit codes")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= 255 for i in items):
        raise ValueError("every exit code must be an integer from 1 to 255 (0 is success: nothing to retry)")
    return tuple(sorted(set(items)))


def _nonneg_int(limit: int | None = None) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        v = _expect(int, "an integer")(v)
        if v < 0 or (limit is not None and v > limit):
            raise ValueError(f"must be between 0 and {limit}" if limit else "can't be negative")
        return v
    return conv


def _gpu_id(v: Any) -> int | str:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError("each GPU id must be an index (integer) or a UUID (\"GPU-...\")")
    if isinstance(v, int) and v < 0:
        raise ValueError(f"GPU index can't be negative: {v}")
    if isinstance(v, str) and (len(v) > MAX_UUID or not _GPU_UUID.fullmatch(v)):
        raise ValueError(f"not a GPU UUID: {_clip(v, 80)!r} (NVML UUIDs look like \"GPU-8f6c...\")")
    return v


def _cpus(v: Any) -> float:
    v = _expect((int, float), "a number of CPUs")(v)
    if not 0 < v <= 4096:
        raise ValueError(f"must be more than 0 and at most 4096, got {v}")
    return float(v)


def _positive_int(v: Any) -> int:
    v = _expect(int, "an integer")(v)
    if not 0 < v <= MAX_U63:
        raise ValueError(f"must be positive and below 2^63, got {v}")
    return v


def _time_limit(v: Any) -> float:
    s = _bounded_duration(v)
    if s <= 0:
        raise ValueError("a time limit must be more than 0")
    return s


def _short(v: Any, what: str) -> Any:
    # units' regexes are cheap on short strings only (one is quadratic in blanks): cap the length first
    if isinstance(v, str) and len(v) > MAX_UNIT_STRING:
        raise ValueError(f"too long for {what}: {len(v)} characters (at most {MAX_UNIT_STRING})")
    return v


def _bounded_duration(v: Any) -> float:
    s = parse_duration(_short(v, "a duration"))
    if s > MAX_SECONDS:
        raise ValueError("a duration can be at most 100 years")
    return s


def _bounded_size(v: Any) -> int:
    n = parse_size(_short(v, "a size"))
    if n > MAX_U63:
        raise ValueError("the size is too large")
    return n


TOP_KEYS = {"command", "name", "workdir", "env", "conda", "tags", "gpus", "gpu_memory", "gpu_type", "gpu_ids",
            "priority", "limits", "time_limit", "grace", "stop_signal", "preemptible", "user", "class", "resumable",
            "share", "after", "after_ok", "after_notok", "singleton", "hold", "retries", "retry_on",
            "window", "on_gpu_oom", "warn_signal", "warn_before", "on_finish", "notify", "sweep", "attach"}
LIMIT_KEYS = {"memory", "cpus", "tasks"}


def parse(data: bytes, filename: str, *, owner_is_root: bool, default_name: str | None = None,
          limits: Limits | None = None, privileged: bool = False) -> JobSpec:
    """Validate a job file's bytes. Raises JobFileError naming the problems found (key and line; the first
    MAX_PROBLEMS of them, and how many more).

    owner_is_root: the file is root's (it may name `user`, and no limit applies to it). limits: what this server
    allows (None: no limits, as when a stored file is read back). privileged: the owner is root or an admin, who
    may ask for any priority; the grace and time caps still apply to admins."""
    def bad(message: str, line: int | None = None) -> JobFileError:
        return JobFileError(filename, [Problem(None, line, _clip(message, MAX_MESSAGE))])

    if len(data) > MAX_BYTES:
        raise bad(f"file is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise bad(f"not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start})", line) from None
    if "\0" in text:
        raise bad("file contains NUL bytes", text[:text.index("\0")].count("\n") + 1)
    if m := _DEEP_KEY.search(text):
        # tomllib needs memory quadratic in a dotted key's length (10,000 parts: 400 MB): refuse first
        raise bad(f"a dotted key has more than {_MAX_DOTTED} parts", text[:m.start()].count("\n") + 1)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        raise bad(f"invalid TOML: {e}", int(m.group(1)) if m else None) from None
    except RecursionError:
        raise bad("invalid TOML: nested too deeply") from None

    c = _Checker(text)
    _unknown(c, doc, TOP_KEYS | {"max_parallel"}, "")   # a top-level max_parallel gets its own message
    if "command" not in doc:
        c.fail("command", "required key is missing", locate=False)

    kw: dict[str, Any] = {}

    def opt(key: str, conv: Callable[[Any], Any]) -> None:
        if key in doc:
            value = c.take(key, doc[key], conv)
            if value is not None:
                kw[key] = value

    opt("command", _command)
    opt("name", _name)
    opt("workdir", _workdir)
    opt("conda", _conda)
    opt("gpus", _nonneg_int(MAX_GPUS))
    opt("gpu_memory", _bounded_size)
    opt("gpu_type", _gpu_type)
    opt("priority", _priority)
    opt("time_limit", _time_limit)
    opt("grace", _bounded_duration)
    opt("stop_signal", lambda v: int(parse_signal(_short(v, "a signal"))))
    opt("preemptible", _expect(bool, "true or false"))
    opt("user", _user)
    opt("resumable", _expect(bool, "true or false"))
    opt("share", _expect(bool, "true or false"))
    for key in DEPENDENCY_KEYS:
        opt(key, _dependencies)
    opt("singleton", _expect(bool, "true or false"))
    opt("hold", _expect(bool, "true or false"))
    opt("retries", _nonneg_int(MAX_RETRIES))
    opt("retry_on", _exit_codes)
    _warn_and_hooks(c, doc, kw)
    if kw.get("retry_on") and not kw.get("retries"):
        c.fail("retry_on", "is set but retries is 0: say how many times to retry (retries = N)")
    opt("on_gpu_oom", _on_gpu_oom)
    if kw.get("on_gpu_oom", "fail") != "fail" and not kw.get("retries"):
        c.fail("on_gpu_oom", f"{kw['on_gpu_oom']!r} retries, but retries is 0: say how many times at most "
                             f"(retries = N)")
    elif kw.get("on_gpu_oom", "fail") != "fail" and kw.get("gpus") == 0:
        c.fail("on_gpu_oom", f"{kw['on_gpu_oom']!r} is set but the job asks for gpus = 0")
    if "class" in doc:
        value = c.take("class", doc["class"], _class_name)
        if value is not None:
            kw["job_class"] = value
    opt("window", _window_name)
    opt("attach", _attach)
    if "attach" in kw and "sweep" in doc:
        c.fail("attach", "an array's jobs can't share one terminal: attach (gpuschedctl run) is for one job")

    if "sweep" in doc:
        _sweep(c, doc["sweep"], kw, limits)
        elements = 1
        for _key, vals in kw.get("sweep", ()):
            elements *= len(vals)
        if len(data) * elements > MAX_ARRAY_BYTES:
            c.fail("sweep", f"{elements} jobs of a {len(data)}-byte file: over {MAX_ARRAY_BYTES >> 20} MiB in all "
                            f"(each job keeps the file's settings); a shorter file or fewer jobs")
    if "max_parallel" in doc:
        c.fail("max_parallel", "belongs in the [sweep] table (it throttles an array's jobs)")
    if "tags" in doc:
        opt("tags", _tags)
    if "gpu_ids" in doc:
        ids = c.take("gpu_ids", doc["gpu_ids"], _expect(list, "an array of GPU indices or UUIDs"))
        if ids is not None:
            if not ids:
                c.fail("gpu_ids", "the array is empty (leave the key out to let gpusched choose)")
            elif len(ids) > MAX_GPUS:
                c.fail("gpu_ids", f"pins {len(ids)} GPUs; at most {MAX_GPUS}")
                ids = None
        if ids:
            converted = [c.take("gpu_ids", i, _gpu_id) for i in ids]
            if None not in converted and ids:
                if len(set(converted)) != len(converted):
                    c.fail("gpu_ids", "a GPU is listed twice")
                kw["gpu_ids"] = tuple(converted)
    if "env" in doc:
        env = c.take("env", doc["env"], _expect(dict, "a table of strings"))
        if env is not None and len(env) > MAX_ENV:
            c.fail("env", f"sets {len(env)} variables; at most {MAX_ENV}")
        elif env is not None:
            kw["env"] = {}
            for k, v in env.items():
                key = f"env.{k}"
                if not _ENV_NAME.fullmatch(k):
                    c.fail(key, "not a valid environment variable name")
                elif k in RESERVED_ENV or k.startswith(RESERVED_ENV_PREFIX):
                    c.fail(key, "is set by gpusched and can't be overridden"
                           + (" (ask for GPUs with gpus or gpu_ids)" if "DEVICES" in k else ""))
                elif not isinstance(v, str):
                    c.fail(key, f"expected a string, got {_typename(v)}")
                elif "\0" in v:
                    c.fail(key, "contains a NUL character")
                else:
                    kw["env"][k] = v
    if "limits" in doc:
        lim = c.take("limits", doc["limits"], _expect(dict, "a table ([limits])"))
        if lim is not None:
            _unknown(c, lim, LIMIT_KEYS, "limits.")
            lkw = {}
            for key, conv in (("memory", _bounded_size), ("cpus", _cpus), ("tasks", _positive_int)):
                if key in lim:
                    value = c.take(f"limits.{key}", lim[key], conv)
                    if value is not None:
                        lkw[key] = value
            kw["limits"] = ResourceLimits(**lkw)

    if "gpu_ids" in kw:
        if "gpus" not in doc:
            kw["gpus"] = len(kw["gpu_ids"])
        elif "gpus" in kw and kw["gpus"] > len(kw["gpu_ids"]):
            c.fail("gpus", f"asks for {kw['gpus']} GPUs but gpu_ids pins only {len(kw['gpu_ids'])}")
        elif kw.get("gpus") == 0:
            c.fail("gpu_ids", "pins GPUs for a job that asks for gpus = 0")
    if kw.get("gpus") == 0:
        for key in ("gpu_memory", "gpu_type"):
            if key in kw:
                c.fail(key, "is set but the job asks for gpus = 0")
        if kw.get("share"):
            c.fail("share", "is set but the job asks for gpus = 0")
    elif kw.get("share") and "gpu_memory" not in doc:
        c.fail("share", "true needs gpu_memory: the memory a job declares is what lets others share its GPU "
                        "(and what it may use there)")
    if "user" in kw and not owner_is_root:
        c.fail("user", "only a file owned by root may name the user to run as; "
                       "drop the key, the job runs as the file's owner")
    if limits is not None:
        _check_class(c, kw, limits, privileged or owner_is_root)
        _check_window(c, kw, limits)
    if limits is not None and not owner_is_root:
        _check_limits(c, doc, kw, limits, privileged)

    if c.problems:
        raise c.error(filename)
    kw.setdefault("name", default_name or _stem(filename))
    return JobSpec(**kw)


DEFAULT_WARN_BEFORE = 60.0
MAX_HOOK = 4096                # bytes of an on_finish command
NOTIFY = ("mail",)


def _hook_command(v: Any) -> str:
    v = _expect(str, "a string (a command run by /bin/bash -c)")(v)
    if not v.strip():
        raise ValueError("the command is empty")
    if "\0" in v:
        raise ValueError("the command contains a NUL character")
    if len(v.encode()) > MAX_HOOK:
        raise ValueError(f"longer than {MAX_HOOK} bytes (put a longer one in a script)")
    return v


def _warn_signal(v: Any) -> int:
    try:
        return int(parse_signal(_short(v, "a signal")))
    except ValueError as e:
        if "can't be a stop signal" in str(e):
            raise ValueError(f"{str(e).split()[0]} can't be a warning: it can't be trapped (use e.g. "
                             f"\"SIGUSR1\")") from None
        raise


def _notify(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if v not in NOTIFY:
        raise ValueError(f"{_clip(v, 40)!r}: the only way to notify is \"mail\"")
    return v


def _warn_and_hooks(c: _Checker, doc: dict[str, Any], kw: dict[str, Any]) -> None:
    """warn_signal / warn_before (a warning before a time-limit or preemption stop), on_finish, notify."""
    if "warn_signal" in doc:
        value = c.take("warn_signal", doc["warn_signal"], _warn_signal)
        if value is not None:
            kw["warn_signal"] = value
    if "warn_before" in doc:
        value = c.take("warn_before", doc["warn_before"], _bounded_duration)
        if value is not None:
            if value <= 0:
                c.fail("warn_before", "must be more than 0")
            elif "warn_signal" not in doc:
                c.fail("warn_before", "is set but warn_signal is not: say which signal to send "
                                      "(warn_signal = \"SIGUSR1\")")
            else:
                kw["warn_before"] = value
    if "warn_signal" in kw:
        before = kw.setdefault("warn_before", DEFAULT_WARN_BEFORE) if "warn_before" not in doc else \
            kw.get("warn_before")
        limit = kw.get("time_limit")
        if before is not None and limit is not None and before >= limit:
            c.fail("warn_before" if "warn_before" in doc else "warn_signal",
                   f"{_human(before)} is not shorter than time_limit {_human(limit)}: the warning would come "
                   f"before the job starts")
    for key, conv in (("on_finish", _hook_command), ("notify", _notify)):
        if key in doc:
            value = c.take(key, doc[key], conv)
            if value is not None:
                kw[key] = value


def _unknown(c: _Checker, table: dict[str, Any], known: set[str], prefix: str) -> None:
    # 74,000 unknown keys must cost what 20 do: report the first ones in file order, count the rest
    count = len(table) - len(table.keys() & known)
    for key in table:
        if not count or c.full:
            break
        if key not in known:
            c.fail(prefix + key, "unknown key" + _did_you_mean(key, known))
            count -= 1
    c.more += count


def _check_limits(c: _Checker, doc: dict[str, Any], kw: dict[str, Any], limits: Limits, privileged: bool) -> None:
    """The server's limits, on the values the job would run with (written or default), so that what is
    accepted stays within them however the file is read back later."""
    floor = limits.min_priority
    if not privileged and kw.get("preemptible") is False:
        # the other half of urgency: a job nobody may preempt holds its GPUs against everyone's urgent work
        c.fail("preemptible", "false: only root or a member of admin_group may make a job non-preemptible "
                              "(it would keep its GPUs from more urgent work)")
    if privileged:                          # root and the admin group may ask for any urgency
        pass
    elif "priority" in doc:
        if "priority" in kw and kw["priority"] < floor:
            c.fail("priority", f"{kw['priority']} is more urgent than this server allows (at most {floor}; "
                               f"lower is more urgent; urgency is granted by the administrator: see "
                               f"min_user_priority and admin_group)")
    elif DEFAULT_PRIORITY < floor:
        c.fail("priority", f"the default {DEFAULT_PRIORITY} is more urgent than this server allows: "
                           f"set priority = {floor} or more (min_user_priority)", locate=False)
    cap = _human(limits.max_grace)
    if "grace" in doc:
        if "grace" in kw and kw["grace"] > limits.max_grace:
            c.fail("grace", f"{_human(kw['grace'])} is more than the {cap} this server allows (max_grace)")
    elif DEFAULT_GRACE > limits.max_grace:
        c.fail("grace", f"the default {_human(DEFAULT_GRACE)} is more than the {cap} this server allows "
                        f"(max_grace): set grace to at most {cap}", locate=False)
    cls = kw.get("job_class") or limits.default_class
    class_cap = (limits.classes or {}).get(cls or "", 0.0)
    if class_cap and "time_limit" in kw and kw["time_limit"] > class_cap:
        c.fail("time_limit", f"{_human(kw['time_limit'])} is more than the {_human(class_cap)} class {cls!r} "
                             f"allows")
    if limits.max_time_limit > 0:
        cap = _human(limits.max_time_limit)
        if "time_limit" not in doc:
            c.fail("time_limit", f"required on this server: at most {cap} (max_time_limit)", locate=False)
        elif "time_limit" in kw and kw["time_limit"] > limits.max_time_limit:
            c.fail("time_limit", f"{_human(kw['time_limit'])} is more than the {cap} this server allows "
                                 f"(max_time_limit)")


def _check_class(c: _Checker, kw: dict[str, Any], limits: Limits, privileged: bool) -> None:
    """A class must exist on this server (for everyone: a typo is a typo) and be granted to the owner (root and
    admins may use any): urgency is granted, not claimed."""
    name = kw.get("job_class")
    if name is None:
        return
    if limits.classes is None:
        c.fail("class", f"{name!r}: this server defines no job classes (drop the key)")
    elif name not in limits.classes:
        known = ", ".join(sorted(limits.classes))
        c.fail("class", f"{name!r}: no such class on this server{_did_you_mean(name, set(limits.classes))}; "
                        f"it has: {known}")
    elif not privileged and name not in limits.allowed_classes:
        c.fail("class", f"{name!r} is not granted to you (the administrator decides who may use a class: see "
                        f"the classes in /etc/gpusched/gpusched.toml)")


def _check_window(c: _Checker, kw: dict[str, Any], limits: Limits) -> None:
    """A window must be one the server's config defines (for everyone, root too: a typo is a typo)."""
    name = kw.get("window")
    if name is None:
        return
    if not limits.windows:
        c.fail("window", f"{name!r}: this server defines no time windows (drop the key; an administrator adds "
                         f"them as [windows.NAME] in /etc/gpusched/gpusched.toml)")
    elif name not in limits.windows:
        c.fail("window", f"{name!r}: no such time window on this server{_did_you_mean(name, set(limits.windows))}; "
                         f"it has: {', '.join(sorted(limits.windows))}")


def _human(seconds: float) -> str:
    """A duration as a file would write it: 600 -> "10m", 3153600000 -> "36500d", 90.5 -> "90.5s"."""
    if seconds != int(seconds) or seconds == 0:
        return f"{seconds:g}s"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def _config_name(kind: str) -> Callable[[Any], str]:
    """The check of a name the server's config defines (a class, a window): letters, digits, '_', '.', '-'."""
    def check(v: Any) -> str:
        v = _expect(str, f"a {kind} name (a string)")(v)
        if not v or len(v) > MAX_CLASS or not CLASS_NAME.fullmatch(v):
            raise ValueError(f"not a {kind} name: {_clip(v, 80)!r} (letters, digits, '_', '.', '-'; at most "
                             f"{MAX_CLASS} characters)")
        return v
    return check


_class_name, _window_name = _config_name("class"), _config_name("window")


def _priority(v: Any) -> int:
    v = _expect(int, "an integer")(v)
    lo, hi = PRIORITY_RANGE
    if not lo <= v <= hi:
        raise ValueError(f"must be between {lo} and {hi}")
    return v


def _tags(v: Any) -> tuple[str, ...]:
    v = _expect(list, "an array of strings")(v)
    if len(v) > MAX_TAGS:
        raise ValueError(f"{len(v)} tags; at most {MAX_TAGS}")
    if not all(isinstance(t, str) and t and len(t) <= MAX_TAG and t.isprintable() for t in v):
        raise ValueError(f"every tag must be a printable, non-empty string of at most {MAX_TAG} characters")
    return tuple(v)


def _gpu_type(v: Any) -> str:
    v = _expect(str, "a string")(v).strip()
    if not v:
        raise ValueError("gpu_type is empty")
    if len(v) > MAX_GPU_TYPE:
        raise ValueError(f"at most {MAX_GPU_TYPE} characters (it is matched against GPU names)")
    return v


def _workdir(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if "\0" in v:
        raise ValueError("contains a NUL character")
    if not v.isprintable():
        raise ValueError("can't contain control characters (or other unprintable ones)")
    if len(v.encode()) > MAX_PATH:
        raise ValueError(f"longer than {MAX_PATH} bytes")
    if v.startswith("~") and v != "~" and not v.startswith("~/"):
        # "~bob" once passed and was then entered as a path relative to /
        user = v[1:].split("/", 1)[0]
        raise ValueError(f"{_clip(v, 80)!r}: only '~' and '~/...' (the home of the user the job runs as) are "
                         f"expanded, never '~{_clip(user, 32)}'; write an absolute path instead")
    if not v.startswith(("/", "~")):
        raise ValueError(f"must be an absolute path or start with ~/ (the job user's home), got {_clip(v, 80)!r}")
    return v


MAX_SOCKET_PATH = 107          # bytes of a Unix socket's path (sun_path, less its NUL)


def _attach(v: Any) -> str:
    v = _expect(str, "a path")(v)
    if "\0" in v or not v.isprintable():
        raise ValueError("can't contain NUL or control characters (or other unprintable ones)")
    if not v.startswith("/"):
        raise ValueError(f"must be an absolute path (a Unix socket's), got {_clip(v, 80)!r}")
    if len(v.encode()) > MAX_SOCKET_PATH:
        raise ValueError(f"longer than {MAX_SOCKET_PATH} bytes (a Unix socket's path can't be)")
    return v


def _conda(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if len(v) > MAX_PATH or not _CONDA_NAME.fullmatch(v):
        raise ValueError(f"not a conda environment name or path: {_clip(v, 80)!r}")
    return v


def _user(v: Any) -> str:
    v = _expect(str, "a user name")(v)
    if len(v) > 32 or not _USER_NAME.fullmatch(v):
        raise ValueError(f"not a user name: {_clip(v, 40)!r}")
    return v


def _did_you_mean(key: str, known: set[str]) -> str:
    import difflib
    if len(key) > 64:                       # no known key is near it, and difflib's cost grows with it
        return ""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _stem(filename: str) -> str:
    base = filename.rsplit("/", 1)[-1]
    stem = base[:-5] if base.endswith(".toml") else base
    clean = "".join(ch if ch.isprintable() else "?" for ch in stem)[:MAX_NAME]
    return clean or "job"
