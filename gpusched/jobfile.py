"""Job file format v1: TOML bytes in, a validated JobSpec or a JobFileError out. Pure: no I/O here.

docs/jobfile.md documents every key; examples/jobs/ has one file per feature.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

from gpusched.units import parse_duration, parse_signal, parse_size

MAX_BYTES = 1 << 20
DEFAULT_PRIORITY = 100
DEFAULT_GRACE = 180.0
MAX_GPUS = 64
MAX_NAME = 128

# Set by gpusched for every job; a job may not override them (they decide which GPUs it sees and who it is).
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES",
                          "HOME", "USER", "LOGNAME", "SHELL"})
RESERVED_ENV_PREFIX = "GPUSCHED_"
# used with fullmatch: "$" would also match before a final newline
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)
_CONDA_NAME = re.compile(r"[A-Za-z0-9_.+/-]+")
_GPU_UUID = re.compile(r"(GPU|MIG)-[A-Za-z0-9-]+")
MAX_SECONDS = 100 * 365 * 86400.0      # durations beyond a century are mistakes (and overflow systemd's usec)
MAX_U63 = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int | None = None      # bytes, MemoryMax
    cpus: float | None = None      # CPUs, CPUQuota
    tasks: int | None = None       # TasksMax


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
    limits: Limits = Limits()
    time_limit: float | None = None
    grace: float = DEFAULT_GRACE
    stop_signal: int = 15
    preemptible: bool = True
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["command"] = self.command if isinstance(self.command, str) else list(self.command)
        d["tags"] = list(self.tags)
        d["gpu_ids"] = list(self.gpu_ids)
        return {k: v for k, v in d.items() if v not in (None, {}, [])}


@dataclass(frozen=True, slots=True)
class Problem:
    key: str | None
    line: int | None
    message: str


class JobFileError(Exception):
    def __init__(self, filename: str, problems: list[Problem]):
        self.filename = filename
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(format_problem(self.filename, p) for p in self.problems)


def format_problem(filename: str, p: Problem) -> str:
    where = filename if p.line is None else f"{filename}:{p.line}"
    return f"{where}: {p.key}: {p.message}" if p.key else f"{where}: {p.message}"


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


def key_lines(text: str) -> dict[str, int]:
    """Map 'key' and 'table.key' to the 1-based line where it is set. Good enough for error messages:
    lines inside multi-line strings are skipped, and lines are split at "\n" only, as TOML counts them."""
    lines: dict[str, int] = {}
    table: list[str] = []
    in_string: str | None = None
    for n, line in enumerate(text.split("\n"), 1):
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
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
                break
    return lines


# --- validation ---------------------------------------------------------------------------------------------

class _Checker:
    def __init__(self, text: str):
        self.lines = key_lines(text)
        self.problems: list[Problem] = []

    def fail(self, key: str, message: str) -> None:
        line = self.lines.get(key)
        if line is None and "." in key:
            line = self.lines.get(key.rsplit(".", 1)[0])
        self.problems.append(Problem(key, line, message))

    def take(self, key: str, value: Any, conv: Callable[[Any], Any]) -> Any:
        try:
            return conv(value)
        except (ValueError, TypeError, OverflowError) as e:
            self.fail(key, str(e) if not isinstance(e, OverflowError) else "the number is too large")
            return None


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
    if isinstance(v, str) and not _GPU_UUID.fullmatch(v):
        raise ValueError(f"not a GPU UUID: {v!r} (NVML UUIDs look like \"GPU-8f6c...\")")
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


def _bounded_duration(v: Any) -> float:
    s = parse_duration(v)
    if s > MAX_SECONDS:
        raise ValueError("a duration can be at most 100 years")
    return s


def _bounded_size(v: Any) -> int:
    n = parse_size(v)
    if n > MAX_U63:
        raise ValueError("the size is too large")
    return n


TOP_KEYS = {"command", "name", "workdir", "env", "conda", "tags", "gpus", "gpu_memory", "gpu_type", "gpu_ids",
            "priority", "limits", "time_limit", "grace", "stop_signal", "preemptible", "user"}
LIMIT_KEYS = {"memory", "cpus", "tasks"}


def parse(data: bytes, filename: str, *, owner_is_root: bool, default_name: str | None = None) -> JobSpec:
    """Validate a job file's bytes. Raises JobFileError naming every problem found (key and line)."""
    def bad(message: str, line: int | None = None) -> JobFileError:
        return JobFileError(filename, [Problem(None, line, message)])

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
    for key in sorted(set(doc) - TOP_KEYS):
        c.fail(key, "unknown key" + _did_you_mean(key, TOP_KEYS))
    if "command" not in doc:
        c.problems.append(Problem("command", None, "required key is missing"))

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
    opt("gpu_type", lambda v: _expect(str, "a string")(v).strip() or _raise("gpu_type is empty"))
    opt("priority", _expect(int, "an integer"))
    opt("time_limit", _time_limit)
    opt("grace", _bounded_duration)
    opt("stop_signal", lambda v: int(parse_signal(v)))
    opt("preemptible", _expect(bool, "true or false"))
    opt("user", _user)

    if "tags" in doc:
        tags = c.take("tags", doc["tags"], _expect(list, "an array of strings"))
        if tags is not None:
            if all(isinstance(t, str) and t and len(t) <= MAX_NAME and t.isprintable() for t in tags):
                kw["tags"] = tuple(tags)
            else:
                c.fail("tags", "every tag must be a printable, non-empty string of at most 128 characters")
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
        if env is not None:
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
            for key in sorted(set(lim) - LIMIT_KEYS):
                c.fail(f"limits.{key}", "unknown key" + _did_you_mean(key, LIMIT_KEYS))
            lkw = {}
            for key, conv in (("memory", _bounded_size), ("cpus", _cpus), ("tasks", _positive_int)):
                if key in lim:
                    value = c.take(f"limits.{key}", lim[key], conv)
                    if value is not None:
                        lkw[key] = value
            kw["limits"] = Limits(**lkw)

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
    if "user" in kw and not owner_is_root:
        c.fail("user", "only a file owned by root may name the user to run as; "
                       "drop the key, the job runs as the file's owner")

    if c.problems:
        raise JobFileError(filename, c.problems)
    kw.setdefault("name", default_name or _stem(filename))
    return JobSpec(**kw)


def _raise(message: str) -> Any:
    raise ValueError(message)


def _workdir(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if not v.startswith(("/", "~")):
        raise ValueError(f"must be an absolute path or start with ~, got {v!r}")
    if "\0" in v:
        raise ValueError("contains a NUL character")
    return v


def _conda(v: Any) -> str:
    v = _expect(str, "a string")(v)
    if not _CONDA_NAME.fullmatch(v):
        raise ValueError(f"not a conda environment name or path: {v!r}")
    return v


def _user(v: Any) -> str:
    v = _expect(str, "a user name")(v)
    if not _USER_NAME.fullmatch(v) or len(v) > 32:
        raise ValueError(f"not a user name: {v!r}")
    return v


def _did_you_mean(key: str, known: set[str]) -> str:
    import difflib
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _stem(filename: str) -> str:
    base = filename.rsplit("/", 1)[-1]
    stem = base[:-5] if base.endswith(".toml") else base
    clean = "".join(ch if ch.isprintable() else "?" for ch in stem)[:MAX_NAME]
    return clean or "job"
