"""Issue 9's time windows and GPUs used outside gpusched, in the real service (the systemd box), driven as users
drive it: job files into the spool and through gpuschedctl, the simulated inventory's hook file for a process
"on" a GPU, `gpuschedctl gpus`/`show`, the status files and the journal."""

from __future__ import annotations

import json
import time
import uuid

SIM_PROCS = "/run/gpusched/simulate-gpu-procs"


def _box_times(gs) -> dict[str, str]:
    """Times of day on the box's clock (the service reads its local time): one `date` per offset, in one go."""
    out = gs.sh("for d in '-1 hour' '+2 hours' '+3 hours' '+4 hours'; do date -d \"$d\" '+%H:%M %a'; done").stdout
    (open_start, _), (open_end, _), (closed_start, closed_day), (closed_end, _) = [l.split() for l in out.splitlines()]
    return {"open_start": open_start, "open_end": open_end, "closed_start": closed_start, "closed_day": closed_day,
            "closed_end": closed_end}


def test_a_job_starts_only_inside_its_window_and_an_unknown_window_is_rejected(gs):
    t = _box_times(gs)
    # top-level keys only (configured() puts these lines above the box's own config): inline tables
    windows = (f'windows = {{ open = {{ start = "{t["open_start"]}", end = "{t["open_end"]}" }}, '
               f'closed = {{ start = "{t["closed_start"]}", end = "{t["closed_end"]}" }} }}\n')
    with gs.configured(windows):
        waiting = gs.submit("alice", 'command = "sleep 60"\ngpus = 1\nwindow = "closed"\n')
        inside = gs.submit("alice", 'command = "sleep 60"\ngpus = 1\nwindow = "open"\n')
        plain = gs.submit("bob", 'command = "sleep 60"\ngpus = 1\n')
        gs.wait(inside, "running", timeout=20)
        gs.wait(plain, "running", timeout=20)
        expected = f"waits for window closed (opens {t['closed_start']} {t['closed_day']})"
        deadline = time.monotonic() + 10
        while gs.status(waiting).get("reason") != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        st = gs.status(waiting)
        assert st["state"] == "queued" and st["reason"] == expected, st
        listed = {j["id"]: j for j in gs.list()}
        assert listed[waiting]["reason"] == expected and listed[waiting]["state"] == "queued"
        shown = json.loads(gs.sh(f"gpuschedctl show --json {waiting}", user="alice").stdout)["job"]
        assert shown["spec"]["window"] == "closed", shown
        time.sleep(3)                                           # passes go by: it still waits, GPUs are free
        assert gs.status(waiting)["state"] == "queued"

        # a window this server doesn't have: gpuschedctl refuses it, and a file dropped in the spool is rejected
        # with its line
        gs.sh("printf 'command = \"true\"\\ngpus = 0\\nwindow = \"nigth\"\\n' > /home/alice/typo.toml", user="alice")
        refused = gs.sh("cd /home/alice && gpuschedctl submit typo.toml", user="alice", check=False)
        assert refused.returncode != 0 and "typo.toml:3: window: 'nigth': no such time window" in refused.stderr, \
            refused
        name = gs.drop("alice", 'command = "true"\ngpus = 0\n\nwindow = "nigth"\n')
        rejected = gs.job_by_source("alice", name)
        st = gs.wait(rejected["id"], "rejected")
        assert f"{name}:4: window: 'nigth': no such time window on this server" in st["reason"], st
        assert "it has: closed, open" in st["reason"], st
        for j in (waiting, inside, plain):
            gs.sh(f"gpuschedctl cancel {j}")


def _foreign_process(gs, user: str) -> tuple[str, int]:
    """A sleeping process of `user`'s outside gpusched (a system service, as a login would be). (unit, pid)."""
    unit = f"foreign-{uuid.uuid4().hex[:6]}"
    gs.sh(f"systemd-run --quiet --uid={user} --unit={unit} sleep 300")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = int(gs.sh(f"systemctl show -p MainPID --value {unit}").stdout.strip() or 0)
        if pid:
            return unit, pid
        time.sleep(0.1)
    raise AssertionError(f"{unit} did not start")


def _on_gpus(gs, pairs: list[tuple[int, int]]) -> None:
    text = "".join(f"{gpu} {pid}\\n" for gpu, pid in pairs)
    gs.sh(f"mkdir -p /run/gpusched && printf '{text}' > {SIM_PROCS}.tmp && chmod 644 {SIM_PROCS}.tmp && "
          f"mv {SIM_PROCS}.tmp {SIM_PROCS}")


def _gpus(gs) -> list[dict]:
    return json.loads(gs.sh("gpuschedctl gpus --json").stdout)["gpus"]


