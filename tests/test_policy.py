from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpusched.model import Gpu
from gpusched.policy import Decision, Holder, Request, fits, never_fits, schedule

G = 1 << 30
A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"


def gpu(index, name=A100, total=80 * G, free=None, foreign=()):
    return Gpu(index=index, uuid=f"GPU-{index:04d}-aaaa-bbbb", name=name, memory_total=total,
               memory_free=total if free is None else free, minor=index, foreign_pids=tuple(foreign))


def gpus(n, **kw):
    return [gpu(i, **kw) for i in range(n)]


def started(d: Decision) -> dict[int, tuple[int, ...]]:
    return dict(d.starts)


# --- order ----------------------------------------------------------------------------------------------------

def test_lower_priority_number_goes_first():
    d = schedule([Request(1, 100, 1), Request(2, 50, 1)], [], gpus(1))
    assert d.starts == [(2, (0,))]
    assert set(d.waiting) == {1}


def test_equal_priority_goes_in_arrival_order():
    d = schedule([Request(7, 100, 1), Request(3, 100, 1), Request(5, 100, 1)], [], gpus(2))
    assert [job for job, _ in d.starts] == [3, 5]
    assert d.starts == [(3, (0,)), (5, (1,))]
    assert d.waiting[7] == "waiting for 1 GPU(s), 0 free"


def test_negative_priority_beats_default():
    d = schedule([Request(1, 0, 1), Request(2, -5, 1)], [], gpus(1))
    assert d.starts == [(2, (0,))]


# --- allocation -------------------------------------------------------------------------------------------------

def test_gpu_count_is_honoured():
    d = schedule([Request(1, 100, 3)], [], gpus(4))
    assert d.starts == [(1, (0, 1, 2))]


def test_job_asking_for_more_than_free_waits_and_smaller_later_job_fills_in():
    d = schedule([Request(1, 100, 3), Request(2, 100, 1)], [Holder(9, 100, (0, 1))], gpus(4))
    assert started(d) == {2: (2,)}
    assert d.waiting[1] == "waiting for 3 GPU(s), 2 free"


def test_gpu_memory_uses_free_memory():
    g = [gpu(0, free=10 * G), gpu(1, free=40 * G), gpu(2, free=70 * G)]
    d = schedule([Request(1, 100, 1, gpu_memory=20 * G)], [], g)
    assert d.starts == [(1, (1,))]


def test_gpu_memory_not_free_now_waits_but_is_not_never():
    g = [gpu(0, total=40 * G, free=1 * G)]
    d = schedule([Request(1, 100, 1, gpu_memory=30 * G)], [], g)
    assert d.starts == []
    assert d.waiting[1].startswith("waiting for 1 GPU(s), 0 free")


def test_gpu_type_is_a_case_insensitive_substring():
    g = [gpu(0, name=A100), gpu(1, name=H100), gpu(2, name=H100)]
    d = schedule([Request(1, 100, 1, gpu_type="h100"), Request(2, 100, 1, gpu_type="A100-sxm4")], [], g)
    assert started(d) == {1: (1,), 2: (0,)}


def test_gpu_ids_by_index():
    d = schedule([Request(1, 100, 2, gpu_ids=(3, 1))], [], gpus(4))
    assert d.starts == [(1, (1, 3))]


def test_gpu_ids_by_uuid():
    g = gpus(4)
    d = schedule([Request(1, 100, 1, gpu_ids=(g[2].uuid,))], [], g)
    assert d.starts == [(1, (2,))]


def test_gpu_ids_mixed_index_and_uuid():
    g = gpus(4)
    d = schedule([Request(1, 100, 2, gpu_ids=(0, g[3].uuid))], [], g)
    assert d.starts == [(1, (0, 3))]


def test_pinned_gpu_held_means_wait():
    d = schedule([Request(1, 100, 1, gpu_ids=(0,))], [Holder(9, 100, (0,), preemptible=False)], gpus(2))
    assert d.starts == []
    assert d.waiting[1] == "waiting for 1 GPU(s), 0 free"


def test_held_gpu_is_never_given_again():
    holders = [Holder(10, 100, (0, 2)), Holder(11, 100, (3,), stopping=True)]
    d = schedule([Request(1, 100, 1), Request(2, 100, 1), Request(3, 100, 1)], holders, gpus(5))
    assert started(d) == {1: (1,), 2: (4,)}
    assert 3 in d.waiting


