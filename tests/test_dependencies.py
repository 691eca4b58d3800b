"""The dependency and retry rules alone (gpusched/dependencies.py): every kind against every outcome."""

from __future__ import annotations

import pytest

from gpusched.dependencies import check, resolve, retry_delay
from gpusched.jobfile import JobSpec
from gpusched.model import Job, State

S = State
OUTCOMES = {
    "after": {S.SUCCEEDED: "ready", S.FAILED: "ready", S.CANCELLED: "ready", S.DEPENDENCY_FAILED: "ready"},
    "after_ok": {S.SUCCEEDED: "ready", S.FAILED: "never", S.CANCELLED: "never", S.DEPENDENCY_FAILED: "never"},
    "after_notok": {S.SUCCEEDED: "never", S.FAILED: "ready", S.CANCELLED: "ready", S.DEPENDENCY_FAILED: "ready"},
}


@pytest.mark.parametrize("kind", sorted(OUTCOMES))
def test_each_kind_against_each_outcome(kind):
    for state, verdict in OUTCOMES[kind].items():
        assert check([(kind, 7, "7")], {7: state}.get)[0] == verdict, (kind, state)
    for state in (S.QUEUED, S.STARTING, S.RUNNING, S.STOPPING):       # not over yet (a retry, a preemption)
        assert check([(kind, 7, "7")], {7: state}.get) == ("wait", f"waiting for job 7 {_word(kind)} ({kind})")
    assert check([(kind, 7, "7")], {7: S.REJECTED}.get)[0] == "never"
    assert check([(kind, 0, "prep")], {}.get) == ("never", f"dependency {kind} = 'prep': no such job of yours")


def _word(kind: str) -> str:
    return {"after": "to end", "after_ok": "to succeed", "after_notok": "to fail"}[kind]


def test_never_wins_over_wait_and_all_must_be_met():
    states = {1: S.RUNNING, 2: S.FAILED, 3: S.SUCCEEDED}.get
    assert check([("after", 1, "1"), ("after_ok", 2, "2")], states)[0] == "never"
    assert check([("after_ok", 3, "3"), ("after", 1, "1")], states)[0] == "wait"
    assert check([("after_ok", 3, "3"), ("after_notok", 2, "2")], states) == ("ready", "")


def test_resolve_by_name_takes_the_owners_latest_and_by_id_only_the_owners():
    mine = Job(id=5, user="a", uid=1, source="x", state=S.QUEUED, submitted=0)
    theirs = Job(id=6, user="b", uid=2, source="y", state=S.QUEUED, submitted=0)
    jobs = {5: mine, 6: theirs}
    spec = JobSpec(command="x", name="n", after=(5, 6, "prep"), after_ok=(99,))
    deps = resolve(spec, 1, job=jobs.get, latest=lambda uid, name: 4 if (uid, name) == (1, "prep") else None)
    assert deps == (("after", 5, "5"), ("after", 0, "6"), ("after", 4, "prep"), ("after_ok", 0, "99"))
    assert resolve(spec, 0, job=jobs.get, latest=lambda *a: None, anyone=True)[1] == ("after", 6, "6")


def test_retry_delay_doubles_up_to_the_cap_and_stops_when_spent():
    job = Job(id=1, user="a", uid=1, source="x", state=S.RUNNING, submitted=0,
              spec=JobSpec(command="x", name="n", retries=5))
    delays = []
    for n in range(6):
        job.retried = n
        delays.append(retry_delay(job, {"exit_code": 1}, 10, 60))
    assert delays == [10, 20, 40, 60, 60, None]
    job.retried = 0
    assert retry_delay(job, {"exit_code": 0}, 10, 60) is None
    assert retry_delay(job, {"signal": "SIGKILL"}, 10, 60) == 10          # no retry_on: any failure
    assert retry_delay(job, None, 10, 60) == 10
    job.spec = JobSpec(command="x", name="n", retries=5, retry_on=(3,))
    assert retry_delay(job, {"signal": "SIGKILL"}, 10, 60) is None
    assert retry_delay(job, {"exit_code": 3}, 10, 60) == 10
