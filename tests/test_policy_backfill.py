"""EASY backfill (policy/backfill.py) through schedule(), and its guarantee, property-tested: with exact time
limits the job holding the reservation never starts later than it would with no backfill at all."""

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpusched.policy import Backfill, Holder, Request, schedule
from tests.policyhelp import NOW, H, gpus, hold, req


def three_busy():
    # GPUs 0-2 busy until +2 h, +5 h, +9 h by their limits; GPU 3 free
    return [hold(90, [0], limit=3 * H, ran=H), hold(91, [1], limit=6 * H, ran=H), hold(92, [2], limit=10 * H, ran=H)]


def test_reservation_for_the_first_job_that_cannot_start():
    d = schedule([req(1, gpus=3)], three_busy(), gpus(4), now=NOW, backfill="easy")
    assert d.expected_start == {1: NOW + 5 * H}
    assert "reserved" in d.waiting[1]


def test_a_job_that_ends_before_the_reservation_backfills():
    d = schedule([req(1, gpus=3), req(2, gpus=1, limit=H)], three_busy(), gpus(4), now=NOW, backfill="easy")
    assert d.starts == [(2, (3,))]


def test_a_job_that_would_delay_the_reservation_waits():
    d = schedule([req(1, gpus=3), req(2, gpus=1, limit=8 * H)], three_busy(), gpus(4), now=NOW, backfill="easy")
    assert d.starts == []
    assert "reserved for job 1" in d.waiting[2]
    # greedy (the first policy's way) would have started it and pushed job 1 back to +9 h
    greedy = schedule([req(1, gpus=3), req(2, gpus=1, limit=8 * H)], three_busy(), gpus(4), now=NOW)
    assert greedy.starts == [(2, (3,))]


def test_a_job_may_use_gpus_the_reservation_does_not_need():
    # job 1 needs 2: GPU 3 now and GPU 0 at +2 h; by +2 h nothing else frees, so there is no extra GPU...
    d = schedule([req(1, gpus=2), req(2, gpus=1, limit=8 * H)], three_busy(), gpus(4), now=NOW, backfill="easy")
    assert d.expected_start == {1: NOW + 2 * H} and d.starts == []
    # ...but with a fifth GPU free there is one to spare
    d = schedule([req(1, gpus=2), req(2, gpus=1, limit=8 * H)], three_busy(), gpus(5), now=NOW, backfill="easy")
    assert d.starts == [(1, (3, 4))]


def test_an_estimated_limit_is_not_trusted_to_end_in_time():
    d = schedule([req(1, gpus=3), req(2, gpus=1, limit=H, limit_estimated=True)], three_busy(), gpus(4), now=NOW,
                 backfill="easy")
    assert d.starts == []


def test_running_jobs_without_limits_make_no_promise():
    holders = [hold(90, [0], limit=None, ran=H), hold(91, [1], limit=None, ran=H)]
    d = schedule([req(1, gpus=2), req(2, gpus=1, limit=8 * H)], holders, gpus(3), now=NOW, backfill="easy")
    assert d.expected_start == {}
    assert "no start time can be promised" in d.waiting[1]
    assert d.starts == [(2, (2,))]


def test_backfill_off_is_strict_order():
    d = schedule([req(1, gpus=3), req(2, gpus=1, limit=H)], three_busy(), gpus(4), now=NOW, backfill="off")
    assert d.starts == []
    assert d.waiting[2] == "waiting behind job 1 (backfill is off)"


def test_easy_needs_the_time():
    import pytest
    with pytest.raises(ValueError):
        schedule([req(1)], [], gpus(1), backfill=Backfill.EASY)


def test_nothing_free_still_explains_the_plan():
    holders = [hold(90, [0], limit=3 * H, ran=H), hold(91, [1], limit=6 * H, ran=H)]
    d = schedule([req(1, gpus=2), req(2)], holders, gpus(2), now=NOW, backfill="easy")
    assert d.starts == [] and d.expected_start == {1: NOW + 5 * H}
    assert d.waiting[2] == "waiting for 1 GPU(s), 0 free"


# --- the guarantee ---------------------------------------------------------------------------------------------

def replay(queued: list[Request], holders: list[Holder], n: int, mode: str, types: int = 1
           ) -> tuple[dict[int, float], dict]:
    """Run the policy pass after pass, every job running exactly its limit; no arrivals. Start times by id,
    and the first pass's plan."""
    t = NOW
    ends = {h.id: h.started + h.time_limit for h in holders}
    running = {h.id: h for h in holders}
    waiting = list(queued)
    started: dict[int, float] = {}
    plan = None
    for _ in range(500):
        d = schedule(waiting, list(running.values()), inventory(n, types), now=t, backfill=mode)
        if plan is None:
            plan = d.expected_start
        by_id = {r.id: r for r in waiting}
        for job_id, idx in d.starts:
            r = by_id[job_id]
            started[job_id] = t
            running[job_id] = Holder(job_id, r.priority, idx, submitted=r.submitted, started=t,
                                     time_limit=r.time_limit)
            ends[job_id] = t + r.time_limit
        waiting = [r for r in waiting if r.id not in started]
        if not waiting:
            break
        t = min(ends[i] for i in running)
        for i in [i for i in running if ends[i] == t]:
            del running[i]
    return started, plan or {}


def inventory(n: int, types: int):
    """n GPUs; with two types, the odd ones are H100s and the even ones A100s."""
    g = gpus(n)
    if types == 2:
        g = [dataclasses.replace(x, name="NVIDIA H100 80GB HBM3") if x.index % 2 else x for x in g]
    return g


@st.composite
def situations(draw):
    n = draw(st.integers(1, 6))
    types = draw(st.sampled_from([1, 1, 2]))
    holders, free = [], list(range(n))
    for hid in range(100, 100 + draw(st.integers(0, n))):
        k = draw(st.integers(1, max(1, len(free) // 2 or 1)))
        if len(free) < k:
            break
        on, free = free[:k], free[k:]
        ran = draw(st.integers(0, 5)) * 600.0
        holders.append(Holder(hid, 100, tuple(on), submitted=NOW - ran - 60, started=NOW - ran,
                              time_limit=ran + draw(st.integers(1, 48)) * 600.0))
    queued = []
    for i in range(1, draw(st.integers(1, 8)) + 1):
        gpu_type = draw(st.sampled_from([None, None, "A100", "H100"])) if types == 2 else None
        most = len([g for g in inventory(n, types) if gpu_type is None or gpu_type in g.name])
        if not most:
            gpu_type, most = None, n
        queued.append(Request(i, 100, draw(st.integers(1, most)), gpu_type=gpu_type, submitted=NOW - 30,
                              time_limit=draw(st.integers(1, 48)) * 600.0))
    return n, types, holders, queued


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_the_reserved_job_never_starts_later_than_without_backfill(situation):
    n, types, holders, queued = situation
    with_backfill, plan = replay(queued, holders, n, "easy", types)
    strict, _ = replay(queued, holders, n, "off", types)
    for job_id, promised in plan.items():
        assert with_backfill[job_id] <= strict[job_id], (job_id, with_backfill, strict)
        assert with_backfill[job_id] <= promised
    # and backfill never leaves anyone out
    assert set(with_backfill) == set(strict) == {r.id for r in queued}
