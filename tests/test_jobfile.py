"""Job file format v1: every example in examples/jobs/ parses, every file in examples/jobs/invalid/ fails with
the message and line examples/jobs/invalid/expectations.toml gives, plus focused and property tests of
gpusched.jobfile.parse and key_lines.

Tests named test_fixed_* pin down bugs these tests once found in jobfile.py/units.py.
"""

from __future__ import annotations

import math
import os
import pwd
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpusched import jobfile, launch
from gpusched.jobfile import JobFileError, JobSpec, Limits, ResourceLimits, key_lines, parse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "jobs"
INVALID = EXAMPLES / "invalid"
EXPECTATIONS = INVALID / "expectations.toml"
ROOT_OWNED = {"as-user.toml"}       # the only examples that are valid only in a root-owned file
NEEDS_CONDA = {"conda.toml"}
NEEDS_WINDOW = {"window.toml"}       # valid only on a server whose config defines [windows.night]
GiB = 1 << 30


def valid_examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))


def invalid_examples() -> list[Path]:
    return sorted(p for p in INVALID.iterdir() if p.is_file() and p.name != EXPECTATIONS.name)


def load(path: Path, *, root: bool | None = None) -> JobSpec:
    if root is None:
        root = path.name in ROOT_OWNED
    return parse(path.read_bytes(), path.name, owner_is_root=root)


def p(text: str | bytes, filename: str = "job.toml", *, root: bool = False, **kw) -> JobSpec:
    data = text.encode() if isinstance(text, str) else text
    return parse(data, filename, owner_is_root=root, **kw)


def error(text: str | bytes, filename: str = "job.toml", *, root: bool = False) -> JobFileError:
    with pytest.raises(JobFileError) as e:
        p(text, filename, root=root)
    return e.value


# --- the valid examples -----------------------------------------------------------------------------------

# key fields per example: anything not listed must have its default (checked in test_example_fields)
EXPECTED: dict[str, dict] = {
    "minimal.toml": {"command": 'echo "hello from gpusched job $GPUSCHED_JOB_ID on GPU(s) [$GPUSCHED_GPUS]"',
                     "name": "minimal"},
    "script.toml": {"name": "preprocess-shards", "gpus": 0},
    "argv.toml": {"name": "argv-demo", "gpus": 0,
                  "command": ("python3", "-c", "import sys; print('argv:', sys.argv[1:])", "--run-name",
                              "lr 3e-4; seed 7")},
    "conda.toml": {"name": "conda-demo", "conda": "pytorch"},
    "env.toml": {"name": "env-demo", "gpus": 0,
                 "env": {"SEED": "1234", "RUN_NAME": "baseline", "OMP_NUM_THREADS": "4"}},
    "workdir.toml": {"name": "workdir-demo", "gpus": 0, "workdir": "/tmp"},
    "tags.toml": {"name": "sweep-lr-3e-4", "gpus": 0, "tags": ("sweep-42", "resnet50", "lr=3e-4")},
    "cpu-only.toml": {"name": "cpu-only", "gpus": 0},
    "multi-gpu.toml": {"name": "ddp-2gpu", "gpus": 2},
    "gpu-memory.toml": {"name": "needs-20g", "gpu_memory": 20 * GiB},
    "gpu-type.toml": {"name": "a100-only", "gpu_type": "A100"},
    "gpu-ids-index.toml": {"name": "pinned-by-index", "gpus": 2, "gpu_ids": (2, 3)},
    "gpu-ids-uuid.toml": {"name": "pinned-by-uuid", "gpus": 1,
                          "gpu_ids": ("GPU-8f6c1e2a-5b3d-4c7e-9a10-2f4b6d8e0c11",
                                      "GPU-3a9d7b15-0e4f-4c21-8b6a-7d2e1f9c5a34")},
    "urgent.toml": {"name": "urgent-eval", "priority": 10},
    "limits.toml": {"name": "limited", "gpus": 0, "limits": ResourceLimits(memory=8 * GiB, cpus=2.5, tasks=256)},
    "time-limit.toml": {"name": "bounded", "time_limit": 2.5 * 3600},
    "checkpoint.toml": {"name": "train-with-checkpoint", "stop_signal": int(signal.SIGUSR1), "grace": 120.0},
    "non-preemptible.toml": {"name": "db-migration", "gpus": 0, "preemptible": False},
    "as-user.toml": {"name": "nightly-cleanup", "user": "nobody", "gpus": 0, "priority": 200},
    "resumable.toml": {"name": "resumable-train", "resumable": True, "stop_signal": int(signal.SIGUSR1),
                       "grace": 120.0},
    "shared-gpu.toml": {"name": "small-eval", "share": True, "gpu_memory": 10 * GiB},
    "after.toml": {"name": "train", "after_ok": ("preprocess",), "after": (41,)},
    "after-notok.toml": {"name": "on-failure", "after_notok": (42,), "gpus": 0},
    "singleton.toml": {"name": "nightly-eval", "singleton": True},
    "hold.toml": {"name": "later", "hold": True},
    "retries.toml": {"name": "flaky-download", "retries": 3, "retry_on": (75,), "gpus": 0},
    "window.toml": {"name": "overnight-sweep", "window": "night", "time_limit": 8 * 3600.0},
    "sweep.toml": {"name": "sweep", "gpus": 0, "sweep": (("lr", ("1e-3", "3e-4")), ("seed", (1, 2, 3)))},
    "max-parallel.toml": {"name": "throttled", "max_parallel": 2, "gpus": 0,
                          "sweep": (("dataset", ("mnist", "cifar10", "cifar100", "svhn")),)},
}
EXPECTED["on-gpu-oom.toml"] = {"name": "finetune", "retries": 2, "on_gpu_oom": "retry-more-memory",
                               "gpu_memory": 16 << 30, "share": True}
# issue 9: warnings and hooks
EXPECTED.update({
    "warn_signal.toml": {"name": "warned-training", "time_limit": 4 * 3600.0, "warn_signal": int(signal.SIGUSR1),
                         "warn_before": 120.0},
    "warn_before.toml": {"name": "preemptible-with-warning", "warn_signal": int(signal.SIGUSR1), "warn_before": 30.0},
    "on_finish.toml": {"name": "with-a-hook", "gpus": 0, "on_finish": 'echo "$(date) job $GPUSCHED_JOB_ID '
                       '$GPUSCHED_STATE exit=$GPUSCHED_EXIT_CODE" >> ~/gpusched-finished.log'},
    "notify.toml": {"name": "mail-me", "gpus": 0, "notify": "mail"},
})