def test_gpus_with_foreign_processes_are_not_handed_out():
    g = [gpu(0, foreign=(1234,)), gpu(1)]
    d = schedule([Request(1, 100, 1), Request(2, 100, 1)], [], g)
    assert d.starts == [(1, (1,))]
    assert d.waiting[2] == "waiting for 1 GPU(s), 0 free; GPU(s) 0 busy with processes gpusched did not start"


def test_foreign_busy_gpu_not_mentioned_when_it_does_not_fit():
    g = [gpu(0, name=A100, foreign=(1234,)), gpu(1, name=H100, foreign=(99,))]
    d = schedule([Request(1, 100, 1, gpu_type="H100")], [], g)
    assert d.waiting[1] == "waiting for 1 GPU(s), 0 free; GPU(s) 1 busy with processes gpusched did not start"


def test_fits_checks_each_constraint():
    g = gpu(2, name=H100, total=80 * G, free=5 * G)
    assert fits(Request(1, 0, 1), g)
    assert fits(Request(1, 0, 1, gpu_type="hbm3"), g)
    assert not fits(Request(1, 0, 1, gpu_type="A100"), g)
    assert not fits(Request(1, 0, 1, gpu_memory=10 * G), g)
    assert fits(Request(1, 0, 1, gpu_memory=10 * G), g, assume_empty=True)
    assert not fits(Request(1, 0, 1, gpu_memory=81 * G), g, assume_empty=True)
    assert fits(Request(1, 0, 1, gpu_ids=(2,)), g)
    assert fits(Request(1, 0, 1, gpu_ids=(g.uuid,)), g)
    assert not fits(Request(1, 0, 1, gpu_ids=(1, "GPU-other")), g)


# --- max_running, CPU-only jobs, missing GPUs -----------------------------------------------------------------------

def test_max_running_caps_starts_including_holders():
    queued = [Request(i, 100, 0) for i in range(1, 5)]
    d = schedule(queued, [Holder(9, 100, ())], gpus(0), max_running=3)
    assert d.starts == [(1, ()), (2, ())]
    assert d.waiting == {3: "max_running (3) reached", 4: "max_running (3) reached"}


def test_max_running_counts_gpu_and_cpu_jobs():
    queued = [Request(1, 100, 1), Request(2, 100, 0), Request(3, 100, 1)]
    d = schedule(queued, [], gpus(4), max_running=2)
    assert started(d) == {1: (0,), 2: ()}
    assert d.waiting[3] == "max_running (2) reached"


def test_max_running_zero_means_no_cap():
    d = schedule([Request(i, 100, 0) for i in range(1, 51)], [], gpus(0), max_running=0)
    assert len(d.starts) == 50 and not d.waiting


def test_max_running_already_reached_by_holders():
    d = schedule([Request(1, 0, 0)], [Holder(8, 100, (0,)), Holder(9, 100, (1,))], gpus(2), max_running=2)
    assert d.starts == [] and d.preempts == []
    assert d.waiting == {1: "max_running (2) reached"}


def test_cpu_only_jobs_start_without_gpus_even_when_all_are_held():
    d = schedule([Request(1, 100, 1), Request(2, 100, 0)], [Holder(9, 100, (0,), preemptible=False)], gpus(1))
    assert d.starts == [(2, ())]
    assert 1 in d.waiting


def test_no_gpus_at_all():
    d = schedule([Request(1, 100, 1), Request(2, 100, 0)], [], [])
    assert d.starts == [(2, ())]
    assert d.waiting == {1: "no GPUs"}


def test_probe_failing_gpu_jobs_wait_cpu_jobs_start():
    d = schedule([Request(1, 0, 2), Request(2, 100, 0)], [Holder(5, 100, (0,))], None)
    assert d.starts == [(2, ())]
    assert d.preempts == []
    assert d.waiting[1] == "GPU state unknown (the GPU probe is failing); GPU jobs wait"


# --- can never run here -------------------------------------------------------------------------------------------------

def test_never_fits_too_many_gpus():
    d = schedule([Request(1, 100, 3)], [], gpus(2))
    assert d.waiting[1] == "can never run here: asks for 3 GPU(s), the server has 2"


