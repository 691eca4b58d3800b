"""What a job can reach and what it can leave behind (issue 7, items 1, 5, 8 and 12): real jobs of alice and bob
against the real service. A job starts with exactly fds 0, 1 and 2, so no spool event reaches it; output without
newlines costs the root monitor little; the log is capped; nothing of a job outlives it."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

CONFIG = "/etc/gpusched/gpusched.toml"


def job(command: str) -> str:
    return f"gpus = 0\ncommand = {json.dumps(command)}\n"          # a JSON string is a TOML basic string


def python_job(code: str, env: dict[str, str] | None = None) -> str:
    """A job that runs `code` with python3, passed whole, whatever quotes it holds."""
    b64 = base64.b64encode(code.encode()).decode()
    text = f'gpus = 0\ncommand = ["python3", "-c", "import base64; exec(base64.b64decode(\'{b64}\'))"]\n'
    return text + "".join(f"[env]\n{k} = {json.dumps(v)}\n" for k, v in (env or {}).items())


def wait_log(gs, st: dict, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = gs.sh(f"cat {st['log']}", check=False).stdout
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never reached the log: {log[-2000:]}")


LIST_FDS = """
import os
fds = sorted(os.listdir('/proc/self/fd'), key=int)
print('FDS', ' '.join(fds))
for fd in fds:
    try:
        print('LINK', fd, os.readlink(f'/proc/self/fd/{fd}'))
    except OSError as e:
        print('LINK', fd, 'gone', e.errno)
"""


def test_a_job_starts_with_exactly_fds_0_1_2(gs):
    n = gs.submit("alice", python_job(LIST_FDS))
    st = gs.wait(n, {"succeeded", "failed"})
    assert st["state"] == "succeeded", st
    log = gs.sh(f"cat {st['log']}").stdout
    assert re.search(r"^FDS 0 1 2 3$", log, re.M), log           # 3: the listing's own, closed when listed
    links = dict(re.findall(r"^LINK (\d+) (.*)$", log, re.M))
    assert links["0"] == "/dev/null"
    assert links["1"].startswith("pipe:[") and links["1"] == links["2"]
    assert links["3"].startswith("gone"), links                   # the listing's fd is closed by then
    for target in links.values():
        assert "inotify" not in target and "nvidia" not in target and not target.startswith("socket:")
    # and the zygote, from which every monitor is forked, holds only stdin, stdout, stderr and its socket
    zygote = gs.sh("pgrep -f 'gpusched.zygote'", check=False).stdout.split()
    assert len(zygote) == 1, zygote
    fds = gs.sh(f"ls /proc/{zygote[0]}/fd").stdout.split()
    assert sorted(map(int, fds)) == [0, 1, 2, 3], fds
    assert gs.sh(f"readlink /proc/{zygote[0]}/fd/3").stdout.startswith("socket:")


SPY = """
import ctypes, os, select, sys, time
token = os.environ['TOKEN']
inherited = []
for fd in os.listdir('/proc/self/fd'):
    try:
        if 'inotify' in os.readlink(f'/proc/self/fd/{fd}'):
            inherited.append(fd)
    except OSError:
        pass
print('INHERITED', inherited, flush=True)
libc = ctypes.CDLL(None, use_errno=True)
ifd = libc.inotify_init1(os.O_NONBLOCK)
wd = libc.inotify_add_watch(ifd, b'/var/spool/gpusched', 0x100 | 0x80 | 0x8)     # CREATE, MOVED_TO, CLOSE_WRITE
print('OWN WATCH', wd, ctypes.get_errno(), flush=True)
print('READY', flush=True)
fds = [int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2]
seen = b''
deadline = time.time() + 5
while time.time() < deadline and token.encode() not in seen:
    for fd in fds + ([ifd] if wd >= 0 else []):
        try:
            r, _, _ = select.select([fd], [], [], 0)
            if r:
                seen += os.read(fd, 65536)
        except OSError:
            pass
    time.sleep(0.05)
