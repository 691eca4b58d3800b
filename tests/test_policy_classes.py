"""Classes, preemption and placement with a clock (policy/classes.py, preemption.py, placement.py,
eligibility.py) through schedule()."""

import dataclasses

from gpusched.policy import JobClass, schedule
from gpusched.policy.classes import allowed, may_use, rank
from gpusched.policy.preemption import LOST_WORK_BUDGET
from tests.policyhelp import NOW, H, G, gpus, hold, req

CLASSES = {
    "debug": JobClass("debug", priority=0, users=frozenset({"alice"}), max_gpus_per_user=1, max_time_limit=2 * H,
                      preempts=frozenset({"low"})),
    "normal": JobClass("normal", priority=10, preempts=frozenset({"low"})),
    "low": JobClass("low", priority=20),
}


def run(queued, holders, n, **kw):
    return schedule(queued, holders, gpus(n), now=NOW, classes=CLASSES, backfill="easy", aging=2, **kw)


# --- classes ---------------------------------------------------------------------------------------------------

def test_who_may_use_a_class():
    assert may_use(CLASSES["debug"], "alice", ())
    assert not may_use(CLASSES["debug"], "bob", ("users",))
    assert may_use(JobClass("g", groups=frozenset({"lab"})), "bob", ("lab",))
    assert allowed(CLASSES, "bob", ()) == {"normal", "low"}


def test_a_class_removed_from_the_config_ranks_last():
    assert rank(CLASSES, "gone") == 21
    assert rank(None, "anything") == 0


def test_debug_job_preempts_a_low_job_not_a_normal_one():
    holders = [hold(10, [0], job_class="normal", ran=60), hold(11, [1], job_class="low", ran=60)]
    d = run([req(1, job_class="debug")], holders, 2)
    assert d.preempts == [(11, 1)]


def test_normal_does_not_preempt_normal():
    d = run([req(1, job_class="normal")], [hold(10, [0], job_class="normal", ran=60)], 1)
    assert d.preempts == []


def test_low_runs_on_what_is_idle_and_normal_waits_for_nobody_low():
    # the low job starts on the idle GPU; a normal job arriving later takes it back
    d = run([req(1, job_class="low")], [], 1)
    assert d.starts == [(1, (0,))]
    d = run([req(2, job_class="normal")], [hold(1, [0], job_class="low", ran=600)], 1)
    assert d.preempts == [(1, 2)]


def test_per_user_gpu_cap_of_a_class():
    holders = [hold(10, [0], uid=1000, job_class="debug")]
    d = run([req(1, uid=1000, job_class="debug"), req(2, uid=1001, job_class="debug")], holders, 3)
    assert [j for j, _ in d.starts] == [2]
    assert "the class allows 1 per user" in d.waiting[1]


def test_asking_for_more_than_the_class_cap_can_never_run():
    d = run([req(1, gpus=2, job_class="debug")], [], 4)
    assert d.waiting[1].startswith("can never run here")


def test_victims_lose_the_least_work():
    # for a debug job: low jobs only; among them resumable first, then the least GPU time lost
    holders = [hold(10, [0], job_class="low", ran=5 * H), hold(11, [1], job_class="low", ran=600),
               hold(12, [2], job_class="low", ran=9 * H, resumable=True, grace=300),
               hold(13, [3], job_class="normal", ran=60)]
    assert run([req(1, job_class="debug")], holders, 4).preempts == [(12, 1)]
    assert run([req(1, gpus=2, job_class="normal")], holders, 4).preempts == [(12, 1), (11, 1)]


# --- preemption for time (resumable jobs only) -------------------------------------------------------------------

RUN_LONG_ENOUGH = 180 / LOST_WORK_BUDGET


def test_a_resumable_long_job_yields_to_a_much_shorter_one():
    victim = hold(10, [0], limit=72 * H, ran=RUN_LONG_ENOUGH, resumable=True, grace=180)
    d = run([req(1, limit=H)], [victim], 1)
    assert d.preempts == [(10, 1)]


