import pytest

from gpusched import jobfile, lifecycle
from gpusched.lifecycle import TransitionError
from gpusched.model import FINAL, Gpu, GpuRef, Job, State

T0 = 1_700_000_000.0


def spec(text: str = 'command = "python train.py"\n'):
    return jobfile.parse(text.encode(), "train.toml", owner_is_root=False)


def gpu(i):
    return Gpu(index=i, uuid=f"GPU-{i}-uuid", name="Sim", memory_total=1 << 30, memory_free=1 << 30)


def queued_job(text: str = 'command = "python train.py"\n', job_id: int = 7) -> Job:
    return lifecycle.accepted(job_id, spec(text), "alice", 1000, 1000, "train.toml", T0)


def running_job(text: str = 'command = "python train.py"\n', gpus=(0, 1)) -> Job:
    job = queued_job(text)
    lifecycle.starting(job, [gpu(i) for i in gpus], "gpusched-job-7.scope", "/var/lib/gpusched/logs/7.log",
                       T0 + 10)
    lifecycle.running(job)
    return job


# --- creation -------------------------------------------------------------------------------------------------

def test_accepted_job_is_queued():
    job = queued_job()
    assert job.state == State.QUEUED
    assert (job.id, job.user, job.uid, job.gid, job.source, job.submitted) == (7, "alice", 1000, 1000,
                                                                               "train.toml", T0)
    assert job.name == "train"
    assert job.attempt == 0 and job.gpus == ()


def test_rejected_job_is_final_without_spec():
    job = lifecycle.rejected(8, "bob", 1001, "bad.toml", "bad.toml:1: invalid TOML", T0)
    assert job.state == State.REJECTED
    assert job.spec is None
    assert job.name == "bad.toml"
    assert job.ended == T0
    assert job.reason == "bad.toml:1: invalid TOML"


# --- allowed transitions ------------------------------------------------------------------------------------------

def test_starting_records_the_attempt():
    job = queued_job()
    job.reason = "waiting for 1 GPU(s), 0 free"
    lifecycle.starting(job, [gpu(2), gpu(3)], "gpusched-job-7.scope", "/logs/7.log", T0 + 5)
    assert job.state == State.STARTING
    assert job.attempt == 1
    assert job.gpus == (GpuRef(2, "GPU-2-uuid"), GpuRef(3, "GPU-3-uuid"))
    assert (job.unit, job.log, job.started, job.reason) == ("gpusched-job-7.scope", "/logs/7.log", T0 + 5, "")


def test_running_clears_reason():
    job = running_job()
    assert job.state == State.RUNNING
    assert job.reason == ""


def test_never_started_goes_back_to_the_queue():
    job = queued_job()
    lifecycle.starting(job, [gpu(0)], "u.scope", "/l", T0 + 1)
    lifecycle.never_started(job, "the daemon restarted before the job began")
    assert job.state == State.QUEUED
    assert job.attempt == 0
    assert job.gpus == () and job.started is None and job.unit == ""
    assert job.reason == "the daemon restarted before the job began"


def test_start_failed_is_final():
    job = queued_job()
    lifecycle.starting(job, [gpu(0)], "u.scope", "/l", T0 + 1)
    lifecycle.start_failed(job, "StartTransientUnit failed", T0 + 2)
    assert job.state == State.FAILED
    assert job.ended == T0 + 2
    assert job.gpus == ()
    assert job.reason == "StartTransientUnit failed"


def test_cancel_queued():
    job = queued_job()
    lifecycle.cancel_queued(job, "cancelled by alice", T0 + 3)
    assert job.state == State.CANCELLED
    assert job.ended == T0 + 3
    assert job.reason == "cancelled by alice"


def test_stopping_records_intent():
    job = running_job()
    lifecycle.stopping(job, "preempt", "preempted by job 9 (priority 0)", T0 + 20)
    assert job.state == State.STOPPING
    assert (job.stop_intent, job.stop_requested, job.reason) == ("preempt", T0 + 20, "preempted by job 9 (priority 0)")


def test_waiting_reports_whether_the_reason_changed():
    job = queued_job()
    assert lifecycle.waiting(job, "no GPUs") is True
    assert job.reason == "no GPUs"
    assert lifecycle.waiting(job, "no GPUs") is False


# --- forbidden transitions ------------------------------------------------------------------------------------------

def _final(state: State) -> Job:
    job = queued_job()
    job.state = state
    return job


