"""policy/inputs.py: a job record as the policy sees it, the config as schedule()'s keywords; and what a pass
costs when nothing can start."""

import time

import pytest

from gpusched import config
from gpusched.jobfile import JobSpec
from gpusched.model import GpuRef, Job, State
from gpusched.policy import Backfill, Holder, JobClass, Request, inputs, order, schedule
from tests.policyhelp import gpus

CLASSES = {"normal": JobClass("normal", priority=10), "debug": JobClass("debug", default_time_limit=1800.0)}


def job(**kw):
    spec_kw = {k: kw.pop(k) for k in list(kw) if k in JobSpec.__dataclass_fields__}
    spec = JobSpec(command="true", name="train", **spec_kw)
    return Job(id=kw.pop("id", 7), user="alice", uid=1000, source="7.toml", state=kw.pop("state", State.QUEUED),
               submitted=100.0, spec=spec, **kw)


def test_request_carries_the_file():
    r = inputs.request(job(gpus=2, priority=50, time_limit=3600.0, resumable=True, share=True, gpu_memory=1 << 30,
                           grace=60.0))
    assert r == Request(7, 50, 2, 1 << 30, None, (), uid=1000, job_class="", submitted=100.0, time_limit=3600.0,
                        limit_estimated=False, resumable=True, share=True, grace=60.0)


def test_class_the_job_was_accepted_into_wins_then_the_file_then_the_default():
    assert inputs.request(job(job_class="debug"), classes=CLASSES).job_class == "debug"
    assert inputs.request(job(), classes=CLASSES).job_class == "normal"
    assert inputs.request(job(job_class="debug"), classes=CLASSES, default_class="debug").job_class == "debug"
    accepted = job(job_class="debug")
    accepted.job_class = "normal"
    assert inputs.request(accepted, classes=CLASSES).job_class == "normal"
    assert inputs.request(job(job_class="debug")).job_class == ""          # no classes: none


def test_time_limit_own_then_class_default_then_estimate():
    assert inputs.request(job(time_limit=600.0), classes=CLASSES).time_limit == 600.0
    r = inputs.request(job(job_class="debug"), classes=CLASSES, history_estimate=99.0)
    assert (r.time_limit, r.limit_estimated) == (1800.0, False)
    r = inputs.request(job(), classes=CLASSES, history_estimate=900.0)
    assert (r.time_limit, r.limit_estimated) == (900.0, True)
    assert inputs.request(job()).time_limit is None


def test_estimate_from_history():
    assert inputs.estimate([]) is None
    assert inputs.estimate([100.0]) == 180.0                  # 150 s rounded up to whole minutes
    assert inputs.estimate([10_000.0, 60.0, 60.0, 60.0, 60.0, 60.0]) == 120.0   # only the last five count


def test_holder_of_a_running_job():
    j = job(gpus=2, time_limit=7200.0, state=State.STOPPING)
    j.started, j.gpus = 500.0, (GpuRef(1, "GPU-1"), GpuRef(3, "GPU-3"))
    h = inputs.holder(j)
    assert h == Holder(7, 100, (1, 3), True, True, uid=1000, cpu_only=False, job_class="", submitted=100.0,
                       started=500.0, time_limit=7200.0, limit_estimated=False, resumable=False, share=False,
                       gpu_memory=None, grace=180.0)


def test_settings_from_the_config():
    cfg = config.parse('aging = 3\nbackfill = false\nmax_running = 4\n[classes.normal]\npriority = 1\n')
    kw = inputs.settings(cfg, cpu_cap=8)
    assert kw["backfill"] == Backfill.OFF and kw["aging"] == 3.0 and kw["max_running"] == 4
    assert kw["classes"] == {"normal": cfg.classes[0]} and kw["reserve_memory"] is True
    assert kw["max_cpu_jobs_per_user"] == 8
    assert inputs.settings(config.Config(), cpu_cap=0)["classes"] is None
    assert inputs.settings(config.Config(), cpu_cap=0)["backfill"] == Backfill.EASY


# --- cost ------------------------------------------------------------------------------------------------------

def test_nothing_free_and_nobody_to_preempt_orders_nothing(monkeypatch):
    # 100,000 queued, every GPU held by a job nobody may preempt: no GPU job can start, so the queue is not
    # ordered (not even heapified) at all; a linear scan gives every job its reason
    def boom(*a, **kw):
        raise AssertionError("the queue was ordered")
    monkeypatch.setattr(order, "ordered", boom)
    queued = [Request(i, 100, 1, uid=1000 + i % 9, submitted=float(i), time_limit=3600.0) for i in range(100_000)]
    holders = [Holder(900_000 + i, 100, (i,), preemptible=False, started=0.0, time_limit=3600.0) for i in range(4)]
    t0 = time.process_time()
    d = schedule(queued, holders, gpus(4), now=1e6, backfill="easy", aging=2)
    spent = time.process_time() - t0
    assert len(d.waiting) == 100_000 and not d.starts
    assert d.waiting[5] == "waiting for 1 GPU(s), 0 free"
    assert list(d.expected_start) == [0]              # the plan is still made for the first one
    assert spent < 1.0, spent                          # about 0.05 s on the 2-core test machine


@pytest.mark.parametrize("now", [None, 1e6])
def test_the_linear_path_decides_what_the_ordered_one_would(now, monkeypatch):
    # a CPU-only job among them still starts; the GPU jobs' reasons are those the full pass gives
    queued = [Request(i, 100, 1 + i % 2, uid=1000 + i % 3, submitted=float(i), time_limit=3600.0) for i in range(50)]
    queued.append(Request(99, 100, 0, uid=1000))
    holders = [Holder(900 + i, 100, (i,), preemptible=False, started=0.0, time_limit=3600.0) for i in range(2)]
    kw = dict(now=now, backfill="easy" if now else "greedy", max_running_per_user=3, aging=2)
    fast = schedule(queued, holders, gpus(2), **kw)
    from gpusched.policy import decide
    monkeypatch.setattr(decide.Preemption, "possible", lambda self, q: True)     # forces the ordered path
    slow = schedule(queued, holders, gpus(2), **kw)
    assert (fast.starts, fast.waiting, fast.expected_start) == (slow.starts, slow.waiting, slow.expected_start)