def test_not_before_it_has_run_long_enough_for_the_stop_to_be_cheap():
    victim = hold(10, [0], limit=72 * H, ran=RUN_LONG_ENOUGH - 60, resumable=True, grace=180)
    assert run([req(1, limit=H)], [victim], 1).preempts == []


def test_never_a_job_that_does_not_checkpoint():
    victim = hold(10, [0], limit=72 * H, ran=10 * H)
    assert run([req(1, limit=60)], [victim], 1).preempts == []


def test_not_for_a_job_in_the_same_time_band_as_what_is_left():
    # 2 hours left (the band up to 128 minutes): a 2-hour job is no shorter, a 1-hour one is
    victim = hold(10, [0], limit=2 * H + RUN_LONG_ENOUGH, ran=RUN_LONG_ENOUGH, resumable=True, grace=180)
    assert run([req(1, limit=2 * H)], [victim], 1).preempts == []
    assert run([req(1, limit=H)], [victim], 1).preempts == [(10, 1)]


def test_not_an_overdue_job():
    # it waited more than twice its limit before it started: it may have started on that guarantee
    victim = hold(10, [0], limit=10 * H, ran=RUN_LONG_ENOUGH, waited=20 * H, resumable=True, grace=180)
    assert run([req(1, limit=60)], [victim], 1).preempts == []


def test_not_across_classes():
    victim = hold(10, [0], limit=72 * H, ran=RUN_LONG_ENOUGH, resumable=True, grace=180, job_class="normal")
    assert run([req(1, limit=H, job_class="low")], [victim], 1).preempts == []


# --- placement: memory reservations and shared GPUs ------------------------------------------------------------

def place(queued, holders, n=2, **kw):
    return schedule(queued, holders, gpus(n), now=NOW, reserve_memory=True, **kw)


def test_gpu_memory_is_a_reservation_against_the_total():
    # NVML says only 1 GiB is free on GPU 1 (someone's allocation swings), but nothing is reserved there: it fits
    g = gpus(2)
    g[1] = dataclasses.replace(g[1], memory_free=1 * G)
    d = schedule([req(1, gpu_memory=40 * G)], [hold(10, [0])], g, now=NOW, reserve_memory=True)
    assert d.starts == [(1, (1,))]
    # the first policy's way: the momentary free memory decides
    assert schedule([req(1, gpu_memory=40 * G)], [hold(10, [0])], g).starts == []


def test_sharing_jobs_share_a_gpu_while_their_memory_fits():
    holders = [hold(10, [0], share=True, gpu_memory=30 * G), hold(11, [1])]
    d = place([req(1, share=True, gpu_memory=40 * G), req(2, share=True, gpu_memory=20 * G)], holders)
    assert d.starts == [(1, (0,))]                  # 30 + 40 fits in 80; then 70 + 20 does not
    assert 2 in d.waiting


def test_a_job_that_does_not_share_gets_a_gpu_to_itself():
    d = place([req(1, gpu_memory=10 * G)], [hold(10, [0], share=True, gpu_memory=10 * G), hold(11, [1])])
    assert d.starts == []


def test_a_sharing_job_does_not_join_a_gpu_held_whole():
    d = place([req(1, share=True, gpu_memory=10 * G)], [hold(10, [0], gpu_memory=10 * G), hold(11, [1])])
    assert d.starts == []


def test_share_without_declared_memory_does_not_share():
    d = place([req(1, share=True)], [hold(10, [0], share=True, gpu_memory=10 * G), hold(11, [1])])
    assert d.starts == []


def test_sharing_jobs_pack_onto_the_fullest_gpu_that_fits():
    holders = [hold(10, [0], share=True, gpu_memory=10 * G), hold(11, [1], share=True, gpu_memory=60 * G)]
    d = place([req(1, share=True, gpu_memory=15 * G)], holders, n=3)
    assert d.starts == [(1, (1,))]                  # GPU 1 (20 GiB left) before GPU 0 (70) and the empty GPU 2


def test_without_reservations_sharing_is_off():
    d = schedule([req(1, share=True, gpu_memory=10 * G)], [hold(10, [0], share=True, gpu_memory=10 * G)],
                 gpus(1), now=NOW)
    assert d.starts == []
