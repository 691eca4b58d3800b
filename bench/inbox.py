"""Measurements run inside the systemd box (bench/run starts them). Each prints one JSON object."""

from __future__ import annotations

import json
import os
import shutil
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


if __name__ == "__main__":
    what, arg = sys.argv[1], int(sys.argv[2])
    print(json.dumps(globals()[what](arg)))
