"""bench/simulate: the trace model, the replay, the reference drivers, the metrics, and the command."""

import json
import os
import subprocess
import sys

import pytest

from bench.sim import cli, cluster, drivers, metrics, trace
from bench.sim.engine_driver import EngineDriver
from bench.sim.policy_driver import PolicyDriver
from bench.sim.trace import HOUR, SimJob
from gpusched import policy
from gpusched.model import State

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def j(id, submit, hours, gpus=1, limit=None, user="u01", resumable=False):
    job = SimJob(id=id, user=user, uid=1000 + int(user[1:]), submit=submit * HOUR, duration=hours * HOUR, gpus=gpus,
                 limit=limit * HOUR if limit else trace.declared_limit(hours * HOUR, 2),
                 resumable=resumable)
    job.work = min(job.duration, trace.MAX_RUN)
    return job


def finish(jobs):
    return {x.id: (x.first_start / HOUR, x.end / HOUR) for x in jobs}


# --- the model ----------------------------------------------------------------------------------------------------

def test_declared_limit_rounds_up_to_the_buckets():
    assert trace.declared_limit(600, 1.2) == HOUR
    assert trace.declared_limit(3000, 1.3) == 4 * HOUR
    assert trace.declared_limit(30 * HOUR, 2.0) == 72 * HOUR
    assert trace.declared_limit(100 * HOUR, 5.0) == 168 * HOUR       # more than a week asks for the week


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "t.csv"
    rows = ["job_id,user,submit_s,duration_s,gpus,status"]
    rows += [f"p{i},u0{i % 3 + 1},{i * 600},{(i % 5 + 1) * 900},{1 + (i % 4 == 0)},unknown" for i in range(40)]
    rows.append("p99,u01,30000,700000,16,unknown")                  # more GPUs than the server: left out
    rows.append("p98,u02,30001,900000,1,unknown")                    # longer than a week: killed at 7 days
    p.write_text("\n".join(rows) + "\n")
    return str(p)


def test_load_scales_submit_times_and_is_reproducible(tiny):
    a = trace.load(tiny, seed=1, load=0.9, max_gpus=8)
    b = trace.load(tiny, seed=1, load=0.45, max_gpus=8)
    assert [x.submit * 0.5 for x in b] == pytest.approx([x.submit for x in a])
    assert [x.limit for x in a] == [x.limit for x in trace.load(tiny, seed=1, load=0.9, max_gpus=8)]
    assert [x.limit for x in a] != [x.limit for x in trace.load(tiny, seed=2, load=0.9, max_gpus=8)]
    assert len(a) == 41 and max(x.work for x in a) == trace.MAX_RUN
    assert all(1.2 * x.duration <= x.limit or x.limit == trace.MAX_RUN for x in a)


def test_resumable_fraction(tiny):
    jobs = trace.load(tiny, seed=3, load=0.9, resumable=0.5, max_gpus=8)
    assert 0.2 < sum(x.resumable for x in jobs) / len(jobs) < 0.8
    assert not any(x.resumable for x in trace.load(tiny, seed=3, load=0.9, max_gpus=8))


# --- the reference drivers ------------------------------------------------------------------------------------------

def test_fifo_is_first_fit_in_arrival_order():
    jobs = [j(1, 0, 10), j(2, 0.1, 5, gpus=2), j(3, 0.2, 1)]
    cluster.replay(jobs, 2, drivers.Fifo())
    # job 2 needs both GPUs; job 3 fits the free one and goes first
    assert finish(jobs) == {1: (0, 10), 2: (10, 15), 3: (0.2, 1.2)}


def test_easy_backfills_only_what_cannot_delay_the_head():
    # job 1 runs to 10 h by its limit; job 2 (2 GPUs) is reserved for 10 h; job 3 (limit 12 h) would delay it,
    # job 4 (limit 4 h) would not
    jobs = [j(1, 0, 10, limit=10), j(2, 0.1, 1, gpus=2, limit=1), j(3, 0.2, 3, limit=12), j(4, 0.3, 3, limit=4)]
    cluster.replay(jobs, 2, drivers.Easy(2))
    got = finish(jobs)
    assert got[4] == (0.3, 3.3) and got[2] == (10, 11) and got[3][0] == 11


def test_oracle_is_shortest_remaining_first_with_free_preemption():
    jobs = [j(1, 0, 10), j(2, 1, 1)]
    cluster.replay(jobs, 1, drivers.Oracle(1))
    assert finish(jobs) == {1: (0, 11), 2: (1, 2)}
    assert jobs[0].preemptions == 1 and jobs[0].lost == 0