def test_never_fits_type():
    d = schedule([Request(1, 100, 1, gpu_type="H100")], [], gpus(2))
    assert d.waiting[1] == "can never run here: asks for 1 GPU(s) matching type 'H100', the server has 0"


def test_never_fits_memory_uses_total_memory():
    g = [gpu(0, total=40 * G, free=1 * G), gpu(1, total=80 * G, free=1 * G)]
    assert never_fits(Request(1, 100, 1, gpu_memory=60 * G), g) is None
    assert never_fits(Request(1, 100, 2, gpu_memory=60 * G), g) == \
        "can never run here: asks for 2 GPU(s) matching 61440 MiB free, the server has 1"


def test_never_fits_ids_and_type_together():
    g = [gpu(0, name=A100), gpu(1, name=H100)]
    reason = never_fits(Request(1, 100, 1, gpu_type="H100", gpu_ids=(0,)), g)
    assert reason == "can never run here: asks for 1 GPU(s) matching type 'H100' and ids 0, the server has 0"


def test_never_fits_job_does_not_preempt():
    d = schedule([Request(1, 0, 3)], [Holder(9, 100, (0,))], gpus(2))
    assert d.preempts == []
    assert d.waiting[1].startswith("can never run here")


# --- preemption ----------------------------------------------------------------------------------------------------

def test_more_urgent_job_preempts_a_preemptible_one():
    d = schedule([Request(2, 50, 1)], [Holder(1, 100, (0,))], gpus(1))
    assert d.preempts == [(1, 2)]
    assert d.starts == []
    assert d.waiting[2] == "preempting job(s) 1"


def test_victim_is_the_least_urgent():
    holders = [Holder(1, 80, (0,)), Holder(2, 100, (1,)), Holder(3, 90, (2,))]
    d = schedule([Request(4, 10, 1)], holders, gpus(3))
    assert d.preempts == [(2, 4)]


def test_victim_among_equal_priority_is_the_latest_arrival():
    d = schedule([Request(4, 10, 1)], [Holder(1, 100, (0,)), Holder(2, 100, (1,))], gpus(2))
    assert d.preempts == [(2, 4)]


def test_several_victims_when_one_is_not_enough():
    holders = [Holder(1, 100, (0,)), Holder(2, 90, (1,)), Holder(3, 80, (2,))]
    d = schedule([Request(4, 10, 2)], holders, gpus(3))
    assert d.preempts == [(1, 4), (2, 4)]
    assert d.waiting[4] == "preempting job(s) 1, 2"


def test_free_gpus_count_towards_preemption_and_are_kept():
    # job 4 needs 2: GPU 1 is free, one victim is enough; job 5 (less urgent) must not take GPU 1 meanwhile
    d = schedule([Request(4, 10, 2), Request(5, 50, 1)], [Holder(1, 100, (0,), preemptible=True)], gpus(2))
    assert d.preempts == [(1, 4)]
    assert d.starts == []
    assert 5 in d.waiting


def test_non_preemptible_jobs_are_never_chosen():
    holders = [Holder(1, 1000, (0,), preemptible=False), Holder(2, 60, (1,))]
    d = schedule([Request(3, 0, 1)], holders, gpus(2))
    assert d.preempts == [(2, 3)]
    d = schedule([Request(3, 0, 2)], holders, gpus(2))
    assert d.preempts == []
    assert d.waiting[3] == "waiting for 2 GPU(s), 0 free"


def test_margin_too_small_does_not_preempt():
    d = schedule([Request(2, 95, 1)], [Holder(1, 100, (0,))], gpus(1), preempt_margin=10)
    assert d.preempts == []
    assert d.waiting[2] == "waiting for 1 GPU(s), 0 free"


def test_margin_exactly_reached_preempts():
    d = schedule([Request(2, 90, 1)], [Holder(1, 100, (0,))], gpus(1), preempt_margin=10)
    assert d.preempts == [(1, 2)]


def test_margin_zero_still_needs_a_strictly_more_urgent_job():
    d = schedule([Request(2, 100, 1)], [Holder(1, 100, (0,))], gpus(1), preempt_margin=0)
    assert d.preempts == []
    d = schedule([Request(2, 99, 1)], [Holder(1, 100, (0,))], gpus(1), preempt_margin=0)
    assert d.preempts == [(1, 2)]


