"""schedule() with only the first policy's arguments decides exactly as the first policy did (tests/policy_v1.py,
a frozen copy): same starts on the same GPUs, same preemptions, same reasons."""

from hypothesis import HealthCheck, given, settings

from gpusched.policy import schedule
from tests import policy_v1
from tests.test_policy import scenarios


def _v1(r):
    return policy_v1.Request(r.id, r.priority, r.gpus, r.gpu_memory, r.gpu_type, r.gpu_ids, r.uid)


def _v1h(h):
    return policy_v1.Holder(h.id, h.priority, h.gpus, h.preemptible, h.stopping, h.uid, h.cpu_only)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_same_decisions_as_the_first_policy(scenario):
    inventory, holders, queued, max_running, margin = scenario
    new = schedule(queued, holders, inventory, max_running=max_running, preempt_margin=margin)
    old = policy_v1.schedule([_v1(r) for r in queued], [_v1h(h) for h in holders], inventory,
                             max_running=max_running, preempt_margin=margin)
    assert new.starts == old.starts
    assert new.preempts == old.preempts
    assert new.waiting == old.waiting
    assert new.expected_start == {}