class Preempter:
    """Starts everything in arrival order and preempts job 1 for job 2 when job 2 arrives."""
    name, lossless = "test", False

    def __init__(self):
        self.queue, self.running = [], {}

    def submit(self, job, now):
        self.queue.append(job)

    def left(self, job, now, done):
        self.running.pop(job.id, None)
        if not done:
            self.queue.insert(0 if job.id == 2 else len(self.queue), job)

    def decide(self, now, free):
        preempts = [self.running.pop(1)] if any(x.id == 2 for x in self.queue) and 1 in self.running else []
        free = sorted(set(free).union(*(x.gpu_ids for x in preempts)))
        starts = []
        while self.queue and len(free) >= self.queue[0].gpus:
            x = self.queue.pop(0)
            starts.append((x, tuple(free[:x.gpus])))
            free = free[x.gpus:]
            self.running[x.id] = x
        return starts, preempts


def test_a_preempted_job_restarts_from_zero_unless_resumable():
    jobs = [j(1, 0, 10), j(2, 4, 1)]
    cluster.replay(jobs, 1, Preempter())
    assert finish(jobs)[1] == (0, 15) and jobs[0].lost == 4 * HOUR
    jobs = [j(1, 0, 10, resumable=True), j(2, 4, 1)]
    cluster.replay(jobs, 1, Preempter())
    # resumes with its 4 hours less its 3-minute grace
    assert jobs[0].end / HOUR == pytest.approx(11 + trace.GRACE / HOUR)
    assert jobs[0].lost == trace.GRACE


def test_a_driver_that_double_books_a_gpu_is_caught():
    class Bad(drivers.Fifo):
        def decide(self, now, free):
            starts, _ = super().decide(now, list(free) + [0])
            return starts, []
    with pytest.raises(RuntimeError):
        cluster.replay([j(1, 0, 1), j(2, 0, 1)], 1, Bad())


# --- metrics ---------------------------------------------------------------------------------------------------------

def test_metrics_on_a_small_case():
    jobs = [j(1, 0, 10, user="u01"), j(2, 0, 10, user="u02"), j(3, 0, 1, user="u02")]
    totals = cluster.replay(jobs, 2, drivers.Fifo())
    m = metrics.summarize(jobs, totals)
    assert m["mean_jct_s"] == pytest.approx((10 + 10 + 11) / 3 * HOUR)
    assert m["max_wait_s"] == 10 * HOUR
    assert m["util_backlogged"] == 1.0                       # both GPUs busy while job 3 waited
    assert m["useful_gpu_hours"] == pytest.approx(21)
    # day 0: u02 waited; only one user waited, so no day counts and the index is 1
    assert m["jain_daily"] == 1.0
    assert m["bsld"] == pytest.approx((1 + 1 + 11) / 3)


def test_jain_is_one_for_equal_shares_and_lower_otherwise():
    a, b = j(1, 0, 2, user="u01"), j(2, 0, 2, user="u02")
    a.runs, b.runs = [(0, 2 * HOUR, 1)], [(0, 2 * HOUR, 1)]
    a.waits, b.waits = [(0, 1)], [(0, 1)]
    assert metrics.jain_daily([a, b]) == pytest.approx(1.0)
    b.runs = [(0, HOUR / 2, 1)]
    assert metrics.jain_daily([a, b]) == pytest.approx((2.5 ** 2) / (2 * (4 + 0.25)))


# --- gpusched's own driver -----------------------------------------------------------------------------------------

def _count_policy_calls(monkeypatch) -> list[dict]:
    """The keywords of every policy.schedule call from now on (the real policy still decides)."""
    calls: list[dict] = []
    real = policy.schedule

    def counting(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)
    monkeypatch.setattr(policy, "schedule", counting)
    return calls


def test_the_gpusched_driver_runs_the_real_policy(monkeypatch):
    calls = _count_policy_calls(monkeypatch)
    jobs = [j(1, 0, 10), j(2, 0.5, 1, gpus=2), j(3, 1, 1)]
    cluster.replay(jobs, 2, PolicyDriver(2))
    assert calls and all(c["now"] is not None and c["backfill"] == policy.Backfill.EASY for c in calls)
    assert all(x.end is not None for x in jobs)


# --- the command ---------------------------------------------------------------------------------------------------

KEYS = {"mean_jct_s", "median_jct_s", "p99_jct_s", "mean_wait_s", "p99_wait_s", "max_wait_s", "bsld",
        "util_backlogged", "jain_daily", "preemptions", "lost_gpu_hours", "useful_gpu_hours"}