def test_every_example_is_listed():
    assert {f.name for f in valid_examples()} == set(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text()
    for name in EXPECTED:
        assert f"`{name}`" in readme, f"{name} is not described in examples/jobs/README.md"


@pytest.mark.parametrize("path", valid_examples(), ids=lambda p: p.name)
def test_example_parses(path):
    spec = load(path)
    assert isinstance(spec, JobSpec)
    assert spec.command


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_fields(name):
    spec = load(EXAMPLES / name)
    defaults = JobSpec(command="x", name="x")
    for f in ("workdir", "env", "conda", "tags", "gpus", "gpu_memory", "gpu_type", "gpu_ids", "priority", "limits",
              "time_limit", "grace", "stop_signal", "preemptible", "user", "name", "command", "job_class",
              "resumable", "share"):
        if f in EXPECTED[name]:
            assert getattr(spec, f) == EXPECTED[name][f], f
        elif f not in ("name", "command"):
            assert getattr(spec, f) == getattr(defaults, f), f


# more urgent than a user may be, or never preempted: under the default limits, root's or an admin's only
PRIVILEGED_ONLY = {"urgent.toml", "non-preemptible.toml"}


@pytest.mark.parametrize("path", valid_examples(), ids=lambda p: p.name)
def test_example_is_within_the_default_limits(path):
    """What a plain user may submit on a server with the default config; the others say who may."""
    root, privileged = path.name in ROOT_OWNED, path.name in ROOT_OWNED | PRIVILEGED_ONLY
    if path.name in NEEDS_WINDOW:                      # on a server that defines the window it names
        with pytest.raises(JobFileError, match="this server defines no time windows"):
            parse(path.read_bytes(), path.name, owner_is_root=root, limits=Limits(), privileged=privileged)
        parse(path.read_bytes(), path.name, owner_is_root=root, limits=Limits(windows=frozenset({"night"})))
        return
    parse(path.read_bytes(), path.name, owner_is_root=root, limits=Limits(), privileged=privileged)
    if privileged:
        with pytest.raises(JobFileError):
            parse(path.read_bytes(), path.name, owner_is_root=False, limits=Limits(), privileged=False)
        assert "root" in path.read_text() or "admin_group" in path.read_text()


def test_root_only_example_is_rejected_when_not_root():
    e = error((EXAMPLES / "as-user.toml").read_bytes(), "as-user.toml", root=False)
    assert "user: only a file owned by root" in str(e)


def test_every_example_has_a_comment():
    for path in valid_examples():
        assert path.read_text().lstrip().startswith("#"), path.name


def _account(home: str) -> launch.Account:
    pw = pwd.getpwuid(os.getuid())
    return launch.Account(pw.pw_name, pw.pw_uid, pw.pw_gid, home, "/bin/bash")


def _run_example(path: Path, tmp_path: Path, **popen) -> subprocess.Popen:
    spec = load(path)
    env = launch.environment(7, 1, spec, _account(str(tmp_path)), [], str(tmp_path / "log"))
    env["TMPDIR"] = str(tmp_path)
    return subprocess.Popen(launch.argv_for(spec), env=env, cwd=launch.workdir_for(spec, str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.parametrize("path", [p for p in valid_examples() if p.name not in NEEDS_CONDA], ids=lambda p: p.name)
def test_example_command_runs_without_gpus(path, tmp_path):
    """What the README promises: each example runs as gpusched would start it (argv, env, workdir), no GPU."""
    t0 = time.monotonic()
    proc = _run_example(path, tmp_path)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert time.monotonic() - t0 < 10
    assert out.strip()


def test_checkpoint_example_checkpoints_on_its_stop_signal(tmp_path):
    proc = _run_example(EXAMPLES / "checkpoint.toml", tmp_path, start_new_session=True)
    time.sleep(1.3)
    os.killpg(proc.pid, signal.SIGUSR1)      # systemd signals every process of the scope
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "caught SIGUSR1" in out and "all steps done" not in out
    assert (tmp_path / "gpusched-example-7.ckpt").read_text().strip().isdigit()


# --- the invalid examples ---------------------------------------------------------------------------------

EXPECT = tomllib.loads(EXPECTATIONS.read_text())


def test_every_invalid_example_has_an_expectation():
    assert {f.name for f in invalid_examples()} == set(EXPECT)
    for name, e in EXPECT.items():
        assert set(e) <= {"expect", "line"}, name


def test_there_is_a_non_utf8_example():
    with pytest.raises(UnicodeDecodeError):
        (INVALID / "not-utf8.toml").read_bytes().decode()


@pytest.mark.parametrize("path", invalid_examples(), ids=lambda p: p.name)
def test_invalid_example_is_rejected(path):
    want = EXPECT[path.name]
    with pytest.raises(JobFileError) as e:
        parse(path.read_bytes(), path.name, owner_is_root=False, limits=Limits())
    msg = str(e.value)
    assert want["expect"] in msg
    assert msg.startswith(path.name)
    assert e.value.filename == path.name
    if "line" in want:
        assert msg.startswith(f"{path.name}:{want['line']}: "), msg
        assert want["line"] in [pr.line for pr in e.value.problems]
    else:
        assert msg.startswith(f"{path.name}: "), msg
        assert all(pr.line is None for pr in e.value.problems)


# --- focused tests ----------------------------------------------------------------------------------------

def test_defaults():
    s = p('command = "python train.py"\n', "resnet50.toml")
    assert s.name == "resnet50"
    assert (s.gpus, s.priority, s.grace, s.stop_signal, s.preemptible) == (1, 100, 180.0, 15, True)
    assert (s.workdir, s.env, s.conda, s.tags, s.gpu_memory, s.gpu_type, s.gpu_ids) == (None, {}, None, (), None,
                                                                                         None, ())
    assert (s.limits, s.time_limit, s.user) == (ResourceLimits(), None, None)
    assert s.to_dict() == {"command": "python train.py", "name": "resnet50", "gpus": 1, "priority": 100,
                           "limits": {"memory": None, "cpus": None, "tasks": None}, "grace": 180.0,
                           "stop_signal": 15, "preemptible": True}


def test_name_defaults():
    assert p('command = "x"', "dir/sub/train").name == "train"
    assert p('command = "x"', ".toml").name == "job"
    assert p('command = "x"', "a\tb.toml").name == "a?b"
    assert p('command = "x"', "x" * 300 + ".toml").name == "x" * 128
    assert p('command = "x"', "f.toml", default_name="kept").name == "kept"
    assert p('command = "x"\nname = "given"', "f.toml", default_name="kept").name == "given"


def test_gpu_ids_imply_gpus():
    assert p('command = "x"\ngpu_ids = [0, 2, 5]').gpus == 3
    assert p('command = "x"\ngpu_ids = ["MIG-abc-1"]').gpus == 1
    assert p('command = "x"\ngpus = 1\ngpu_ids = [0, 2]').gpus == 1
    assert "a GPU is listed twice" in str(error('command = "x"\ngpu_ids = [1, 1]'))
    assert "the array is empty" in str(error('command = "x"\ngpu_ids = []'))
    assert "pins GPUs for a job that asks for gpus = 0" in str(error('command = "x"\ngpus = 0\ngpu_ids = [0]'))
    assert "GPU index can't be negative" in str(error('command = "x"\ngpu_ids = [-1]'))
    assert "each GPU id must be" in str(error('command = "x"\ngpu_ids = [true]'))


def test_sizes_durations_signals():
    s = p('command = "x"\ngpu_memory = "1.5G"\ntime_limit = "1d12h"\ngrace = 30\nstop_signal = "int"\n'
          '[limits]\nmemory = 1048576\ncpus = 4\n')
    assert s.gpu_memory == 3 * GiB // 2
    assert s.time_limit == 36 * 3600 and s.grace == 30.0
    assert s.stop_signal == int(signal.SIGINT)
    assert s.limits == ResourceLimits(memory=1 << 20, cpus=4.0)
    assert p('command = "x"\ntime_limit = "500ms"').time_limit == 0.5
    assert p('command = "x"\nstop_signal = 10').stop_signal == 10
    assert "time_limit: a time limit must be more than 0" in str(error('command = "x"\ntime_limit = 0'))
    for sig in ('"SIGSTOP"', "9", "19"):
        assert "can't be a stop signal" in str(error(f'command = "x"\nstop_signal = {sig}')), sig


def test_command_forms():
    assert "the command array is empty" in str(error("command = []"))
    assert "every element of a command array must be a string" in str(error('command = ["a", 1]'))
    assert "empty program" in str(error('command = ["", "a"]'))
    assert "expected a string or an array of strings, got an integer" in str(error("command = 3"))


def test_env_rules():
    for name in sorted(jobfile.RESERVED_ENV) + ["GPUSCHED_ANYTHING"]:
        e = error(f'command = "x"\n[env]\n{name} = "v"\n')
        assert f"job.toml:3: env.{name}: is set by gpusched and can't be overridden" in str(e)
    assert "not a valid environment variable name" in str(error('command = "x"\nenv = { "1ABC" = "v" }'))
    assert "expected a table of strings, got a string" in str(error('command = "x"\nenv = "A=1"'))
    assert p('command = "x"\nenv = { PATH = "/opt/bin:/usr/bin", LANG = "en_US.UTF-8" }').env == {
        "PATH": "/opt/bin:/usr/bin", "LANG": "en_US.UTF-8"}


def test_user_rules():
    assert p('command = "x"\nuser = "svc-train"', root=True).user == "svc-train"
    assert "not a user name" in str(error('command = "x"\nuser = "../etc"', root=True))
    assert "user: only a file owned by root" in str(error('command = "x"\nuser = "root"', root=False))


def test_key_lines_finds_keys_in_tables_and_inline_tables():
    text = ('command = "x"   # a comment with gpus = 3\n'         # 1
            'limits = { memory = "1G", cpus = 2 }\n'             # 2
            'env.A = "1"\n'                                      # 3
            '\n'                                                 # 4
            '[env]\n'                                            # 5
            'B = "2"\n'                                          # 6
            '  "quoted key" = "3"\n'                             # 7
            '[ limits ]  # comment\n'                            # 8
            'tasks = 5\n')                                       # 9
    lines = key_lines(text)
    assert lines["command"] == 1
    assert lines["limits"] == 2 and lines["limits.memory"] == 2 and lines["limits.cpus"] == 2
    assert lines["env"] == 3 and lines["env.A"] == 3 and lines["env.B"] == 6
    assert lines["env.quoted key"] == 7
    assert lines["limits.tasks"] == 9
    assert "gpus" not in lines


def test_errors_in_tables_and_inline_tables_name_their_line():
    e = error('command = "x"\n\nlimits = { memory = "lots", cpus = 2 }\n[env]\nA = 1\n')
    assert "job.toml:3: limits.memory: not a size: 'lots'" in str(e)
    assert "job.toml:5: env.A: expected a string, got an integer" in str(e)
    e = error('command = "x"\n[limits]\n\n\ncpus = 0\n')
    assert str(e) == "job.toml:5: limits.cpus: must be more than 0 and at most 4096, got 0"


def test_crlf_line_numbers():
    e = error(b'command = "x"\r\n\r\ngpus = -2\r\n')
    assert str(e) == "job.toml:3: gpus: must be between 0 and 64"


def test_all_problems_are_reported():
    text = ('gpu = 1\n'                    # 1
            'gpus = -1\n'                  # 2
            'time_limit = "soon"\n'        # 3
            'stop_signal = "KILL"\n'       # 4
            'tags = ["ok", ""]\n'          # 5
            '[env]\n'                      # 6
            'CUDA_VISIBLE_DEVICES = "0"\n'  # 7
            '[limits]\n'                   # 8
            'memroy = "1G"\n')             # 9
    e = error(text, "many.toml")
    lines = str(e).splitlines()
    assert len(e.problems) == len(lines) == 8
    for want in ("many.toml:1: gpu: unknown key", "many.toml: command: required key is missing",
                 "many.toml:2: gpus: must be between", "many.toml:3: time_limit: not a duration",
                 "many.toml:4: stop_signal: SIGKILL", "many.toml:5: tags: every tag must be",
                 "many.toml:7: env.CUDA_VISIBLE_DEVICES: is set by gpusched",
                 "many.toml:9: limits.memroy: unknown key (did you mean 'memory'?)"):
        assert any(line.startswith(want) for line in lines), (want, lines)


def test_size_limit():
    head = b'command = "x"\n'
    exact = head + b"#" * (jobfile.MAX_BYTES - len(head) - 1) + b"\n"
    assert len(exact) == jobfile.MAX_BYTES
    assert p(exact).command == "x"
    e = error(exact + b"\n")
    assert str(e) == f"job.toml: file is larger than {jobfile.MAX_BYTES} bytes"


def test_nul_bytes():
    assert str(error(b'command = "x"\n\n# \0\n')) == "job.toml:3: file contains NUL bytes"


@pytest.mark.parametrize("bomb", ["x = " + "[" * 100_000, "x = " + "{a=" * 100_000,
                                  "x = " + "[" * 300_000 + "]" * 300_000],
                         ids=["arrays", "inline-tables", "closed-arrays"])
def test_toml_bomb_is_rejected_cleanly(bomb):
    data = bomb.encode()
    assert len(data) <= jobfile.MAX_BYTES
    t0 = time.monotonic()
    e = error(data)
    assert time.monotonic() - t0 < 20
    assert str(e).startswith("job.toml")


def test_huge_arrays_within_the_size_limit():
    n = 80_000
    t0 = time.monotonic()
    text = 'command = ["echo"' + ', "a"' * n + ']\n'
    assert len(text) <= jobfile.MAX_BYTES
    s = p(text)
    assert len(s.command) == n + 1
    e = error('command = "x"\ntags = [' + ", ".join(['"t"'] * n) + ']\n')
    assert str(e) == f"job.toml:2: tags: {n} tags; at most {jobfile.MAX_TAGS}"
    assert "pins 300000 GPUs; at most 64" in str(error('command = "x"\ngpu_ids = [' + "0," * 300_000 + ']'))
    e = error('command = "x"\nenv = {' + ", ".join(f"V{i} = {i}" for i in range(60_000)) + "}")
    assert str(e) == f"job.toml:2: env: sets 60000 variables; at most {jobfile.MAX_ENV}"
    assert time.monotonic() - t0 < 30


# --- property tests ---------------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_spec_or_a_jobfile_error(data):
    try:
        spec = parse(data, "fuzz.toml", owner_is_root=False)
    except JobFileError as e:
        assert str(e).startswith("fuzz.toml")
        assert e.problems
    else:
        assert isinstance(spec, JobSpec)


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_SURROGATE_FREE = st.characters(blacklist_categories=("Cs",))
_scalar = st.one_of(
    st.integers(-(10 ** 20), 10 ** 20).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(lambda f: repr(f).replace("+", "")),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(_SURROGATE_FREE, max_size=30).map(_toml_string),
    st.sampled_from(['"32G"', '"1.5T"', '"10 gigs"', '"0"', '"2h"', '"1d12h"', '"500ms"', '"soon"', '"SIGUSR1"',
                     '"KILL"', '"term"', '"GPU-8f6c"', '"MIG-x-1"', '"~/runs"', '"/data"', '"rel"', '""', '"  "',
                     "1979-05-27T07:32:00Z", "07:32:00", "{}", "[]", '"root"', '"\\u0007"', '"a\\u0000b"']),
)
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.dictionaries(st.sampled_from(sorted(jobfile.LIMIT_KEYS | {"PATH", "A", "CUDA_VISIBLE_DEVICES", "x"})),
                    inner, max_size=3).map(lambda d: "{" + ", ".join(f'"{k}" = {v}' for k, v in d.items()) + "}"),
), max_leaves=8)
_keys = st.sampled_from(sorted(jobfile.TOP_KEYS | {"gpu", "limits.memory", "limits.cpus", "limits.tasks",
                                                   "limits.bogus", "env.FOO", "env.GPUSCHED_X", "env.HOME"}))


_limits = st.one_of(st.none(), st.builds(Limits, st.integers(-200, 300), st.sampled_from([0.0, 60.0, 600.0, 1e9]),
                                         st.sampled_from([0.0, 3600.0, 86400.0])))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _value, max_size=8), st.booleans(), st.booleans(), _limits, st.booleans())
