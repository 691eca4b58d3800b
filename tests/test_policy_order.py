"""The time-aware order (policy/order.py) through schedule(): who starts when there is room for only one."""

import math

from gpusched.policy import JobClass, schedule
from gpusched.policy.order import band, deadline, keyfunc
from tests.policyhelp import NOW, H, gpus, req


def first(queued, n=1, **kw):
    """The job that gets the only free GPU."""
    d = schedule(queued, [], gpus(n), now=NOW, **kw)
    return [j for j, _ in d.starts]


def test_bands_are_factors_of_two_of_a_minute():
    assert [band(s) for s in (0, 60, 61, 120, 121, 3600, 7200, 7201)] == [0, 0, 1, 1, 2, 6, 7, 7]
    assert band(None) == math.inf


def test_shorter_limit_first():
    assert first([req(1, limit=4 * H), req(2, limit=H)]) == [2]


def test_limits_within_a_factor_of_two_are_alike_and_arrival_decides():
    # 40 and 55 minutes share a band; job 1 waited a little longer, so it goes first
    assert first([req(1, limit=40 * 60, waited=300), req(2, limit=55 * 60, waited=0)]) == [1]


def test_no_limit_goes_last():
    assert first([req(1, limit=None), req(2, limit=168 * H)]) == [2]


def test_a_long_job_climbs_as_it_waits():
    # highest response ratio next, in bands: a 16-hour job (band 10) that has waited 5 minutes (band 3) still
    # ranks after a fresh 1-hour job (band 6); once it has waited 17 minutes (band 5) it ranks ahead
    fresh_short = req(1, limit=H)
    assert first([fresh_short, req(2, limit=16 * H, waited=5 * 60)]) == [1]
    assert first([fresh_short, req(2, limit=16 * H, waited=17 * 60)]) == [2]


def test_overdue_jobs_go_first_earliest_deadline_first():
    # aging 2: overdue once it has waited twice its limit; among overdue ones the earliest deadline first
    long_overdue = req(1, limit=24 * H, waited=49 * H)          # deadline 1 h ago
    short_overdue = req(2, limit=H, waited=3 * H - 1)           # deadline 1 h ago, 1 s later
    assert first([short_overdue, long_overdue], aging=2) == [1]
    assert first([req(3, limit=60), short_overdue], aging=2) == [2]


def test_overdue_beats_an_equal_response_ratio():
    # both have waited about twice their 1-hour limit (same ratio band); the wider one would go first, but the
    # 1-GPU job is overdue (exactly twice) and the 2-GPU job is a minute short of it
    overdue, almost = req(1, gpus=1, waited=2 * H), req(2, gpus=2, waited=2 * H - 60)
    assert first([overdue, almost], n=2) == [2]
    assert first([overdue, almost], n=2, aging=2) == [1]


def test_deadline_is_aging_times_the_limit():
    r = req(1, limit=3 * H, waited=0)
    assert deadline(r, 2) == NOW + 6 * H
    assert deadline(req(2, limit=None), 1) == NOW + 7 * 86400


def test_wider_job_first_within_a_band():
    assert first([req(1, gpus=1), req(2, gpus=2)], n=2) == [2]


def test_user_below_their_share_first():
    standing = {1000: (2.0, 0.0), 1001: (0.5, 0.0)}
    assert first([req(1, uid=1000), req(2, uid=1001)], standing=standing) == [2]


def test_priority_orders_only_the_users_own_jobs():
    # user 1000's priority 0 job does not pass user 1001, who is further below their share...
    standing = {1000: (1.0, 0.0), 1001: (0.5, 0.0)}
    queued = [req(1, uid=1000, priority=0), req(2, uid=1000, priority=100), req(3, uid=1001, priority=100)]
    assert first(queued, standing=standing) == [3]
    # ...but it does go before its own user's other job
    assert first(queued, n=2, standing=standing) == [3, 1]
    # without a clock (the first policy) priority is global
    d = schedule(queued, [], gpus(1))
    assert d.starts == [(1, (0,))]


def test_class_rank_comes_first():
    classes = {"debug": JobClass("debug", priority=0), "normal": JobClass("normal", priority=10)}
    queued = [req(1, limit=60, job_class="normal", waited=99 * H), req(2, limit=168 * H, job_class="debug")]
    assert first(queued, classes=classes, aging=2) == [2]


def test_key_without_now_is_the_first_policys():
    key = keyfunc()
    assert sorted([req(2, priority=5), req(1, priority=5), req(3, priority=1)], key=key)[0].id == 3
    assert [r.id for r in sorted([req(2, priority=5), req(1, priority=5)], key=key)] == [1, 2]


def test_ahead_lists_the_jobs_ordered_before_one():
    from gpusched.policy.order import ahead
    queued = [req(1, limit=4 * H), req(2, limit=H), req(3, limit=60), req(4, limit=16 * H)]
    key = keyfunc(now=NOW, aging=2)
    assert [r.id for r in ahead(queued[0], queued, key)] == [3, 2]
    assert ahead(queued[2], queued, key) == []