def test_less_urgent_job_never_preempts():
    d = schedule([Request(2, 200, 1)], [Holder(1, 100, (0,))], gpus(1))
    assert d.preempts == []


def test_victim_whose_gpus_do_not_fit_is_skipped():
    g = [gpu(0, name=A100), gpu(1, name=H100)]
    holders = [Holder(1, 200, (0,)), Holder(2, 100, (1,))]
    d = schedule([Request(3, 0, 1, gpu_type="H100")], holders, g)
    assert d.preempts == [(2, 3)]


def test_not_enough_victims_means_no_preemption_at_all():
    holders = [Holder(1, 100, (0,)), Holder(2, 100, (1,), preemptible=False)]
    d = schedule([Request(3, 0, 2)], holders, gpus(2))
    assert d.preempts == []
    assert d.waiting[3] == "waiting for 2 GPU(s), 0 free"


def test_one_victim_is_not_preempted_twice_in_a_pass():
    d = schedule([Request(3, 0, 1), Request(4, 1, 1)], [Holder(1, 100, (0,))], gpus(1))
    assert d.preempts == [(1, 3)]
    assert 4 in d.waiting


def test_two_urgent_jobs_preempt_two_victims():
    d = schedule([Request(3, 0, 1), Request(4, 1, 1)], [Holder(1, 100, (0,)), Holder(2, 100, (1,))], gpus(2))
    assert d.preempts == [(2, 3), (1, 4)]


def test_second_pass_counts_stopping_gpus_and_preempts_no_more():
    g = gpus(2)
    first = schedule([Request(3, 0, 1)], [Holder(1, 100, (0,)), Holder(2, 100, (1,))], g)
    assert first.preempts == [(2, 3)]
    # next pass: the victim is stopping, its GPU is coming free for job 3
    second = schedule([Request(3, 0, 1)], [Holder(1, 100, (0,)), Holder(2, 100, (1,), stopping=True)], g)
    assert second.preempts == []
    assert second.starts == []
    assert second.waiting[3] == "waiting for GPUs being freed by stopping jobs"


def test_second_pass_multi_gpu_job_keeps_its_free_gpu():
    g = gpus(3)
    holders = [Holder(1, 100, (0,), stopping=True), Holder(2, 100, (1,))]
    d = schedule([Request(3, 0, 2), Request(4, 50, 1)], holders, g)
    assert d.waiting[3] == "waiting for GPUs being freed by stopping jobs"
    # GPU 2 is free and kept for job 3: job 4 may not start on it (it preempts job 2 for a GPU instead)
    assert d.starts == []
    assert d.preempts == [(2, 4)]


def test_stopping_gpus_claimed_once():
    # one GPU is coming free; the first urgent job claims it, the second must preempt for its own
    holders = [Holder(1, 100, (0,), stopping=True), Holder(2, 100, (1,))]
    d = schedule([Request(3, 0, 1), Request(4, 0, 1)], holders, gpus(2))
    assert d.waiting[3] == "waiting for GPUs being freed by stopping jobs"
    assert d.preempts == [(2, 4)]


def test_stopping_holders_are_not_victims():
    d = schedule([Request(3, 0, 2)], [Holder(1, 100, (0,), stopping=True), Holder(2, 100, (1,), stopping=True)],
                 gpus(3))
    assert d.preempts == []
    assert d.waiting[3] == "waiting for GPUs being freed by stopping jobs"


def test_holder_on_a_gpu_no_longer_listed_does_not_break_scheduling():
    # a stopping holder on GPU 7, which the probe no longer lists: looked up when counting GPUs coming free
    holders = [Holder(1, 100, (0,), preemptible=False), Holder(2, 100, (7,), stopping=True)]
    d = schedule([Request(3, 100, 2), Request(4, 100, 0)], holders, gpus(2))
    assert d.waiting[3].startswith("waiting for 2 GPU(s)")
    assert d.starts == [(4, ())]