def test_tomlish_documents_give_a_spec_or_a_jobfile_error(doc, root, crlf, limits, privileged):
    text = "\n".join(f"{k} = {v}" for k, v in doc.items()) + "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    privileged = privileged or root
    try:
        spec = parse(text.encode(), "fuzz.toml", owner_is_root=root, limits=limits, privileged=privileged)
    except JobFileError as e:
        assert e.problems and str(e).startswith("fuzz.toml")
        assert len(e.problems) <= jobfile.MAX_PROBLEMS and len(str(e).encode()) <= jobfile.MAX_REASON
        for pr in e.problems:
            assert pr.line is None or 1 <= pr.line <= text.count("\n") + 1
    else:
        assert isinstance(spec, JobSpec)
        assert spec.command and spec.name
        assert 0 <= spec.gpus
        assert spec.user is None or root
        assert len(spec.tags) <= jobfile.MAX_TAGS
        if limits is not None and not root:
            assert spec.grace <= limits.max_grace
            assert not limits.max_time_limit or spec.time_limit <= limits.max_time_limit
            assert privileged or spec.priority >= limits.min_priority


# --- bugs found by these tests, since fixed -------------------------------------------------------------------

HUGE = "9" * 400


@pytest.mark.parametrize("text", [f'gpu_memory = "{HUGE}G"', f'limits.memory = "{HUGE}"',
                                  f"time_limit = 1{'0' * 400}", f"grace = 1{'0' * 400}"],
                         ids=["gpu_memory", "limits.memory", "time_limit", "grace"])