@pytest.mark.parametrize("state", sorted(FINAL))
def test_final_states_allow_nothing(state):
    job = _final(state)
    for fn in (lambda: lifecycle.starting(job, [], "u", "l", T0),
               lambda: lifecycle.running(job),
               lambda: lifecycle.stopping(job, "cancel", "r", T0),
               lambda: lifecycle.cancel_queued(job, "r", T0),
               lambda: lifecycle.never_started(job, "r"),
               lambda: lifecycle.start_failed(job, "r", T0),
               lambda: lifecycle.ended(job, {"exit_code": 0}, T0)):
        with pytest.raises(TransitionError):
            fn()
        assert job.state == state


def test_queued_cannot_run_stop_or_end():
    job = queued_job()
    with pytest.raises(TransitionError, match="queued -> running"):
        lifecycle.running(job)
    with pytest.raises(TransitionError):
        lifecycle.stopping(job, "cancel", "r", T0)
    with pytest.raises(TransitionError):
        lifecycle.ended(job, {"exit_code": 0}, T0)
    with pytest.raises(TransitionError):
        lifecycle.never_started(job, "r")
    assert job.state == State.QUEUED


def test_running_can_go_back_to_queue_only_as_never_started():
    # a job re-adopted as running after a crash whose monitor then says it never began goes back to the queue
    job = running_job()
    lifecycle.never_started(job, "r")
    assert (job.state, job.attempt, job.gpus) == (State.QUEUED, 0, ())


def test_running_cannot_be_cancelled_as_queued_or_started_again():
    job = running_job()
    with pytest.raises(TransitionError):
        lifecycle.cancel_queued(job, "r", T0)
    with pytest.raises(TransitionError):
        lifecycle.starting(job, [], "u", "l", T0)
    assert job.state == State.RUNNING
    assert job.attempt == 1


def test_failed_transition_leaves_record_untouched():
    job = running_job()
    before = (job.state, job.attempt, job.gpus, job.unit, job.started)
    with pytest.raises(TransitionError):
        lifecycle.starting(job, [gpu(5)], "other.scope", "/other", T0 + 99)
    assert (job.state, job.attempt, job.gpus, job.unit, job.started) == before


def test_stopping_cannot_restart():
    job = running_job()
    lifecycle.stopping(job, "cancel", "r", T0)
    with pytest.raises(TransitionError):
        lifecycle.running(job)
    with pytest.raises(TransitionError):
        lifecycle.stopping(job, "cancel", "again", T0)


# --- ended ------------------------------------------------------------------------------------------------------------

def test_exit_zero_succeeds():
    job = running_job()
    lifecycle.ended(job, {"exit_code": 0, "ended": T0 + 100}, T0 + 101)
    assert job.state == State.SUCCEEDED
    assert job.exit_code == 0 and job.signal is None
    assert job.ended == T0 + 100
    assert job.reason == ""
    assert job.history == [{"attempt": 1, "started": T0 + 10, "ended": T0 + 100, "outcome": "exited with code 0",
                            "gpus": [0, 1]}]


def test_nonzero_exit_fails_with_exit_code():
    job = running_job()
    lifecycle.ended(job, {"exit_code": 3}, T0 + 50)
    assert job.state == State.FAILED
    assert job.exit_code == 3
    assert job.signal is None
    assert job.ended == T0 + 50
    assert job.reason == "exited with code 3"


def test_signal_fails_with_signal():
    job = running_job()
    lifecycle.ended(job, {"signal": "SIGSEGV", "ended": T0 + 30}, T0 + 31)
    assert job.state == State.FAILED
    assert job.signal == "SIGSEGV"
    assert job.exit_code is None
    assert job.reason == "killed by SIGSEGV"


def test_start_error_result_fails():
    job = running_job()
    lifecycle.ended(job, {"error": "workdir /nope: No such file or directory"}, T0 + 11)
    assert job.state == State.FAILED
    assert job.reason == "could not start: workdir /nope: No such file or directory"


def test_no_result_from_a_running_job_fails():
    job = running_job()
    lifecycle.ended(job, None, T0 + 40)
    assert job.state == State.FAILED
    assert job.exit_code is None and job.signal is None
    assert job.ended == T0 + 40
    assert job.reason == "its scope ended without a result (the monitor was killed)"


def test_time_limit_is_mentioned():
    job = running_job('command = "sleep 1d"\ntime_limit = "1h"\n')
    lifecycle.ended(job, {"signal": "SIGTERM", "ended": T0 + 10 + 3600}, T0 + 3611)
    assert job.state == State.FAILED
    assert job.reason == "killed by SIGTERM (time limit 1h reached)"