def test_json_is_keyed_by_policy_with_the_agreed_metrics(tiny, capsys):
    assert cli.main(["--trace", tiny, "--gpus", "2", "--load", "0.9", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"fifo", "easy", "gpusched", "oracle"}
    for m in out.values():
        assert KEYS <= set(m)


def test_table_plot_and_sweep(tiny, tmp_path, capsys):
    png = tmp_path / "p.png"
    assert cli.main(["--trace", tiny, "--gpus", "2", "--resumable", "0.5", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| gpusched |" in out and "mean JCT" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["--trace", tiny, "--gpus", "2", "--sweep", "--json", "--plot", str(png)]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert {(r["load"], r["seed"]) for r in runs} == {(x, s) for x in (0.5, 0.7, 0.9, 1.0) for s in (1, 2, 3)}


def test_the_script_runs(tiny):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "simulate"), "--trace", tiny, "--gpus", "2",
                        "--json", "--policies", "fifo,gpusched"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert set(json.loads(p.stdout)) == {"fifo", "gpusched"}


# --- gpusched's engine driver: the real engine on the fake clock, runner and recorder ---------------------------------

def test_the_engine_driver_gives_the_known_completion_times():
    # 2 GPUs: jobs 1 and 2 start at once; job 3 (at 1 h) waits for the first GPU free, job 1's at 4 h
    jobs = [j(1, 0, 4), j(2, 0, 6), j(3, 1, 2)]
    totals = cluster.replay(jobs, 2, EngineDriver(2))
    assert finish(jobs) == {1: (0, 4), 2: (0, 6), 3: (4, 6)}
    m = metrics.summarize(jobs, totals)
    assert m["mean_jct_s"] == pytest.approx((4 + 6 + 5) / 3 * HOUR)
    assert m["max_wait_s"] == pytest.approx(3 * HOUR)
    assert m["preemptions"] == 0 and m["lost_gpu_hours"] == 0
    assert m["util_backlogged"] == 1.0


def test_the_engine_driver_runs_the_engine_and_its_policy(monkeypatch):
    calls = _count_policy_calls(monkeypatch)
    jobs = [j(1, 0, 10), j(2, 0.5, 1, gpus=2), j(3, 1, 1)]
    d = EngineDriver(2)
    cluster.replay(jobs, 2, d)
    assert calls and d.passes >= len(calls)
    assert all(x.end is not None for x in jobs)
    # the engine's own records say the same as the replay's
    for x in jobs:
        rec = d.engine.jobs[x.id]
        assert rec.state == State.SUCCEEDED and rec.preemptions == 0
        assert rec.history[-1]["ended"] - d.clock.start == pytest.approx(x.end)
        assert rec.spec.time_limit == x.limit and rec.spec.gpus == x.gpus


class PreemptAt4(EngineDriver):
    """Preempts job 1 when job 2 arrives (through the engine's own stop), whatever the policy would do."""

    def decide(self, now, free):
        job = self.engine.jobs[1]
        if now == 4 * HOUR and job.state == State.RUNNING:
            self.engine.startstop.stop(job, "preempt", "preempted by the test")
        return super().decide(now, free)


@pytest.mark.parametrize("resumable", [False, True])
def test_the_engine_driver_restarts_a_preempted_job_from_zero_unless_resumable(resumable):
    # 2 GPUs, so job 2 takes the free one and job 1, alone in the queue, starts again at once
    jobs = [j(1, 0, 10, resumable=resumable), j(2, 4, 1)]
    d = PreemptAt4(2)
    cluster.replay(jobs, 2, d)
    one = jobs[0]
    assert one.preemptions == 1 and d.engine.jobs[1].preemptions == 1 and d.engine.jobs[1].attempt == 2
    if resumable:
        assert one.end / HOUR == pytest.approx(10 + trace.GRACE / HOUR)      # its 4 hours less its grace kept
        assert one.lost == pytest.approx(trace.GRACE)
    else:
        assert one.end / HOUR == pytest.approx(14)                           # all 10 hours again from 4 h
        assert one.lost == pytest.approx(4 * HOUR)
    assert finish(jobs)[2] == (4, 5)


def test_the_engine_driver_catches_the_engine_and_the_replay_disagreeing():
    # work the declared limit can't hold: the fake runner kills the job at its limit (as systemd would), the
    # replay's model would run it on; the driver refuses to go on with two different stories
    x = j(1, 0, 10, limit=1)
    with pytest.raises(RuntimeError, match="disagree"):
        cluster.replay([x], 1, EngineDriver(1))


def test_the_engine_driver_matches_its_reference(tiny, monkeypatch):
    """The engine's decisions through the whole replay, against what they should be: while the engine calls the
    policy the first policy's way (no `now`: strict priority, then first fit) every job here has the same
    priority, so that is FIFO's first fit in arrival order; once it calls it the new way, it must decide as
    gpusched-policy-only does (the policy given what the daemon gives it, without the engine)."""
    new_way = []
    real = policy.schedule

    def watching(*a, **kw):
        new_way.append(kw.get("now") is not None)
        return real(*a, **kw)
    monkeypatch.setattr(policy, "schedule", watching)
    got = {}
    for name in ("gpusched", "fifo", "gpusched-policy-only"):
        jobs = trace.load(tiny, seed=1, load=0.9, max_gpus=2)
        cluster.replay(jobs, 2, cli.make(name, 2, cli.configmod.Config()))
        got[name] = [(x.id, x.first_start, x.end, x.preemptions) for x in jobs]
        if name == "gpusched":
            engine_new_way = any(new_way)
    reference = "gpusched-policy-only" if engine_new_way else "fifo"
    assert got["gpusched"] == got[reference], f"the engine driver differs from {reference}"