def test_fixed_huge_numbers_crash_the_parser(text):
    error(f'command = "x"\n{text}\n')


def _fits_systemd(spec: JobSpec) -> None:
    account = launch.Account("alice", 1000, 1000, "/home/alice", "/bin/bash")
    for name, sig, value in launch.scope_properties(1, spec, account, []):
        if sig == "t":
            assert isinstance(value, int) and 0 <= value < 2 ** 64, (name, value)


@pytest.mark.parametrize("text", ["grace = nan", "grace = inf", "time_limit = inf", "time_limit = nan",
                                  f'time_limit = "{HUGE}s"', "time_limit = 1e300", "grace = 1e20",
                                  "limits.memory = 18446744073709551616", "limits.tasks = 99999999999999999999"])
def test_fixed_accepted_values_must_fit_systemd(text):
    try:
        spec = p(f'command = "x"\n{text}\n')
    except JobFileError:
        return
    _fits_systemd(spec)


def test_ordinary_values_fit_systemd():
    for path in valid_examples():
        _fits_systemd(load(path))
    _fits_systemd(p('command = "x"\ntime_limit = "365d"\ngrace = "1h"\nlimits.memory = "1P"\nlimits.tasks = 100000'))


def _launch_env_names() -> list[str]:
    spec = p('command = "x"')
    return sorted(launch.environment(1, 1, spec, launch.Account("a", 1, 1, "/h", "/bin/sh"), [], "/l"))