def test_time_limit_not_mentioned_when_it_ended_early():
    job = running_job('command = "sleep 1d"\ntime_limit = "1h"\n')
    lifecycle.ended(job, {"signal": "SIGTERM", "ended": T0 + 10 + 60}, T0 + 71)
    assert job.reason == "killed by SIGTERM"


def test_starting_job_can_end_directly():
    job = queued_job()
    lifecycle.starting(job, [], "u.scope", "/l", T0)
    lifecycle.ended(job, {"exit_code": 0}, T0 + 1)
    assert job.state == State.SUCCEEDED
    assert "gpus" not in job.history[0]


def test_preempted_job_goes_back_to_the_queue_with_the_same_id():
    job = running_job()
    lifecycle.stopping(job, "preempt", "preempted by job 9 (priority 0)", T0 + 20)
    lifecycle.ended(job, {"signal": "SIGTERM", "ended": T0 + 25}, T0 + 26)
    assert job.state == State.QUEUED
    assert job.id == 7
    assert job.preemptions == 1
    assert job.gpus == ()
    assert job.unit == "" and job.started is None
    assert job.stop_intent is None and job.stop_requested is None
    assert job.ended is None and job.exit_code is None and job.signal is None
    assert job.history == [{"attempt": 1, "started": T0 + 10, "ended": T0 + 25, "outcome": "killed by SIGTERM",
                            "gpus": [0, 1], "preempted": True, "reason": "preempted by job 9 (priority 0)"}]
    assert job.reason.startswith("preempted (preempted by job 9 (priority 0))")
    assert job.reason.endswith("requeued")


def test_preempted_job_restarts_as_a_new_attempt_and_keeps_history():
    job = running_job()
    lifecycle.stopping(job, "preempt", "p", T0 + 20)
    lifecycle.ended(job, {"exit_code": 0, "ended": T0 + 21}, T0 + 21)
    assert job.state == State.QUEUED
    lifecycle.starting(job, [gpu(3)], "gpusched-job-7.scope", "/l", T0 + 30)
    lifecycle.running(job)
    assert job.attempt == 2
    assert job.gpus == (GpuRef(3, "GPU-3-uuid"),)
    lifecycle.stopping(job, "preempt", "p2", T0 + 40)
    lifecycle.ended(job, None, T0 + 200)
    assert job.state == State.QUEUED
    assert job.preemptions == 2
    assert [h["attempt"] for h in job.history] == [1, 2]
    assert job.history[1]["outcome"] == "killed by SIGKILL after its grace period"
    assert job.history[1]["gpus"] == [3]


def test_cancel_intent_ends_cancelled():
    job = running_job()
    lifecycle.stopping(job, "cancel", "cancelled by alice", T0 + 20)
    lifecycle.ended(job, {"signal": "SIGTERM", "ended": T0 + 22}, T0 + 23)
    assert job.state == State.CANCELLED
    assert job.signal == "SIGTERM"
    assert job.ended == T0 + 22
    assert job.reason == "cancelled by alice; killed by SIGTERM"
    assert job.preemptions == 0
    assert len(job.history) == 1 and "preempted" not in job.history[0]


def test_cancel_intent_wins_over_a_clean_exit():
    job = running_job()
    lifecycle.stopping(job, "cancel", "cancelled by root", T0 + 20)
    lifecycle.ended(job, {"exit_code": 0}, T0 + 21)
    assert job.state == State.CANCELLED
    assert job.exit_code == 0


def test_no_result_while_stopping_means_sigkill_after_grace():
    job = running_job()
    lifecycle.stopping(job, "cancel", "cancelled by alice", T0 + 20)
    lifecycle.ended(job, None, T0 + 200)
    assert job.state == State.CANCELLED
    assert job.signal == "SIGKILL"
    assert job.exit_code is None
    assert job.ended == T0 + 200
    assert job.reason == "cancelled by alice; killed by SIGKILL after its grace period"


def test_describe():
    assert lifecycle.describe({"exit_code": 2}, False) == "exited with code 2"
    assert lifecycle.describe({"signal": "SIGINT"}, False) == "killed by SIGINT"
    assert lifecycle.describe({"error": "boom"}, False) == "could not start: boom"
    assert lifecycle.describe(None, True) == "killed by SIGKILL after its grace period"
    assert lifecycle.describe(None, False) == "its scope ended without a result (the monitor was killed)"
