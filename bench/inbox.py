"""Measurements run inside the systemd box (bench/run starts them). Each prints one JSON object."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

SPOOL = "/var/spool/gpusched"
STATE = "/var/lib/gpusched"
OUT = "/var/tmp/gpusched-bench"
CONFIG = "/etc/gpusched/gpusched.toml"
SIM = '[[gpus.simulated]]\nname = "Simulated A100 80GB"\nmemory = "80G"\n\n' * 4


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def api():
    from pydbus import SystemBus
    return SystemBus().get("org.gpusched1", "/org/gpusched1")


def stats() -> dict:
    try:
        return json.loads(api().Stats())["ok"]
    except Exception:
        # the daemon did not answer: show why before failing
        print(sh("journalctl -u gpusched --no-pager -n 30 -o short-monotonic | grep -v 'accepted job'"),
              file=sys.stderr)
        raise


def fresh(config: str = "") -> None:
    """A clean service: empty state and spool, the given config."""
    sh("systemctl stop gpusched")
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(SPOOL, ignore_errors=True)
    with open(CONFIG, "w") as f:
        f.write(config + SIM)
    sh("systemctl start gpusched")
    for _ in range(100):
        try:
            stats()
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.05)


def wait_file(path: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    raise TimeoutError(path)


def drop(name: str, text: str) -> None:
    tmp = os.path.join(SPOOL, "." + name)
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(SPOOL, name))


def latency(n: int) -> dict:
    fresh()
    os.makedirs(OUT, exist_ok=True)
    ours, raw = [], []
    for i in range(n):
        path = f"{OUT}/lat-{i}"
        t0 = time.time()
        drop(f"lat-{i}.toml", f'command = "echo $EPOCHREALTIME > {path}"\ngpus = 0\n')
        ours.append(float(wait_file(path)) - t0)
        time.sleep(0.05)                        # idle queue between samples
        rpath = f"{OUT}/raw-{i}"
        t0 = time.time()
        subprocess.run(["systemd-run", "--scope", "--quiet", "/bin/bash", "-c", f"echo $EPOCHREALTIME > {rpath}"],
                       check=True)
        raw.append(float(wait_file(rpath)) - t0)
        time.sleep(0.05)

    def q(xs: list[float]) -> dict:
        xs = sorted(xs)
        return {"median_ms": statistics.median(xs) * 1e3, "p95_ms": xs[int(len(xs) * 0.95) - 1] * 1e3}
    return {"gpusched": q(ours), "raw": q(raw), "n": n}


def throughput(n: int) -> dict:
    fresh("max_running = 2\n")
    t0 = time.monotonic()
    for i in range(n):
        drop(f"tp-{i}.toml", 'command = ["true"]\ngpus = 0\n')
    while True:
        s = stats()
        if s["jobs"] >= n and s["live"] == 0:
            break
        time.sleep(0.02)
    ours = time.monotonic() - t0
    states = {}
    for name in os.listdir(f"{STATE}/status"):
        with open(f"{STATE}/status/{name}") as f:
            for line in f:
                if line.startswith("state = "):
                    states[line] = states.get(line, 0) + 1
    t0 = time.monotonic()
    subprocess.run(f"seq {n} | xargs -P2 -I{{}} systemd-run --scope --quiet true", shell=True, check=True)
    raw = time.monotonic() - t0
    return {"n": n, "gpusched_jobs_per_s": n / ours, "raw_jobs_per_s": n / raw,
            "states": {k.split('"')[1]: v for k, v in states.items()}}


def scale(n: int) -> dict:
    fresh()
    body = 'command = "true"\ngpus = 8\n'           # more GPUs than the box has: stays queued
    t0 = time.monotonic()
    for i in range(n):
        drop(f"sc-{i}.toml", body)
    written = time.monotonic() - t0
    while stats()["jobs"] < n:
        time.sleep(0.1)
    ingest = time.monotonic() - t0
    time.sleep(1)
    # one steady-state pass over the whole queue: a CPU job arrives, starts, ends
    passes = stats()["passes"]
    drop("probe.toml", 'command = "true"\ngpus = 0\n')
    while stats()["passes"] < passes + 2 or stats()["live"] > n:
        time.sleep(0.05)
    s = stats()
    # the listing files are current (rendered after the last change) and gpuschedctl reads them, not the bus
    check = subprocess.run("gpuschedctl --debug list > /dev/null", shell=True, capture_output=True, text=True)
    assert check.returncode == 0 and "listing files not used" not in check.stderr, check.stderr
    ctl = {}
    for args in ("list", "list --json"):
        best = None
        for _ in range(3):
            t = time.monotonic()
            subprocess.run(f"gpuschedctl {args} > /dev/null", shell=True, check=True)
            d = time.monotonic() - t
            best = d if best is None else min(best, d)
        ctl[args] = best * 1e3
    # over the bus, rendered on demand (the daemon caches only a few MB of entries): once, it is slow
    t = time.monotonic()
    subprocess.run("gpuschedctl list --all > /dev/null", shell=True, check=True)
    ctl["list --all"] = (time.monotonic() - t) * 1e3
    after = stats()
    return {"n": n, "ingest_files_per_s": n / ingest, "write_s": written, "rss_mb": s["rss_bytes"] / 2**20,
            "rss_after_lists_mb": after["rss_bytes"] / 2**20,
            "pass_ms": s["last_pass_seconds"] * 1e3, "policy_ms": s["last_policy_seconds"] * 1e3,
            "list_ms": ctl["list"], "list_json_ms": ctl["list --json"], "list_all_ms": ctl["list --all"],
            "render_ms": s.get("last_listing_seconds", 0) * 1e3, "render_max_ms": s.get("max_listing_seconds", 0) * 1e3}


def restart(n: int) -> dict:
    """With n jobs queued and 50 running: how long `systemctl restart gpusched` takes to READY=1 (stop, which
    writes the records' snapshot, then start to READY=1; systemctl start of a Type=notify unit returns at
    READY=1), and the same after a SIGKILL (a stale snapshot). Every job must be there afterwards."""
    fresh()
    for i in range(50):
        drop(f"run-{i}.toml", 'command = "sleep 3600"\ngpus = 0\n')
    body = 'command = "true"\ngpus = 8\n'           # more GPUs than the box has: stays queued
    for i in range(n):
        drop(f"rs-{i}.toml", body)
    while stats()["jobs"] < n + 50:
        time.sleep(0.2)

    def running() -> int:
        return int(sh("systemctl list-units --plain --no-legend 'gpusched-job-*.scope' | grep -c running || true"))
    while running() < 50:
        time.sleep(0.2)
    out = {"n": n, "running": 50}
    for how in ("clean", "sigkill"):
        t0 = time.monotonic()
        if how == "clean":
            sh("systemctl stop gpusched")
        else:
            sh("systemctl kill -s KILL gpusched; while systemctl is-active -q gpusched; do sleep 0.05; done")
        t1 = time.monotonic()
        sh("systemctl start gpusched")
        t2 = time.monotonic()
        s = stats()
        assert s["jobs"] == n + 50, (how, s["jobs"])
        assert running() == 50, (how, running())
        out[how] = {"stop_s": t1 - t0, "start_to_ready_s": t2 - t1, "total_s": t2 - t0}
    sh("systemctl stop gpusched; systemctl stop 'gpusched-job-*.scope' || true")
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle(seconds: int) -> dict:
    fresh()
    pid = int(sh("systemctl show -p MainPID --value gpusched"))
    time.sleep(2)
    c0 = _cpu_seconds(pid)
    time.sleep(seconds)
    empty = _cpu_seconds(pid) - c0
    for i in range(4):
        drop(f"idle-{i}.toml", f'command = "sleep {seconds + 30}"\ngpus = 1\n')
    while sum(1 for _ in range(1) if "4 running" in stats()["status"]) == 0:
        time.sleep(0.1)
    time.sleep(2)
    c0 = _cpu_seconds(pid)
    time.sleep(seconds)
    busy = _cpu_seconds(pid) - c0
    return {"seconds": seconds, "idle_cpu_s": empty, "four_running_cpu_s": busy}



WEB_CONFIG = "/etc/gpusched/bench-web.toml"   # the dashboard's config in the bench's box: its port (bench/run)
AS_ALICE = ["setpriv", "--reuid=alice", "--regid=alice", "--init-groups", "--reset-env", "--", "/usr/bin/env",
            "HOME=/home/alice", "USER=alice", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]


def _process_cpu(pid: int) -> float:
    """CPU seconds of a whole process, every thread (ended ones too), to the nanosecond: its CPU-time clock,
    the id clock_getcpuclockid(3) gives, which Python does not wrap (Linux: ~pid << 3 | CPUCLOCK_SCHED)."""
    return time.clock_gettime(((~pid) << 3) | 2)


def _main_pid(unit: str) -> int:
    return int(sh(f"systemctl show -p MainPID --value {unit}"))


def _method_calls(path: str, t0: float, t1: float) -> int:
    """Method calls to org.gpusched1 that dbus-monitor --profile saw between t0 and t1 (wall clock)."""
    n = 0
    with open(path) as f:
        for line in f:
            fields = line.split("\t")
            if fields[0] == "mc" and len(fields) > 1 and t0 <= float(fields[1]) < t1:
                n += 1
    return n


def web_idle(seconds: int) -> dict:
    """What the dashboard costs the daemon when nobody does anything: the daemon's CPU time and the bus calls it
    served over `seconds`, with gpusched-web stopped (the limit), running with nobody connected, with a real
    Chromium of alice's sitting on the queue page, then on the GPUs page, then on the page of a running job
    that prints nothing (its live log is followed: a call every LOG_POLL doubling to LOG_POLL_MAX while quiet,
    by design), then nobody connected again after the browser quit (no follower left behind), then stopped
    again (the limit's noise). One quiet job of alice's runs through every phase, so that only the dashboard
    differs between them."""
    import tomllib
    from gpusched.web.server import LOG_POLL, LOG_POLL_MAX
    with open(WEB_CONFIG, "rb") as f:
        port = tomllib.load(f)["web"]["port"]
    assert port != 8765, "the bench's dashboard must not take the default port (other boxes share the network)"
    url = f"http://localhost:{port}"
    fresh()
    sh("id alice >/dev/null 2>&1 || useradd -m -s /bin/bash alice")
    with open("/home/alice/quiet.toml", "w") as f:
        f.write('command = "sleep 100000"\ngpus = 0\nname = "quiet"\n')
    os.chown("/home/alice/quiet.toml", *(int(sh(f"id -{w} alice")) for w in "ug"))
    job = int(subprocess.run(AS_ALICE + ["sh", "-c", "cd /home/alice && gpuschedctl submit quiet.toml"],
                             check=True, capture_output=True, text=True).stdout.strip())
    while sh(f"systemctl is-active gpusched-job-{job}.scope || true").strip() != "active":
        time.sleep(0.1)
    log = f"{OUT}/web-idle-calls"
    os.makedirs(OUT, exist_ok=True)
    monitor = subprocess.Popen(["stdbuf", "-oL", "dbus-monitor", "--system", "--profile",
                                "type='method_call',destination='org.gpusched1'"],
                               stdout=open(log, "w"), stderr=subprocess.DEVNULL)
    browser = None
    phases: list[dict] = []

    def window(what: str, limit: bool = False) -> None:
        time.sleep(2)                    # what starting this phase set off is over
        daemon, web = _main_pid("gpusched"), _main_pid("gpusched-web")
        t0, c0, w0 = time.time(), _process_cpu(daemon), _process_cpu(web) if web else 0.0
        time.sleep(seconds)
        c1, w1, t1 = _process_cpu(daemon), _process_cpu(web) if web else 0.0, time.time()
        phases.append({"what": what, "limit": limit, "t0": t0, "t1": t1, "daemon_cpu_s": c1 - c0,
                       "web_cpu_s": (w1 - w0) if web else None})

    def web_up() -> None:
        sh("systemctl start gpusched-web")
        for _ in range(100):             # a bare TCP connect: no request, so no bus call
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"gpusched-web does not listen on {port}: " + sh("journalctl -u gpusched-web -n 20"))

    def show(path: str) -> None:
        browser.stdin.write(f"{url}{path}\n")
        browser.stdin.flush()
        line = browser.stdout.readline()
        if not line:
            raise RuntimeError(f"the browser ended: {open(f'{OUT}/web-idle-browser.err').read()[-3000:]}")
        assert json.loads(line)["signed_in"], f"{path}: the dashboard did not name alice: {line}"

    try:
        time.sleep(1)
        t = time.time()
        stats()                          # the monitor sees calls (so that a 0 below means none was made)
        time.sleep(0.5)
        assert _method_calls(log, t, time.time()) >= 1, "dbus-monitor saw no call to org.gpusched1"
        sh("systemctl stop gpusched-web")
        window("gpusched-web stopped", limit=True)
        web_up()
        window("gpusched-web running, nobody connected")
        browser = subprocess.Popen(AS_ALICE + ["/usr/bin/python3", "/src/bench/webidle_browser.py"], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=open(f"{OUT}/web-idle-browser.err", "w"), cwd="/tmp")
        show("/queue")
        window("Chromium as alice on /queue")
        show("/")
        window("Chromium as alice on / (GPUs)")
        show(f"/jobs/{job}")
        window("Chromium as alice on a quiet running job's page, its log followed")
        browser.stdin.close()
        browser.wait(timeout=60)
        browser = None
        window("gpusched-web running, nobody connected, after the browser quit")
        sh("systemctl stop gpusched-web")
        window("gpusched-web stopped again", limit=True)
        time.sleep(1)
    finally:
        if browser is not None:
            browser.kill()
        monitor.terminate()
        monitor.wait()
        sh(f"gpuschedctl cancel {job} >/dev/null 2>&1; rm -f /home/alice/quiet.toml")
    for p in phases:
        p["calls"] = _method_calls(log, p.pop("t0"), p.pop("t1"))
    return {"seconds": seconds, "log_poll_s": LOG_POLL, "log_poll_max_s": LOG_POLL_MAX, "phases": phases}


if __name__ == "__main__":
    what, arg = sys.argv[1], int(sys.argv[2])
    print(json.dumps(globals()[what](arg)))