@pytest.mark.parametrize("name", _launch_env_names())
def test_env_the_job_sets_is_either_rejected_or_honoured(name):
    try:
        spec = p(f'command = "x"\n[env]\n{name} = "from-the-job"\n')
    except JobFileError as e:
        assert "is set by gpusched" in str(e)
        return
    env = launch.environment(1, 1, spec, launch.Account("a", 1, 1, "/h", "/bin/sh"), [], "/l")
    assert env[name] == "from-the-job"


@pytest.mark.parametrize("script,key,line", [
    ('workdir=/tmp/x\nmkdir -p "$workdir"', "workdir", 5),
    ('[ -f data.bin ]\necho ok', "gpus", 5),
], ids=["assignment", "test-bracket"])
def test_fixed_multiline_strings_confuse_key_lines(script, key, line):
    bad = {"workdir": 'workdir = "relative"', "gpus": "gpus = -1"}[key]
    e = error(f'command = """\n{script}\n"""\n{bad}\n')
    assert str(e).startswith(f"job.toml:{line}: {key}: "), str(e)


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"], ids=["u2028", "u2029", "nel"])
def test_fixed_unicode_line_separators_shift_line_numbers(sep):
    e = error(f'# a comment{sep}with a separator\ngpus = -1\ncommand = "x"\n')
    assert str(e) == "job.toml:2: gpus: must be between 0 and 64"


def test_fixed_header_regex_is_not_catastrophic():
    _parse_in_child(('command = """\n[' + " " * 50_000 + '\n"""\n').encode(), timeout=5)


