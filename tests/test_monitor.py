"""monitor.run() for real, in a child process of the test (it forks, sets signal handlers and drops to the
job's user): what the job inherits, what reaches the log and the journal, what is left when it ends.
Journald is replaced by a file; the scope by whatever cgroup this machine lets the monitor make."""

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = r"""
import json, os, resource, sys
from gpusched import journal, monitor
spec = json.loads(sys.argv[1])
sent = open(sys.argv[2], "w")
journal.send = lambda message, priority=6, **fields: sent.write(repr(message) + "\n") or True
leak = os.open("/dev/null", os.O_RDONLY)      # an fd the daemon would have leaked, without CLOEXEC
os.set_inheritable(leak, True)
before = resource.getrusage(resource.RUSAGE_SELF)
result = monitor.run(spec)
after = resource.getrusage(resource.RUSAGE_SELF)
result["monitor_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps(result))
"""


def account():
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.getuid())
    else:
        pw = pwd.getpwnam("nobody")
    return pw.pw_name, pw.pw_uid, pw.pw_gid


def run_job(tmp_path, command, **extra):
    user, uid, gid = account()
    unit = f"gsmontest-{uuid.uuid4().hex[:8]}.scope"
    spec = {"id": 7, "attempt": 1, "name": "t", "unit": unit, "user": user, "uid": uid, "gid": gid,
            "workdir": "/", "argv": [sys.executable, "-c", command],
            "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, "log": str(tmp_path / "7.log"),
            "result": str(tmp_path / "7.result"), "stop_signal": 15, "ident": "job-7", **extra}
    p = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec), str(tmp_path / "journal")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    _remove_v1_freezer(unit)
    result = json.loads(p.stdout.splitlines()[-1])
    assert json.loads((tmp_path / "7.result").read_text())["ended"] == result["ended"]
    with open(spec["log"], "rb") as f:
        log = f.read()
    journal = [eval(line) for line in (tmp_path / "journal").read_text().splitlines()]
    return result, log, journal


def _remove_v1_freezer(unit):
    from gpusched import jobcgroup
    for m, fstype, opts in jobcgroup._mounts():
        if fstype == "cgroup" and "freezer" in opts.split(","):
            for d in (os.path.join(m, jobcgroup.V1_FREEZER_PARENT, unit), os.path.join(m, jobcgroup.V1_FREEZER_PARENT)):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def test_the_job_has_exactly_fds_0_1_2(tmp_path):
    result, log, _ = run_job(tmp_path, "import os; print(sorted(os.listdir('/proc/self/fd'), key=int))")
    assert result["exit_code"] == 0
    assert log.startswith(b"['0', '1', '2', '3']\n"), log      # 3: the listing's own


def test_output_reaches_the_log_as_is_and_the_journal_by_line(tmp_path):
    result, log, journal = run_job(tmp_path, "import sys, os; print('a'); sys.stdout.flush(); "
                                   "os.write(1, b'b\\r\\nc 10%\\rc 20%\\r'); os.write(2, b'tail')")
    assert log == b"a\nb\r\nc 10%\rc 20%\rtail\ngpusched: job 7 exited with code 0\n"
    job_lines = [line for line in journal if isinstance(line, bytes)]     # the monitor's own are str
    assert job_lines[0] == b"a" and job_lines[1] == b"b" and job_lines[-1] == b"tail"
    assert set(job_lines[2:-1]) <= {b"c 10%", b"c 20%"} and b"c 20%" in job_lines


def test_32_mib_of_carriage_returns_costs_the_monitor_little(tmp_path):
    result, log, journal = run_job(
        tmp_path, "import os\nbar = b'x' * 99 + b'\\r'\nfor _ in range(32 * 1024 * 1024 // len(bar) // 64):\n"
                  "    os.write(1, bar * 64)\n")
    assert result["exit_code"] == 0
    assert len(log) >= 32 * 1024 * 1024 - 8192
    assert result["monitor_cpu"] < 2.0, result
    assert b"x" * 99 in journal


def test_the_log_is_capped(tmp_path):
    result, log, journal = run_job(tmp_path, "for i in range(20000): print(f'line {i:06d}', 'x' * 40)",
                                   max_log_size=64 << 10)
    assert result["exit_code"] == 0
    assert len(log) <= (64 << 10) + 300
    lines = log.splitlines()
    assert lines[0].startswith(b"line 000000 ")
    assert lines[-2].startswith(b"line 019999 ") and lines[-1] == b"gpusched: job 7 exited with code 0"
    assert any(b"bytes of output dropped here" in line for line in lines)
    assert sum(1 for line in journal if isinstance(line, bytes) and line.startswith(b"line ")) == 20000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the monitor makes the job's cgroup")
def test_nothing_of_the_job_outlives_it(tmp_path):
    token = uuid.uuid4().hex
    runner = (f"import os, time\\n# {token}\\nwhile True:\\n    time.sleep(0.001)\\n    if os.fork():\\n"
              f"        os._exit(0)\\n")
    result, log, _ = run_job(tmp_path, f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', "
                                       f"'{runner}'], start_new_session=True)\ntime.sleep(0.2)\n")
    assert result["exit_code"] == 0
    assert "leftovers" not in result, result
    assert b"gpusched: killed " in log
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    alive.append(pid)
        except OSError:
            pass
    assert alive == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the log is given to root, the job runs as nobody")
def test_the_log_is_roots_and_the_job_can_only_read_it(tmp_path):
    from gpusched import acl
    d = tempfile.mkdtemp(prefix="gsmonlog-", dir="/var/tmp")    # tmp_path is root's 0700: nobody can't enter
    try:
        os.chmod(d, 0o755)
        if not acl.supported(d):
            pytest.skip(f"{d}: no POSIX ACLs on this filesystem")
        log_path = os.path.join(d, "7.log")
        job = (f"import os\nopen({log_path!r}).read()\nprint('read')\n"
               f"for how in ('ab', 'r+b'):\n"
               f"    try:\n        open({log_path!r}, how)\n        print(how, 'opened')\n"
               f"    except OSError as e:\n        print(how, e.strerror)\n"
               f"try:\n    os.chmod({log_path!r}, 0o666)\nexcept OSError as e:\n    print('chmod', e.strerror)\n")
        result, log, _ = run_job(tmp_path, job, log=log_path)
        assert result["exit_code"] == 0
        assert log.startswith(b"read\nab Permission denied\nr+b Permission denied\n"
                              b"chmod Operation not permitted\n"), log
        st = os.lstat(log_path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640)   # 4: the ACL's mask
        assert acl.decode(os.getxattr(log_path, acl.XATTR)) == acl.decode(acl.read_only_for(account()[1], 6))
    finally:
        shutil.rmtree(d)


def test_a_job_that_cannot_start_is_recorded(tmp_path):
    user, uid, gid = account()
    result, log, _ = run_job(tmp_path, "print('never')", workdir="/nonexistent/dir")
    assert result["exit_code"] == 127
    assert "cannot enter workdir /nonexistent/dir" in result["error"]