def test_foreign_preempt_stops_a_preemptible_job_and_spares_a_non_preemptible_one(gs):
    unit = ""
    jobs: list[int] = []
    try:
        with gs.configured('foreign = "preempt"\nforeign_grace = "1s"\n'):
            victim = gs.submit("alice", 'command = "echo attempt $GPUSCHED_ATTEMPT; exec sleep 300"\ngpus = 1\n'
                                        'grace = "2s"\n')
            kept = gs.submit("root", 'command = "sleep 300"\ngpus = 1\npreemptible = false\n')
            jobs += [victim, kept]
            gv = gs.wait(victim, "running", timeout=20)["gpus"][0]["index"]
            gk = gs.wait(kept, "running", timeout=20)["gpus"][0]["index"]
            unit, pid = _foreign_process(gs, "bob")
            _on_gpus(gs, [(gv, pid), (gk, pid)])
            text = f"GPU {gv} is used outside gpusched by bob (pid {pid}, sleep)"
            # stopped through the door as a preemption, requeued with its id, and started again on a free GPU
            deadline = time.monotonic() + 30
            st = gs.status(victim)
            while time.monotonic() < deadline and not (st.get("attempt") == 2 and st["state"] == "running"):
                time.sleep(0.2)
                st = gs.status(victim)
            assert st["state"] == "running" and st["attempt"] == 2 and st["preemptions"] == 1, st
            assert st["history"][0]["preempted"] is True and st["history"][0]["reason"] == text, st
            assert st["gpus"][0]["index"] not in (gv, gk), st
            journal = gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={victim}")
            assert f"stopping job {victim}: {text}" in journal, journal
            assert f"job {victim} queued: preempted ({text}); killed by SIGTERM; requeued" in journal, journal
            shown = gs.sh(f"gpuschedctl show {victim}", user="alice").stdout
            assert f"(preempted: {text})" in shown, shown
            # the non-preemptible job keeps running; gpus and show say its GPU is contested
            assert gs.status(kept)["state"] == "running" and gs.status(kept)["attempt"] == 1
            gpus = _gpus(gs)
            assert gpus[gk]["state"] == f"job {kept}, contested" and gpus[gk]["contested"] is True, gpus
            assert gpus[gv]["state"] == "foreign" and gpus[gv]["foreign"][0]["user"] == "bob", gpus
            table = gs.sh("gpuschedctl gpus").stdout
            assert f"job {kept}, contested (pids {pid})" in table and "bob" in table, table
            shown = json.loads(gs.sh(f"gpuschedctl show --json {kept}").stdout)["job"]
            assert shown["contested"] == f"GPU {gk} is used outside gpusched by bob (pid {pid}, sleep)", shown
            assert "it is not preemptible: it keeps running on a contested GPU" in \
                gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={kept}")
    finally:
        _clean_up(gs, unit, jobs)


def _clean_up(gs, unit: str, jobs: list[int]) -> None:
    """After a foreign-use test: no simulated process on any GPU, the foreign process stopped, its jobs gone."""
    gs.sh(f"rm -f {SIM_PROCS}", check=False)
    if unit:
        gs.sh(f"systemctl stop {unit}", check=False)
    for j in jobs:
        gs.sh(f"gpuschedctl cancel {j}", check=False)


def test_foreign_wait_keeps_the_job_running_and_gives_the_gpu_no_new_job(gs):
    unit = ""
    jobs: list[int] = []
    try:
        with gs.configured('foreign = "wait"\nforeign_grace = "1s"\n'):
            job = gs.submit("alice", 'command = "sleep 300"\ngpus = 1\ngrace = "2s"\n')
            jobs.append(job)
            g = gs.wait(job, "running", timeout=20)["gpus"][0]["index"]
            unit, pid = _foreign_process(gs, "bob")
            _on_gpus(gs, [(g, pid)])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _gpus(gs)[g]["contested"]:
                time.sleep(0.2)
            time.sleep(4)                                      # several probes past the grace
            st = gs.status(job)
            assert st["state"] == "running" and st["attempt"] == 1 and st.get("preemptions", 0) == 0, st
            assert _gpus(gs)[g]["state"] == f"job {job}, contested"
            assert 'foreign = "wait": it keeps running on a contested GPU' in \
                gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job}")
            # once the foreign process is gone the GPU is the job's alone again
            gs.sh(f"systemctl stop {unit}")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _gpus(gs)[g]["contested"]:
                time.sleep(0.2)
            assert _gpus(gs)[g]["state"] == f"job {job}"
    finally:
        _clean_up(gs, unit, jobs)