def _parse_in_child(data: bytes, timeout: float, memory: int = 2 << 30) -> None:
    """parse() in a child process with an address-space cap, so a runaway can't take this machine down."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from gpusched.jobfile import parse, JobFileError\n"
            "try: parse(sys.stdin.buffer.read(), 'bomb.toml', owner_is_root=False)\n"
            "except JobFileError: pass\n" % (memory, memory))
    try:
        r = subprocess.run([sys.executable, "-c", code], input=data, cwd=ROOT, timeout=timeout, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"parse() took more than {timeout} s on a {len(data)} byte file")
    assert r.returncode == 0, r.stderr.decode()[-2000:]


def test_fixed_long_dotted_key_is_quadratic():
    _parse_in_child(("a" + ".a" * 300_000 + " = 1\n").encode(), timeout=10)


def test_moderately_dotted_key_is_fine():
    e = error("a" + ".a" * 100 + " = 1\ncommand = 'x'\n")
    assert str(e) == "job.toml:1: a: unknown key"


def test_very_dotted_key_is_refused_before_toml_parsing():
    e = error("command = 'x'\n" + "a" + ".a" * 1000 + " = 1\n")
    assert str(e) == "job.toml:2: a dotted key has more than 128 parts"


def test_header_regex_is_fast_on_ordinary_brackets():
    t0 = time.monotonic()
    p('command = """\n[' + "x" * 100_000 + '\n[ -f x ]\n"""\n')
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("text", ['user = "root\\n"', 'env = { "FOO\\n" = "1" }',
                                  'env = { "CUDA_VISIBLE_DEVICES\\n" = "0" }', 'gpu_ids = ["GPU-abc\\n"]',
                                  'conda = "base\\n"'],
                         ids=["user", "env", "env-reserved", "gpu_ids", "conda"])
def test_fixed_trailing_newline_passes_validation(text):
    error(f'command = "x"\n{text}\n', root=True)


@pytest.mark.parametrize("ch", ["\\u009b", "\\u0085"], ids=["csi", "nel"])
def test_fixed_name_with_c1_control_characters(ch):
    assert "control characters" in str(error(f'command = "x"\nname = "a{ch}b"\n'))


def test_fixed_gpu_ids_imply_more_than_max_gpus():
    error('command = "x"\ngpu_ids = [' + ", ".join(map(str, range(jobfile.MAX_GPUS + 1))) + "]\n")


def test_limits_are_validated():
    assert "limits: expected a table ([limits]), got an integer" in str(error('command = "x"\nlimits = 4'))
    assert "limits.cpus: must be more than 0 and at most 4096" in str(error('command = "x"\nlimits.cpus = nan'))
    assert "limits.tasks: must be positive and below 2^63, got 0" in str(error('command = "x"\nlimits.tasks = 0'))
    assert "limits.memory: a size must be positive" in str(error('command = "x"\nlimits.memory = 0'))
    assert math.isclose(p('command = "x"\nlimits.cpus = 0.5').limits.cpus, 0.5)


# --- what a user may not ask for (issue 7) ------------------------------------------------------------------

def lim(text: str, *, root: bool = False, privileged: bool = False, **limits) -> JobSpec:
    return p(text, root=root, limits=Limits(**limits), privileged=privileged or root)


def lim_error(text: str, *, root: bool = False, privileged: bool = False, **limits) -> JobFileError:
    with pytest.raises(JobFileError) as e:
        lim(text, root=root, privileged=privileged, **limits)
    return e.value


def test_default_limits_are_the_configs():
    from gpusched.config import Config
    assert Config().job_limits() == Limits() == Limits(min_priority=100, max_grace=600.0, max_time_limit=0.0)
    cfg = Config(min_user_priority=-5, max_grace=30.0, max_time_limit=7200.0)
    assert cfg.job_limits() == Limits(min_priority=-5, max_grace=30.0, max_time_limit=7200.0)


def test_a_user_may_not_claim_urgency():
    e = lim_error('command = "x"\n\npriority = -1000000\n')
    assert str(e) == ("job.toml:3: priority: -1000000 is more urgent than this server allows (at most 100; lower is "
                      "more urgent; urgency is granted by the administrator: see min_user_priority and admin_group)")
    assert "at most 100" in str(lim_error('command = "x"\npriority = 99\n'))
    assert lim('command = "x"\npriority = 100\n').priority == 100
    assert lim('command = "x"\npriority = 5000\n').priority == 5000
    assert lim('command = "x"\n').priority == 100
    assert "at most 50" in str(lim_error('command = "x"\npriority = 49\n', min_priority=50))
    assert lim('command = "x"\npriority = 50\n', min_priority=50).priority == 50
    # without limits (a stored file read back, the old API) any priority parses
    assert p('command = "x"\npriority = -1000000\n').priority == -1000000


def test_root_and_admins_may_be_urgent():
    assert lim('command = "x"\npriority = -1000000\n', privileged=True).priority == -1000000
    assert lim('command = "x"\npriority = -1000000\n', root=True).priority == -1000000
    # the flag alone decides: owner_is_root without privileged is root's file all the same
    assert p('command = "x"\npriority = -7\n', root=True, limits=Limits()).priority == -7


def test_the_default_priority_must_fit_a_raised_floor():
    e = lim_error('command = "x"\n', min_priority=200)
    assert str(e) == ("job.toml: priority: the default 100 is more urgent than this server allows: "
                      "set priority = 200 or more (min_user_priority)")
    assert lim('command = "x"\npriority = 200\n', min_priority=200).priority == 200
    assert lim('command = "x"\n', min_priority=200, privileged=True).priority == 100


def test_priority_has_a_range():
    assert "must be between -2147483648 and 2147483647" in str(error('command = "x"\npriority = 2147483648\n'))
    assert "must be between" in str(error('command = "x"\npriority = -2147483649\n', root=True))
    assert p('command = "x"\npriority = -2147483648\n').priority == -(1 << 31)


def test_grace_is_capped_for_everyone_but_root():
    e = lim_error('command = "x"\ngrace = "36500d"\n')
    assert str(e) == "job.toml:2: grace: 36500d is more than the 10m this server allows (max_grace)"
    assert str(lim_error('command = "x"\ngrace = 601\n', privileged=True)) == \
        "job.toml:2: grace: 10m1s is more than the 10m this server allows (max_grace)"
    assert lim('command = "x"\ngrace = "10m"\n').grace == 600.0
    assert lim('command = "x"\ngrace = 0\n').grace == 0.0
    assert lim('command = "x"\ngrace = "36500d"\n', root=True).grace == 36500 * 86400.0
    assert "grace: 2m is more than the 1m30s" in str(lim_error('command = "x"\ngrace = "2m"\n', max_grace=90.0))


def test_the_default_grace_must_fit_a_lowered_cap():
    e = lim_error('command = "x"\n', max_grace=60.0)
    assert str(e) == ("job.toml: grace: the default 3m is more than the 1m this server allows (max_grace): "
                      "set grace to at most 1m")
    assert lim('command = "x"\ngrace = 30\n', max_grace=60.0).grace == 30.0
    assert lim('command = "x"\n', max_grace=60.0, root=True).grace == jobfile.DEFAULT_GRACE


def test_time_limit_is_capped_for_everyone_but_root():
    assert lim('command = "x"\ntime_limit = "100d"\n').time_limit == 100 * 86400.0      # no cap by default
    e = lim_error('command = "x"\ntime_limit = "1d1s"\n', max_time_limit=86400.0)
    assert str(e) == "job.toml:2: time_limit: 1d1s is more than the 1d this server allows (max_time_limit)"
    assert "more than the 1d" in str(lim_error('command = "x"\ntime_limit = "2d"\n', privileged=True,
                                               max_time_limit=86400.0))
    assert lim('command = "x"\ntime_limit = "1d"\n', max_time_limit=86400.0).time_limit == 86400.0
    assert lim('command = "x"\ntime_limit = "30d"\n', root=True, max_time_limit=86400.0).time_limit == 30 * 86400.0
    # no time_limit would be no limit at all: under a cap it must be given
    assert str(lim_error('command = "x"\n', max_time_limit=86400.0)) == \
        "job.toml: time_limit: required on this server: at most 1d (max_time_limit)"
    assert lim('command = "x"\n', root=True, max_time_limit=86400.0).time_limit is None


def test_limits_and_other_problems_are_reported_together():
    e = lim_error('command = "x"\npriority = -1\ngrace = "1h"\ntime_limit = "2d"\ngpus = -1\n',
                  max_time_limit=3600.0)
    assert [(pr.key, pr.line) for pr in e.problems] == [("gpus", 5), ("priority", 2), ("grace", 3),
                                                        ("time_limit", 4)]


def test_tags_are_capped_in_count_and_length():
    ok = ", ".join(f'"t{i}"' for i in range(jobfile.MAX_TAGS))
    assert len(p(f'command = "x"\ntags = [{ok}]\n').tags) == jobfile.MAX_TAGS
    e = error(f'command = "x"\ntags = [{ok}, "one-more"]\n')
    assert str(e) == "job.toml:2: tags: 33 tags; at most 32"
    assert p('command = "x"\ntags = ["' + "t" * jobfile.MAX_TAG + '"]\n').tags == ("t" * 64,)
    e = error('command = "x"\ntags = ["' + "t" * (jobfile.MAX_TAG + 1) + '"]\n')
    assert "tags: every tag must be a printable, non-empty string of at most 64 characters" in str(e)


def _unknown_keys_file() -> bytes:
    lines, size, i = ['command = "x"'], 14, 0
    while size + len(f"k{i} = 1\n") <= jobfile.MAX_BYTES:
        lines.append(f"k{i} = 1")
        size += len(lines[-1]) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


def test_a_flood_of_unknown_keys_gives_a_short_report():
    data = _unknown_keys_file()
    n = data.count(b"\n") - 1
    assert len(data) <= jobfile.MAX_BYTES and n > 74_000
    t0 = time.perf_counter()
    with pytest.raises(JobFileError) as info:
        parse(data, "flood.toml", owner_is_root=False, limits=Limits())
    print(f"\n{n} unknown keys in {len(data)} bytes: rejected in {(time.perf_counter() - t0) * 1000:.0f} ms")
    e = info.value
    assert len(e.problems) <= 21 and len(e.problems) == jobfile.MAX_PROBLEMS
    assert e.more == n - jobfile.MAX_PROBLEMS
    report = str(e)
    assert len(report.encode()) <= jobfile.MAX_REASON
    lines = report.splitlines()
    assert len(lines) <= 21
    assert lines[0] == "flood.toml:2: k0: unknown key"
    assert lines[19] == "flood.toml:21: k19: unknown key"
    assert lines[-1] == f"flood.toml: ... and {n - 20} more problems (only the first are reported)"


def test_every_kind_of_problem_is_counted_not_kept():
    e = error('command = "x"\n[env]\n' + "".join(f"V{i} = {i}\n" for i in range(1000)))
    assert len(e.problems) == 20 and e.more == 980
    assert str(e).splitlines()[0] == "job.toml:3: env.V0: expected a string, got an integer"
    assert str(e).endswith("... and 980 more problems (only the first are reported)")
    e = error('command = "x"\n[limits]\n' + "".join(f"m{i} = 1\n" for i in range(30)))
    assert e.more == 10 and str(e).splitlines()[0] == "job.toml:3: limits.m0: unknown key"
    e = error('gpu = 1\n' + "".join(f"x{i} = 1\n" for i in range(19)) + "gpus = -1\n")
    assert str(e).endswith("... and 2 more problems (only the first are reported)")     # command, gpus
    assert "(did you mean 'gpus'?)" in str(e).splitlines()[0]


def test_one_problem_is_bounded_too():
    key = "k" * 100_000
    e = error(f'command = "x"\n"{key}" = 1\n')
    line = str(e)
    assert line.startswith("job.toml:2: kkk") and len(line) < 200 and "..." in line
    assert len(e.problems[0].message) <= jobfile.MAX_MESSAGE
    e = error('command = "x"\n"\\u001b[31mred" = 1\n')
    assert "\x1b" not in str(e) and "\\x1b[31mred: unknown key" in str(e)
    e = error(f'command = "x"\nuser = "{"u" * 100_000}"\n', root=True)
    assert len(str(e)) < 200
    for key in ("gpu_type", "conda", "workdir"):
        assert len(str(error(f'command = "x"\n{key} = "/{"a" * 100_000}"\n'))) < 400, key
    assert len(str(error(f'command = "x"\ngpu_ids = ["GPU-{"a" * 100_000}"]\n'))) < 300


def test_the_whole_report_is_bounded_whatever_the_file_name():
    name = "n" * 250 + ".toml"
    e = error("".join(f"bad{i} = 1\n" for i in range(40)), name)
    report = str(e)
    assert len(report.encode()) <= jobfile.MAX_REASON
    assert report.splitlines()[0].startswith(name + ":1: bad0: unknown key")
    assert report.endswith("more problems (only the first are reported)")
    assert e.more + len(e.problems) == 41               # and the missing command


@pytest.mark.parametrize("key,value,why", [
    ("gpu_memory", '"1' + " " * 100_000 + 'x"', "too long for a size: 100002 characters (at most 64)"),
    ("time_limit", '"' + "1m" * 100_000 + '!"', "too long for a duration"),
    ("grace", '"1' + " " * 200 + 's"', "too long for a duration"),
    ("limits.memory", '"1' + " " * 100_000 + 'x"', "too long for a size"),
    ("stop_signal", '"' + "T" * 100_000 + '"', "too long for a signal"),
], ids=["size-blanks", "duration-parts", "grace", "limits.memory", "signal"])
def test_unit_strings_are_capped_before_their_regexes(key, value, why):
    """units.py's size regex takes minutes on '1', 500,000 blanks, 'x' (two adjacent \\s*): never reached."""
    t0 = time.monotonic()
    assert why in str(error(f'command = "x"\n{key} = {value}\n'))
    assert time.monotonic() - t0 < 5


def test_key_lines_stops_when_it_has_what_it_wants():
    text = "a = 1\nb = 2\n" + "x = 1\n" * 200_000 + "[t]\nc = 3\n"
    full = key_lines(text)
    assert full["t.c"] == 200_004
    assert key_lines(text, {"a", "b"}) == {"a": 1, "b": 2}
    assert key_lines(text, {"a", "t.c"})["t.c"] == 200_004
    assert key_lines(text, {"nowhere"}) == full


@pytest.mark.parametrize("workdir", ["~", "~/", "~/runs/x", "/data/run1", "/", "/tmp/a b", "/data/../x"])
def test_workdir_forms_that_are_kept(workdir):
    assert p(f'command = "x"\nworkdir = "{workdir}"\n').workdir == workdir


@pytest.mark.parametrize("workdir,why", [
    ("~bob", "'~bob': only '~' and '~/...' (the home of the user the job runs as) are expanded, never '~bob'; "
             "write an absolute path instead"),
    ("~bob/data", "never '~bob'"),
    ("~root/", "never '~root'"),
    ("data/run1", "must be an absolute path or start with ~/ (the job user's home), got 'data/run1'"),
    ("", "must be an absolute path"),
    ("./x", "must be an absolute path"),
    ("/tmp/\\u001b[2J", "can't contain control characters"),
    ("/tmp/a\\nb", "can't contain control characters"),
    ("/tmp/a\\u0000b", "contains a NUL character"),
    ("/" + "d" * 4095, "longer than 4095 bytes"),
], ids=["tilde-user", "tilde-user-path", "tilde-root", "relative", "empty", "dot", "escape", "newline", "nul",
        "too-long"])
def test_workdir_forms_that_are_refused(workdir, why):
    e = error(f'command = "x"\nworkdir = "{workdir}"\n')
    assert str(e).startswith("job.toml:2: workdir: ") and why in str(e), str(e)


def test_values_kept_with_a_job_are_bounded():
    assert "at most 128 characters" in str(error(f'command = "x"\ngpu_type = "{"A" * 129}"\n'))
    assert p(f'command = "x"\ngpu_type = "{"A" * 128}"\n').gpu_type == "A" * 128
    env = "".join(f"V{i} = \"1\"\n" for i in range(jobfile.MAX_ENV))
    assert len(p(f'command = "x"\n[env]\n{env}').env) == jobfile.MAX_ENV
    assert "sets 1025 variables; at most 1024" in str(error(f'command = "x"\n[env]\n{env}W = "1"\n'))


def test_only_root_or_admins_may_make_a_job_non_preemptible():
    from gpusched.jobfile import Limits
    text = b'command = "true"\npreemptible = false\n'
    with pytest.raises(JobFileError, match="preemptible: false: only root or a member of admin_group"):
        parse(text, "job.toml", owner_is_root=False, limits=Limits())
    assert parse(text, "job.toml", owner_is_root=False, limits=Limits(), privileged=True).preemptible is False
    assert parse(text, "job.toml", owner_is_root=False).preemptible is False          # no limits: as read back
    assert parse(b'command = "true"\npreemptible = true\n', "job.toml", owner_is_root=False,
                 limits=Limits()).preemptible is True


# --- class, resumable, share (issue 8) ----------------------------------------------------------------------

CLASSY = Limits(classes={"debug": 7200.0, "normal": 0.0, "low": 0.0}, default_class="normal",
                allowed_classes=frozenset({"normal", "low"}))


def test_resumable_and_share_are_booleans():
    s = p('command = "x"\nresumable = true\nshare = true\ngpu_memory = "4G"\n')
    assert (s.resumable, s.share, s.job_class) == (True, True, None)
    assert s.to_dict()["resumable"] is True and s.to_dict()["share"] is True
    e = error('command = "x"\nresumable = "yes"\n')
    assert "resumable: expected true or false, got a string" in str(e)


def test_share_needs_gpu_memory_and_gpus():
    assert "share: true needs gpu_memory" in str(error('command = "x"\nshare = true\n'))
    assert "share: is set but the job asks for gpus = 0" in str(error('command = "x"\ngpus = 0\nshare = true\n'))
    assert not p('command = "x"\nshare = false\n').share


def test_class_a_user_was_granted():
    s = p('command = "x"\nclass = "low"\n', limits=CLASSY)
    assert s.job_class == "low" and s.to_dict()["class"] == "low"


def test_class_not_granted_is_refused_for_users_but_not_admins_or_root():
    text = b'command = "x"\nclass = "debug"\n'
    with pytest.raises(JobFileError, match="class: 'debug' is not granted to you"):
        parse(text, "j.toml", owner_is_root=False, limits=CLASSY)
    assert parse(text, "j.toml", owner_is_root=False, limits=CLASSY, privileged=True).job_class == "debug"
    assert parse(text, "j.toml", owner_is_root=True, limits=CLASSY).job_class == "debug"


def test_unknown_class_is_refused_for_everyone_with_a_hint():
    with pytest.raises(JobFileError) as e:
        parse(b'command = "x"\n\nclass = "lo"\n', "j.toml", owner_is_root=True, limits=CLASSY)
    assert "j.toml:3: class: 'lo': no such class on this server (did you mean 'low'?); it has: debug, low, normal" \
        in str(e.value)


def test_class_on_a_server_without_classes():
    with pytest.raises(JobFileError, match="this server defines no job classes"):
        parse(b'command = "x"\nclass = "debug"\n', "j.toml", owner_is_root=False, limits=Limits())
    # a stored file is read back without limits: the class it was accepted with stays
    assert p('command = "x"\nclass = "debug"\n').job_class == "debug"


def test_class_time_limit_cap():
    text = b'command = "x"\nclass = "debug"\ntime_limit = "3h"\n'
    with pytest.raises(JobFileError, match="time_limit: 3h is more than the 2h class 'debug' allows"):
        parse(text, "j.toml", owner_is_root=False, limits=CLASSY, privileged=True)
    parse(b'command = "x"\nclass = "debug"\ntime_limit = "1h"\n', "j.toml", owner_is_root=False, limits=CLASSY,
          privileged=True)


def test_default_class_cap_applies_to_a_file_that_names_no_class():
    lim = Limits(classes={"normal": 3600.0}, default_class="normal", allowed_classes=frozenset({"normal"}))
    with pytest.raises(JobFileError, match="class 'normal' allows"):
        parse(b'command = "x"\ntime_limit = "2h"\n', "j.toml", owner_is_root=False, limits=lim)


@pytest.mark.parametrize("value", ['""', '"has space"', '"a/b"', "3", '"' + "c" * 65 + '"'])
def test_bad_class_names(value):
    e = error(f'command = "x"\nclass = {value}\n')
    assert "class:" in str(e)


RICH = '''
command = ["python3", "train.py", "--lr", "3e-4"]
name = "train-big"
workdir = "/tmp"
env = { A = "1", B = "two words" }
tags = ["exp", "lr"]
gpus = 2
gpu_memory = "20G"
gpu_type = "A100"
priority = 50
time_limit = "2h30m"
grace = "45s"
stop_signal = "SIGINT"
preemptible = false
resumable = true
after = [3, "prep"]
retries = 2
retry_on = [1, 137]
warn_signal = "SIGUSR1"
warn_before = "2m"
on_finish = "echo done"
notify = "mail"
hold = true
[limits]
memory = "8G"
cpus = 2.5
tasks = 100
'''


@pytest.mark.parametrize("text", [
    RICH,
    'command = "echo {lr} {seed}"\ngpus = 0\n[sweep]\nmax_parallel = 2\nlr = [0.1, 0.01]\nseed = [1, 2, 3]\n',
    'command = "true"\ngrace = 1.5\ngpu_memory = 1000\nshare = true\n[limits]\nmemory = 123456789\n',
    'command = "true"\n',
])
def test_a_spec_becomes_its_job_file_again(text):
    # Clone (the dashboard) and resubmission: the file written from a job's spec is the same job, in the
    # units a person writes
    import tomli_w
    spec = p(text)
    doc = jobfile.file_doc(spec.to_dict())
    assert p(tomli_w.dumps(doc)) == spec
    assert "user" not in doc and "attach" not in doc


def test_the_file_of_a_spec_reads_as_a_person_writes_it():
    doc = jobfile.file_doc(p(RICH).to_dict())
    assert (doc["gpu_memory"], doc["limits"]["memory"], doc["time_limit"], doc["grace"]) == ("20G", "8G", "2h30m",
                                                                                          "45s")
    assert (doc["stop_signal"], doc["warn_signal"]) == ("SIGINT", "SIGUSR1")
    plain = jobfile.file_doc(p('command = "true"\n').to_dict())
    assert plain == {"command": "true", "name": "job", "gpus": 1}, plain
