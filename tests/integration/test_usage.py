"""Issue 9's idle reservations and accounting in the real service (the systemd box), driven as users drive it:
job files through gpuschedctl, the status files, `gpuschedctl list/show/stats/history` and the journal. The
simulated GPUs' utilisation, memory and power come from the root-only hook /run/gpusched/simulate-gpu-usage
(gpus.py), which the tests write as root."""

from __future__ import annotations

import json
import shlex
import time

import pytest

HOOK = "/run/gpusched/simulate-gpu-usage"


def _usage(gs, util: float, memory: str = "10G", power: float = 200.0) -> None:
    """Every simulated GPU at this utilisation, memory used and power, from now on."""
    text = "".join(f"{i} {util:g} {memory} {power:g}\n" for i in range(4))
    gs.sh(f"mkdir -p /run/gpusched && printf %s {shlex.quote(text)} > {HOOK}.new && chmod 644 {HOOK}.new "
          f"&& mv {HOOK}.new {HOOK}")


@pytest.fixture
def hook(gs):
    yield gs
    gs.sh(f"rm -f {HOOK}", check=False)


def _until(fn, timeout: float = 30, what: str = ""):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout}s: {what} (last: {value})")


def _listed(gs, job_id: int, user: str = "alice") -> dict:
    jobs = json.loads(gs.sh("gpuschedctl list --json", user=user).stdout)["jobs"]
    return next(j for j in jobs if j["id"] == job_id)


def test_a_running_jobs_idle_gpus_are_flagged_in_list_show_and_the_journal_then_unflagged(hook):
    gs = hook
    with gs.configured('idle_after = "3s"'):
        _usage(gs, 90)
        job = gs.submit("alice", 'command = "sleep 120"\ngpus = 1\ngrace = "2s"\n')
        gs.wait(job, "running", timeout=20)
        time.sleep(5)                                        # busy for longer than idle_after: no flag
        assert not _listed(gs, job).get("reason"), _listed(gs, job)
        _usage(gs, 0)
        _until(lambda: "idle:" in _listed(gs, job).get("reason", ""), what="the idle flag in list --json")
        table = gs.sh("gpuschedctl list", user="alice").stdout
        assert any(line.startswith(str(job)) and "idle: its GPUs" in line for line in table.splitlines()), table
        shown = json.loads(gs.sh(f"gpuschedctl show --json {job}", user="alice").stdout)["job"]
        assert shown["usage"]["idle_since"] and shown["state"] == "running", shown
        assert "idle_since" in gs.sh(f"gpuschedctl show {job}", user="alice").stdout
        assert "usage" not in json.loads(gs.sh(f"gpuschedctl show --json {job}", user="bob").stdout)["job"]  # private
        st = gs.status(job)
        assert st["usage"]["idle_since"] and st["reason"].startswith("idle:"), st
        time.sleep(3)                                        # still idle: still one journal line
        lines = [ln for ln in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job}").splitlines()
                 if f"job {job} idle:" in ln]
        assert len(lines) == 1 and "idle_after 3s" in lines[0], lines
        _usage(gs, 80)
        _until(lambda: not _listed(gs, job).get("reason"), what="the flag gone once the GPU is busy again")
        assert "using its GPUs again" in gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job}")
        assert gs.status(job)["state"] == "running"
        gs.sh(f"gpuschedctl cancel --now {job}", user="alice")
        st = gs.wait(job, "cancelled", timeout=20)
        assert "idle_since" not in st["usage"] and st["usage"]["gpu_hours_used"] > 0, st


def test_idle_action_stop_stops_an_idle_job_with_its_reason_and_does_not_requeue_it(hook):
    gs = hook
    with gs.configured('idle_after = "2s"\nidle_action = "stop"'):
        _usage(gs, 1)                                        # under the default threshold (5%)
        job = gs.submit("alice", 'command = "sleep 300"\ngpus = 1\ngrace = "2s"\nresumable = true\n')
        st = gs.wait(job, "cancelled", timeout=40)
        assert st["reason"].startswith("stopped: its GPUs were idle for") and 'idle_action = "stop"' in st["reason"]
        assert st["attempt"] == 1 and st["usage"]["gpu_hours_reserved"] > 0, st
        journal = gs.journal("-t", "gpusched", f"GPUSCHED_JOB_ID={job}")
        assert f"job {job} idle:" in journal and "stopping it" in journal, journal
        time.sleep(2)
        assert gs.status(job)["state"] == "cancelled"      # never requeued, resumable or not


def test_a_finished_job_has_its_accounting_and_stats_and_history_show_it(hook):
    gs = hook
    _usage(gs, 50, memory="12G", power=200)
    job = gs.submit("alice", 'command = "sleep 4"\ngpus = 2\n')
    st = gs.wait(job, "succeeded", timeout=40)
    u = st["usage"]
    held = (st["ended"] - st["started"]).total_seconds()
    assert u["gpu_hours_reserved"] == pytest.approx(2 * held / 3600, abs=2e-5), (u, held)
    # half busy on both GPUs: used is about half of what was held (sampled once a second)
    assert 0.25 * u["gpu_hours_reserved"] < u["gpu_hours_used"] < 0.6 * u["gpu_hours_reserved"], u
    assert u["gpu_memory_peak"] == 12 << 30 and 200 < u["energy_joules"] < 2 * 200 * (held + 2), u
    assert "energy_estimated" not in u
    rows = json.loads(gs.sh("gpuschedctl stats --json", user="alice").stdout)["users"]
    assert [r["user"] for r in rows] == ["alice"], rows             # a user sees their own line
    assert rows[0]["jobs"] >= 1 and rows[0]["gpu_hours_reserved"] >= u["gpu_hours_reserved"] - 1e-6
    assert rows[0]["wait_max"] >= 0 and rows[0]["energy_joules"] >= u["energy_joules"] - 1e-3
    table = gs.sh("gpuschedctl stats --since 1h", user="alice").stdout
    assert table.splitlines()[0].startswith("USER") and any(ln.startswith("alice ") for ln in table.splitlines())
    everyone = json.loads(gs.sh("gpuschedctl stats --json").stdout)["users"]      # root: every user
    assert "alice" in {r["user"] for r in everyone}
    refused = gs.sh("gpuschedctl stats --user alice", user="bob", check=False)
    assert refused.returncode != 0 and "only root or an admin" in refused.stderr, refused
    hist = json.loads(gs.sh("gpuschedctl history --json --since 1h", user="alice").stdout)["jobs"]
    mine = next(j for j in hist if j["id"] == job)
    assert mine["usage"]["gpu_hours_reserved"] == pytest.approx(u["gpu_hours_reserved"]), mine
    assert str(job) in gs.sh("gpuschedctl history --state succeeded", user="alice").stdout
    theirs = json.loads(gs.sh("gpuschedctl history --json --user alice", user="bob").stdout)["jobs"]
    assert any(j["id"] == job for j in theirs) and all("usage" not in j for j in theirs)