def test_victim_on_a_gpu_no_longer_listed_does_not_break_scheduling():
    holders = [Holder(1, 100, (7,)), Holder(2, 100, (0,), preemptible=False)]
    d = schedule([Request(3, 0, 2), Request(4, 100, 0)], holders, gpus(2))
    assert d.waiting[3].startswith("waiting for 2 GPU(s)")
    assert d.starts == [(4, ())]


# --- properties -----------------------------------------------------------------------------------------------------

NAMES = ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "Tesla T4"]


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 6))
    inventory = []
    for i in range(n):
        total = draw(st.sampled_from([16, 40, 80])) * G
        inventory.append(Gpu(index=i, uuid=f"GPU-{i}", name=draw(st.sampled_from(NAMES)), memory_total=total,
                             memory_free=draw(st.integers(0, total // G)) * G,
                             foreign_pids=(1,) if draw(st.booleans()) and draw(st.booleans()) else ()))
    # holders: disjoint subsets of the GPUs (or none, for CPU-only holders)
    order = draw(st.permutations(list(range(n))))
    holders, pos, hid = [], 0, 1000
    for _ in range(draw(st.integers(0, 4))):
        k = draw(st.integers(0, min(2, len(order) - pos)))
        held = tuple(order[pos:pos + k])
        pos += k
        holders.append(Holder(hid, draw(st.integers(-5, 200)), held, draw(st.booleans()), draw(st.booleans())))
        hid += 1
    queued = []
    for rid in draw(st.lists(st.integers(1, 999), unique=True, max_size=8)):
        ngpus = draw(st.integers(0, 3))
        mem = draw(st.sampled_from([None, None, 10 * G, 30 * G, 70 * G])) if ngpus else None
        gtype = draw(st.sampled_from([None, None, "a100", "H100", "t4", "V100"])) if ngpus else None
        ids = tuple(draw(st.lists(st.integers(0, 6), unique=True, max_size=3))) if ngpus and draw(st.booleans()) \
            else ()
        queued.append(Request(rid, draw(st.integers(-5, 200)), ngpus, mem, gtype, ids))
    max_running = draw(st.sampled_from([0, 0, 1, 2, 3, 5]))
    margin = draw(st.sampled_from([0, 1, 10, 50]))
    probe_ok = draw(st.integers(0, 9)) > 0
    return inventory if probe_ok else None, holders, queued, max_running, margin


def urgency(r):
    return (r.priority, r.id)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_decision_invariants(scenario):
    inventory, holders, queued, max_running, margin = scenario
    d = schedule(queued, holders, inventory, max_running=max_running, preempt_margin=margin)
    by_id = {r.id: r for r in queued}
    by_index = {g.index: g for g in inventory or ()}
    held = {i for h in holders for i in h.gpus}

    # every queued job is decided exactly once
    start_ids = [j for j, _ in d.starts]
    assert len(start_ids) == len(set(start_ids))
    assert set(start_ids).isdisjoint(d.waiting)
    assert set(start_ids) | set(d.waiting) == set(by_id)

    # GPUs: never twice, never held, never foreign-busy; exactly the count asked for, each fitting
    given_out = [i for _, idx in d.starts for i in idx]
    assert len(given_out) == len(set(given_out))
    assert not set(given_out) & held
    for job_id, idx in d.starts:
        req = by_id[job_id]
        assert len(idx) == req.gpus
        for i in idx:
            g = by_index[i]
            assert not g.foreign_pids
            assert fits(req, g)
    if inventory is None:
        assert all(by_id[j].gpus == 0 for j in start_ids)

    # max_running
    if max_running and len(holders) <= max_running:
        assert len(holders) + len(d.starts) <= max_running

    # preemption: distinct, preemptible, running victims, by a job at least the margin more urgent that waits
    victims = [v for v, _ in d.preempts]
    assert len(victims) == len(set(victims))
    hold = {h.id: h for h in holders}
    for v, for_job in d.preempts:
        h, req = hold[v], by_id[for_job]
        assert h.preemptible and not h.stopping
        assert h.priority - req.priority >= max(1, margin)
        assert d.waiting[for_job].startswith("preempting job(s)")
        assert any(fits(req, by_index[i], assume_empty=True) for i in h.gpus)

    # no priority inversion. What greedy first fit guarantees, for a job W left waiting:
    #  - max_running reached: no less urgent job starts at all;
    #  - plain "waiting for N GPU(s)": the GPUs given to less urgent jobs were all free at W's turn, so fewer
    #    than N of them fit W (otherwise W would have started on them);
    #  - preempting / waiting for stopping jobs: the GPUs that fit W at its turn are kept for it, so no less
    #    urgent job gets a GPU that fits W.
    # (A job that can never run here, or a GPU job while the probe fails, constrains nobody.)
    for w_id, reason in d.waiting.items():
        w = by_id[w_id]
        later = [(by_id[s], idx) for s, idx in d.starts if urgency(by_id[s]) > urgency(w)]
        later_gpus = [by_index[i] for _, idx in later for i in idx]
        if reason.startswith("max_running"):
            assert not later, (w, reason, later)
        elif reason.startswith("preempting") or reason.startswith("waiting for GPUs being freed"):
            assert not any(fits(w, g) for g in later_gpus), (w, reason, later)
        elif reason.startswith("waiting for "):
            assert sum(1 for g in later_gpus if fits(w, g)) < w.gpus, (w, reason, later)
        else:
            assert reason.startswith(("can never run here", "GPU state unknown", "no GPUs")), reason


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_second_pass_after_preemption_preempts_no_more_for_the_same_job(scenario):
    # Apply a decision (victims become stopping, started jobs become holders) and schedule the rest again.
    # Guarantee: the most urgent job still queued, if it preempted in the first pass, preempts nobody more in
    # the second: its victims' GPUs count as coming free. (A less urgent preemptor may legitimately preempt
    # again when a more urgent waiting job claims those GPUs first.)
    inventory, holders, queued, max_running, margin = scenario
    d1 = schedule(queued, holders, inventory, max_running=max_running, preempt_margin=margin)
    if not d1.preempts:
        return
    by_id = {r.id: r for r in queued}
    victims = {v for v, _ in d1.preempts}
    holders2 = [Holder(h.id, h.priority, h.gpus, h.preemptible, h.stopping or h.id in victims) for h in holders]
    holders2 += [Holder(j, by_id[j].priority, idx) for j, idx in d1.starts]
    queued2 = [r for r in queued if r.id in d1.waiting]
    first = min(queued2, key=urgency)
    if first.id not in {j for _, j in d1.preempts}:
        return
    d2 = schedule(queued2, holders2, inventory, max_running=max_running, preempt_margin=margin)
    assert [p for p in d2.preempts if p[1] == first.id] == []
    assert d2.waiting[first.id] in ("waiting for GPUs being freed by stopping jobs", f"max_running ({max_running}) reached")


# --- per-user caps (issue 7) -------------------------------------------------------------------------------

def _gpus(n):
    from gpusched.model import Gpu
    return [Gpu(index=i, uuid=f"GPU-{i}", name="Sim", memory_total=80 << 30, memory_free=80 << 30) for i in range(n)]


def test_cpu_only_jobs_are_capped_per_user_not_globally():
    from gpusched.policy import Request, schedule
    queued = [Request(i, 100, 0, uid=1000) for i in range(1, 11)] + [Request(20, 100, 0, uid=1001)]
    d = schedule(queued, [], _gpus(0), max_cpu_jobs_per_user=3)
    started = [j for j, _ in d.starts]
    assert started == [1, 2, 3, 20]
    assert "max_cpu_jobs_per_user is 3" in d.waiting[4]


def test_running_cap_counts_jobs_already_running_and_spares_other_users():
    from gpusched.policy import Holder, Request, schedule
    holders = [Holder(1, 100, (0,), uid=1000), Holder(2, 100, (), uid=1000, cpu_only=True)]
    queued = [Request(3, 1, 1, uid=1000), Request(4, 100, 0, uid=1000), Request(5, 100, 1, uid=1001)]
    d = schedule(queued, holders, _gpus(4), max_running_per_user=2)
    assert [j for j, _ in d.starts] == [5]
    assert "2 running, max_running_per_user is 2" in d.waiting[3]
    assert 4 in d.waiting


def test_caps_zero_means_no_cap():
    from gpusched.policy import Request, schedule
    d = schedule([Request(i, 100, 0, uid=7) for i in range(1, 51)], [], _gpus(0))
    assert len(d.starts) == 50