print('SAW' if token.encode() in seen else 'NOTHING', flush=True)
"""


def test_a_job_sees_no_spool_event(gs):
    token = f"bob-secret-{uuid.uuid4().hex[:8]}"
    n = gs.submit("alice", python_job(SPY, {"TOKEN": token}))
    st = gs.wait(n, {"running", "succeeded", "failed"})
    log = wait_log(gs, st, "READY")
    assert "INHERITED []" in log, log
    # its own watch on the spool is refused: the spool (1733) can't be read by users
    assert re.search(r"^OWN WATCH -1 13$", log, re.M), log
    gs.drop("bob", job("true"), name=f"{token}.toml")
    st = gs.wait(n, {"succeeded", "failed"})
    log = gs.sh(f"cat {st['log']}").stdout
    assert "NOTHING" in log and "SAW" not in log, log
    # the daemon still sees bob's file at once: nobody took its watch away
    bobs = gs.job_by_source("bob", f"{token}.toml", timeout=5)
    gs.wait(bobs["id"], "succeeded")


PROGRESS = """
import os
monitor = os.getppid()
bar = b' 45%|####      | 450/1000 [00:01<00:02, 400.00it/s]' + b' ' * 46 + b'\\r'
chunk = bar * 64
for _ in range(32 * 1024 * 1024 // len(chunk) + 1):
    os.write(1, chunk)
os.write(1, b'100%|##########| 1000/1000 done\\r')
# the monitor has read all but a pipe's worth by now; its CPU time so far, in clock ticks
with open(f'/proc/{monitor}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
print()
print('MONITOR', monitor, int(fields[11]) + int(fields[12]), os.sysconf('SC_CLK_TCK'))
"""


def test_32_mib_of_progress_bars_cost_the_monitor_little(gs):
    # the old monitor did buf += data; buf.split(b"\\n"): 32 MiB without a newline took it seconds of CPU
    n = gs.submit("alice", python_job(PROGRESS))
    st = gs.wait(n, {"succeeded", "failed"}, timeout=60)
    assert st["state"] == "succeeded", st
    tail = gs.sh(f"tail -c 300 {st['log']}").stdout
    m = re.search(r"MONITOR (\d+) (\d+) (\d+)", tail)
    assert m, tail
    assert int(m.group(2)) / int(m.group(3)) < 2.0, f"the monitor used {m.group(2)} ticks for 32 MiB"
    assert int(gs.sh(f"stat -c %s {st['log']}").stdout) >= 32 * 1024 * 1024
    progress = gs.journal(f"GPUSCHED_JOB_ID={n}", "--grep", "it/s")
    assert " 45%|####      | 450/1000" in progress
    assert "100%|##########| 1000/1000 done" in gs.journal(f"GPUSCHED_JOB_ID={n}")


def test_the_log_is_capped_head_and_tail_kept(gs):
    original = gs.sh(f"cat {CONFIG}", check=False).stdout
    try:
        b64 = base64.b64encode(('max_log_size = "1M"\n' + original).encode()).decode()
        gs.sh(f"echo {b64} | base64 -d > {CONFIG} && systemctl restart gpusched")
        n = gs.submit("alice", job("for i in $(seq -w 1 100000); do echo \"line $i of a long job's output\"; "
                                   "done; echo last line"))
        st = gs.wait(n, {"succeeded", "failed"}, timeout=60)
        assert st["state"] == "succeeded", st
        size = int(gs.sh(f"stat -c %s {st['log']}").stdout)
        assert size <= (1 << 20) + 300, size                  # 3.3 MB of output
        lines = gs.sh(f"cat {st['log']}").stdout.splitlines()
        assert lines[0] == "line 000001 of a long job's output"
        assert lines[-2:] == ["last line", f"gpusched: job {n} exited with code 0"]
        dropped = [line for line in lines if "bytes of output dropped here" in line]
        assert len(dropped) == 1, dropped
        m = re.fullmatch(r"gpusched: (\d+) bytes of output dropped here \(max_log_size 1M keeps the first 512K "
                         r"and the last 512K\)", dropped[0])
        assert m and int(m.group(1)) > 2_000_000, dropped
        assert "the log reached max_log_size (1M)" in gs.journal(f"GPUSCHED_JOB_ID={n}")
    finally:
        b64 = base64.b64encode(original.encode()).decode()
        gs.sh(f"echo {b64} | base64 -d > {CONFIG} && systemctl restart gpusched")


FORK_RUNNER = """
import os, subprocess, sys, time
# forks and exits in a loop, so its pid never stays the same; eight of them, each in a session of its own
runner = "import os\\nwhile True:\\n    if os.fork():\\n        os._exit(0)\\n"
for _ in range(8):
    subprocess.Popen([sys.executable, '-c', runner], start_new_session=True, stdout=subprocess.DEVNULL)
time.sleep(0.5)
print('leaving', flush=True)
"""


def test_nothing_of_a_job_outlives_it(gs):
    # a background process that forks and exits in a loop keeps changing its pid: a kill sweep of the pids
    # listed can miss it, the job's cgroup can't
    n = gs.submit("alice", python_job(FORK_RUNNER))
    st = gs.wait(n, {"succeeded", "failed"}, timeout=30)
    assert st["state"] == "succeeded", st
    left = gs.sh("pgrep -u alice -a", check=False).stdout
    assert left == "", f"alice still has processes after her job ended: {left}"
    log = gs.sh(f"cat {st['log']}").stdout
    assert re.search(r"^gpusched: killed \d+ process\(es\) the job left behind$", log, re.M), log
    result = json.loads(gs.sh(f"cat {gs.state}/results/{n}.1.*.json").stdout)
    assert result["exit_code"] == 0 and "leftovers" not in result, result
    # the monitor itself left the scope empty: the daemon never had to kill anything after it
    assert "remain in" not in gs.journal(f"GPUSCHED_JOB_ID={n}", "--grep", "process")
