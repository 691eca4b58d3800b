"""Job arrays (issue 9): a [sweep] file's rules (jobfile.py, sweep.py), its jobs in the engine (accepted all or
none, max_parallel, expiry), the verbs on an array or one element (api.Manager), the folded listing, the store
(the job file written once, the records read back), and the intake (an array counts against
max_queued_per_user; an array half-recorded when the daemon died is made again whole)."""

from __future__ import annotations

import itertools
import os
import pwd
import shlex

import pytest

from gpusched import config as configmod
from gpusched import jobfile, lifecycle, listing, sweep
from gpusched.access import Access
from gpusched.api import Manager
from gpusched.errors import Invalid, NoSuchJob, NotAllowed
from gpusched.jobfile import JobFileError, Limits, parse
from gpusched.model import ACTIVE, State
from gpusched.store import Store
from gpusched.testing import EPOCH, MemoryRecorder, World
from tests import test_daemon

make = test_daemon.make             # the fixture: the daemon wired as app.build wires it, with fakes

SWEEP = """name = "train"
command = "python train.py --lr {lr} --seed {seed} --out run-{index}"
gpus = 1
[sweep]
lr = [1e-3, 3e-4]
seed = [1, 2, 3]
max_parallel = 2
"""


def parsed(text: str, **limits) -> jobfile.JobSpec:
    return parse(text.encode(), "sweep.toml", owner_is_root=False, limits=Limits(**limits))


def problems(text: str, **limits) -> list[str]:
    with pytest.raises(JobFileError) as e:
        parsed(text, **limits)
    return str(e.value).splitlines()


# --- the rules: parsing and expansion ---------------------------------------------------------------------

def test_a_sweep_is_the_product_of_its_lists_the_last_key_fastest():
    spec = parsed(SWEEP)
    assert spec.sweep == (("lr", (0.001, 0.0003)), ("seed", (1, 2, 3))) and spec.max_parallel == 2
    assert sweep.size(spec.sweep) == 6
    got = [tuple(v for _, v in sweep.values(spec.sweep, i)) for i in range(6)]
    assert got == list(itertools.product((0.001, 0.0003), (1, 2, 3)))


def test_an_element_has_its_values_in_command_env_and_name():
    spec = parsed(SWEEP)
    e = sweep.element(spec, 4, array_id=12)                 # lr 3e-4, seed 2
    assert e.name == "train[4]" and e.sweep == () and e.max_parallel == 2
    assert e.command == "python train.py --lr 0.0003 --seed 2 --out run-4"
    assert {k: v for k, v in e.env.items() if k.startswith("GPUSCHED_")} == {
        "GPUSCHED_SWEEP_LR": "0.0003", "GPUSCHED_SWEEP_SEED": "2", "GPUSCHED_ARRAY_ID": "12",
        "GPUSCHED_ARRAY_INDEX": "4", "GPUSCHED_ARRAY_SIZE": "6"}


def test_strings_are_shell_quoted_in_a_string_command_and_verbatim_in_an_argv():
    evil = "a b'; rm -rf ~ #"
    text = f'command = "echo {{msg}} {{{{literal}}}}"\n[sweep]\nmsg = [{evil!r}, "x"]\nflag = [true]\n'
    e = sweep.element(parsed(text), 0, 1)
    assert shlex.split(e.command) == ["echo", evil, "{literal}"]
    assert e.env["GPUSCHED_SWEEP_FLAG"] == "true"
    argv = 'command = ["python", "--msg={msg}", "{{x}}"]\n[sweep]\nmsg = ["a b; c", "d"]\n'
    assert sweep.element(parsed(argv), 0, 1).command == ("python", "--msg=a b; c", "{x}")


def test_without_a_sweep_braces_are_plain_text():
    assert parsed('command = "awk \'{print $1}\' f"\n').command == "awk '{print $1}' f"


@pytest.mark.parametrize("text, expected", [
    ('command = "x {nope}"\n[sweep]\nlr = [1]\n', "sweep.toml:1: command: {nope}: no such key in [sweep]"),
    ('command = "awk {print}"\n[sweep]\nlr = [1]\n', "no such key"),
    ('command = "x {"\n[sweep]\nlr = [1]\n', "sweep.toml:1: command: a lone '{'"),
    ('command = "x"\n[sweep]\nlr = []\n', "sweep.toml:3: sweep.lr: the list is empty"),
    ('command = "x"\n[sweep]\nlr = 1\n', "sweep.toml:3: sweep.lr: expected a list of values"),
    ('command = "x"\n[sweep]\nlr = [[1]]\n', "sweep.toml:3: sweep.lr: values must be strings, integers"),
    ('command = "x"\n[sweep]\nlr = [{a = 1}]\n', "values must be strings"),
    ('command = "x"\n[sweep]\n"a-b" = [1]\n', "sweep.toml:3: sweep.a-b: not a sweep key"),
    ('command = "x"\n[sweep]\nindex = [1]\n', "sweep.index: {index} is the element's index"),
    ('command = "x"\n[sweep]\nlr = [1]\nLR = [2]\n', "sweep.toml:4: sweep.LR: names the same variable as 'lr'"),
    ('command = "x"\n[sweep]\nmax_parallel = 2\n', "sweep.toml:2: sweep: has no list of values"),
    ('command = "x"\n[sweep]\nlr = [1]\nmax_parallel = 0\n', "sweep.toml:4: sweep.max_parallel: must be positive"),
    ('command = "x"\nmax_parallel = 2\n[sweep]\nlr = [1]\n', "sweep.toml:2: max_parallel: belongs in the [sweep]"),
    ('command = "x"\nsingleton = true\n[sweep]\nlr = [1]\n', "sweep.toml:2: singleton: can't be set with [sweep]"),
    ('command = "x"\nsweep = [1]\n', "sweep.toml:2: sweep: expected a table"),
    ('command = ["{p}"]\n[sweep]\np = ["", "ls"]\n', "the program (the command's first element) is empty"),
    ('command = "x"\n[sweep]\ns = ["' + "v" * 1025 + '"]\n', "longer than 1024 characters"),
])
def test_bad_sweeps_are_rejected_naming_file_line_and_key(text, expected):
    assert any(expected in p for p in problems(text)), problems(text)


def test_the_array_size_is_bounded_by_the_servers_max_array_size():
    text = 'command = "x"\n[sweep]\na = [1, 2, 3, 4, 5]\nb = [1, 2, 3]\n'
    assert problems(text, max_array_size=10) == [
        "sweep.toml:2: sweep: expands into 15 jobs; at most 10 (max_array_size)"]
    assert sweep.size(parsed(text, max_array_size=15).sweep) == 15
    long = 'command = "x"\n[sweep]\na = [' + ", ".join(map(str, range(11))) + "]\n"
    assert "sweep.toml:3: sweep.a: 11 values: more than the 10 jobs" in problems(long, max_array_size=10)[0]
    # read back (no limits) only the hard ceiling applies
    assert sweep.size(parse(text.encode(), "x", owner_is_root=True).sweep) == 15
    many = 'command = "x"\n[sweep]\n' + "".join(f"k{i} = [1, 2]\n" for i in range(17))
    assert any("at most 16" in p for p in problems(many, max_array_size=1 << 20))


def test_an_elements_command_and_the_whole_array_are_bounded():
    text = 'command = "' + "{v}" * 2000 + '"\n[sweep]\nv = ["' + "x" * 1000 + '"]\n'
    assert any("more than 256 {placeholders}" in p for p in problems(text))
    text = 'command = "' + "y" * 900_000 + "{v}" * 200 + '"\n[sweep]\nv = ["' + "x" * 1000 + '"]\n'
    assert any("over 1048576 bytes" in p for p in problems(text))
    # a small file must not become gigabytes: jobs x the longest element's command, and jobs x the file's size
    values = ", ".join(f'"{i:03}"' for i in range(1000))
    text = 'command = "echo {v} ' + "z" * 20_000 + '"\n[sweep]\nv = [' + values + ']\n'
    assert any("command: 1000 jobs of a command of up to" in p and "over 16 MiB in all" in p for p in problems(text))
    text = 'command = "echo {v}"\n' + "# " + "c" * 20_000 + '\n[sweep]\nv = [' + values + ']\n'
    assert any("sweep: 1000 jobs of a" in p and "over 16 MiB in all" in p for p in problems(text))
    assert parsed('command = "echo {v}"\n[sweep]\nv = [' + values + ']\n').sweep


def test_the_config_key_is_checked():
    assert configmod.parse("max_array_size = 50\n").job_limits().max_array_size == 50
    assert configmod.Config().job_limits().max_array_size == 1000
    for bad in ("0", "true", "1000000"):
        with pytest.raises(configmod.ConfigError, match="max_array_size"):
            configmod.parse(f"max_array_size = {bad}\n")


# --- the engine ---------------------------------------------------------------------------------------------

def submit_array(w: World, text: str = SWEEP, uid: int = 1000) -> list:
    spec = parse(text.encode(), "sweep.toml", owner_is_root=False)
    n = sweep.size(spec.sweep)
    ids = list(range(w._next_id, w._next_id + n))
    w._next_id += n
    try:
        user = pwd.getpwuid(uid).pw_name                    # as the intake names it (and access.py the caller)
    except KeyError:
        user = f"user{uid}"
    return w.engine.accept_array(ids, spec, user, uid, uid, "sweep.toml", data=text.encode())


def test_an_array_is_its_jobs_each_a_job_of_its_own():
    w = World(gpus=4)
    jobs = submit_array(w)
    assert [j.name for j in jobs] == [f"train[{i}]" for i in range(6)]
    assert {j.array_id for j in jobs} == {jobs[0].id} and [j.array_index for j in jobs] == list(range(6))
    assert jobs[5].spec.command == "python train.py --lr 0.0003 --seed 3 --out run-5"
    assert w.engine.array(jobs[0]) == jobs and w.engine.array(jobs[1]) is None
    assert w.engine.element(jobs[0].id, 3) is jobs[3]
    with pytest.raises(NoSuchJob):
        w.engine.element(jobs[0].id, 6)
    assert w.engine.queued_of(1000) == 6
    # written once: every element's record refers to the same bytes
    assert len({id(w.recorder.sources[j.id]) for j in jobs}) == 1
    d = w.recorder.records[jobs[2].id][0]
    assert (d["array_id"], d["array_index"], d["max_parallel"]) == (jobs[0].id, 2, 2)
    assert sum("accepted array" in m for m, *_ in w.log.lines) == 1


def test_max_parallel_never_lets_more_elements_run_at_once():
    w = World(gpus=4, duration=lambda job: 10 + job.array_index)
    jobs = submit_array(w)
    other = w.submit(jobfile.JobSpec(command="x", name="alone"))    # not held back by the array
    w.settle()
    assert sum(j.state in ACTIVE for j in jobs) == 2 and other.state == State.RUNNING
    waiting = [j for j in jobs if j.state == State.QUEUED]
    assert all("max_parallel: array" in j.reason for j in waiting), [j.reason for j in waiting]
    w.run_until(EPOCH + 1000)
    assert all(j.state == State.SUCCEEDED for j in jobs)
    spans = [(j.started, j.ended) for j in jobs]
    for t in sorted({s for s, _ in spans}):
        assert sum(s <= t < e for s, e in spans) <= 2, spans
    assert max(s for s, _ in spans) > min(e for _, e in spans)     # it did run them in turns


def test_an_array_that_cant_be_recorded_leaves_nothing():
    w = World(gpus=4)
    w.recorder.full = True
    with pytest.raises(OSError):
        submit_array(w)
    assert not w.engine.jobs and not w.recorder.records and w.engine.queued_of(1000) == 0


def test_an_array_is_recorded_over_several_turns_and_counted_as_queued_meanwhile():
    w = World(gpus=4)
    turns = []
    w.engine.soon = turns.append                              # the main loop's idle calls, run by hand below
    w.clock.monotonic = iter(range(0, 10**6)).__next__        # each look at the clock: 1 s later
    spec = parse(SWEEP.encode(), "sweep.toml", owner_is_root=False)
    settled, failures = [], []
    jobs = w.engine.accept_array(list(range(1, 7)), spec, "u", 1000, 1000, "s.toml", data=b"x",
                                 settle=lambda: settled.append(1), failed=failures.append)
    assert not w.engine.jobs and w.engine.queued_of(1000) == 6 and len(turns) == 1
    n = 0
    while turns[0]():
        n += 1
        assert not w.engine.jobs and not settled
    assert n >= 5 and settled == [1] and not failures          # one record per turn with this clock
    assert [w.engine.jobs[j.id] for j in jobs] == jobs and w.engine.queued_of(1000) == 6
    # a failure halfway: nothing stays, the count goes back, `failed` is told
    turns.clear()
    w.engine.accept_array(list(range(7, 13)), spec, "u", 1000, 1000, "s.toml", data=b"x", failed=failures.append)
    assert turns[0]() is True
    w.recorder.full = True
    while turns[0]():
        pass
    assert len(failures) == 1 and isinstance(failures[0], OSError)
    assert not any(i in w.engine.jobs or i in w.recorder.records for i in range(7, 13))
    assert w.engine.queued_of(1000) == 6


def test_a_settle_that_fails_leaves_nothing_either():
    w = World(gpus=4)
    spec = parse(SWEEP.encode(), "sweep.toml", owner_is_root=False)

    def settle():
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        w.engine.accept_array(list(range(1, 7)), spec, "u", 1000, 1000, "s.toml", settle=settle)
    assert not w.engine.jobs and not w.recorder.records and not w.engine._arrays


def test_an_array_half_recorded_is_discarded_and_a_restart_keeps_a_whole_one():
    rec = MemoryRecorder()
    w = World(gpus=0, recorder=rec)
    jobs = submit_array(w)
    w2 = World(gpus=0, recorder=rec)                         # a restart: elements re-made from the records
    assert [w2.engine.jobs[j.id].name for j in jobs] == [j.name for j in jobs]
    assert w2.engine.array(w2.engine.jobs[jobs[0].id]) is not None
    del rec.records[jobs[0].id]                              # as if the first element's record never landed
    w3 = World(gpus=0, recorder=rec)
    assert w3.engine.discard_array(jobs[0].id) == 5
    assert not w3.engine.jobs and not rec.records


def test_the_first_element_is_kept_while_the_array_lives():
    cfg = configmod.Config(keep_finished=60.0)
    w = World(gpus=6, cfg=cfg, duration=lambda job: 5 if job.array_index == 0 else 5000)
    jobs = submit_array(w, SWEEP.replace("max_parallel = 2", "max_parallel = 6"))
    w.run_until(EPOCH + 1000)
    assert jobs[0].state == State.SUCCEEDED and jobs[1].state == State.RUNNING
    w.engine.expire()
    _all(w.engine.expire_batch)
    assert jobs[0].id in w.engine.jobs                         # its id still names the array
    w.run_until(EPOCH + 6000)
    w.clock.set(EPOCH + 7000)
    w.engine.expire()
    _all(w.engine.expire_batch)
    assert not w.engine.jobs                                  # all ended long ago: all gone


def _all(fn):
    while fn():
        pass


def test_a_dependency_on_an_arrays_id_or_name_waits_for_all_its_jobs():
    w = World(gpus=4, duration=lambda job: 10 + 10 * job.array_index,
              exit_code=lambda job: 1 if job.spec.name == "train[4]" else 0)
    jobs = submit_array(w, SWEEP.replace("max_parallel = 2", "max_parallel = 6"))
    by_id = w.submit(jobfile.JobSpec(command="x", name="eval", gpus=0, after_ok=(jobs[0].id,)))
    by_name = w.submit(jobfile.JobSpec(command="x", name="report", gpus=0, after=("train",)))
    assert by_name.after == (("after", jobs[0].id, "train"),)       # the array's name means the array
    w.run_until(EPOCH + 30)
    assert jobs[0].state == State.SUCCEEDED and by_id.state == by_name.state == State.QUEUED
    assert f"waiting for job {jobs[0].id} to succeed" in by_id.reason
    w.run_until(EPOCH + 200)
    assert jobs[4].state == State.FAILED
    assert by_id.state == State.DEPENDENCY_FAILED and f"job {jobs[0].id} failed" in by_id.reason
    assert by_name.state == State.SUCCEEDED and by_name.started >= max(j.ended for j in jobs)


def test_array_state():
    from gpusched.dependencies import array_state
    S = State
    assert array_state([S.SUCCEEDED, S.RUNNING]) == S.QUEUED
    assert array_state([S.SUCCEEDED, S.SUCCEEDED]) == S.SUCCEEDED
    assert array_state([S.SUCCEEDED, S.CANCELLED, S.FAILED]) == S.FAILED
    assert array_state([S.CANCELLED, S.SUCCEEDED]) == S.CANCELLED


# --- the verbs: an array's id, one element, ownership -------------------------------------------------------

def manager_with_array(gpus=4):
    w = World(gpus=gpus, duration=lambda job: 100)
    jobs = submit_array(w, SWEEP, uid=os.getuid() if os.getuid() else 65534)
    return w, jobs, Manager(w.engine, Access())


def test_cancel_of_the_array_id_cancels_every_element_and_of_an_element_only_it():
    w, jobs, m = manager_with_array()
    owner = jobs[0].uid
    w.settle()
    assert m.element_act("cancel", jobs[0].id, 3, owner) == "cancelled"
    assert jobs[3].state == State.CANCELLED and jobs[2].state == State.QUEUED
    assert m.act("cancel", jobs[5].id, owner) == "cancelled"          # an element's own id: that element
    answer = m.act("cancel", jobs[0].id, owner)                       # the array's id: all the rest
    assert answer == f"array {jobs[0].id}: 2 stopping, 2 cancelled (2 left as they were)", answer
    w.run_until(EPOCH + 10)
    assert all(j.state == State.CANCELLED for j in jobs)
    with pytest.raises(Invalid, match="no job of it can be cancelled"):
        m.act("cancel", jobs[0].id, owner)


def test_hold_and_release_act_on_the_array_and_others_may_not():
    w, jobs, m = manager_with_array(gpus=0)
    owner = jobs[0].uid
    with pytest.raises(NotAllowed):
        m.act("hold", jobs[0].id, owner + 1)
    with pytest.raises(NotAllowed):
        m.element_act("cancel", jobs[0].id, 1, owner + 1)
    assert m.act("hold", jobs[0].id, owner) == f"array {jobs[0].id}: 6 held"
    assert all(j.held for j in jobs)
    assert m.element_act("release", jobs[0].id, 0, owner) == "released"
    assert m.act("release", jobs[0].id, 0) == f"array {jobs[0].id}: 5 released (1 left as they were)"   # root
    assert not any(j.held for j in jobs)
    with pytest.raises(Invalid, match="can be released"):
        m.act("release", jobs[0].id, owner)


def test_an_admins_hold_on_one_element_is_left_when_the_owner_releases_the_array():
    w, jobs, m = manager_with_array(gpus=0)
    owner = jobs[0].uid
    m.element_act("hold", jobs[0].id, 1, 0)                  # root holds one element
    m.act("hold", jobs[0].id, owner)
    assert m.act("release", jobs[0].id, owner) == f"array {jobs[0].id}: 5 released (1 left as they were)"
    assert jobs[1].held == "root" and all(not j.held for j in jobs if j is not jobs[1])


# --- the listing --------------------------------------------------------------------------------------------

def test_list_folds_an_array_into_one_line_counting_every_state():
    w, jobs, m = manager_with_array()
    w.settle()
    m.element_act("cancel", jobs[0].id, 5, jobs[0].uid)
    m.element_act("hold", jobs[0].id, 4, jobs[0].uid)
    text, last = w.engine.page(False, 0, Access().caller(0), True, 1 << 20, 100, fold=True)
    rows = text.strip('"').split("\\n")
    assert len(rows) == 2 and rows[0].startswith("ID"), rows     # header + one row for six jobs
    assert rows[1].startswith(f"{jobs[0].id}[0-5] ") and "array" in rows[1] and "train " in rows[1]
    assert rows[1].endswith("2 running, 2 queued, 1 held, 1 cancelled"), rows[1]
    text, _ = w.engine.page(False, 0, Access().caller(0), True, 1 << 20, 100)
    assert text.count("\\n") == 5                               # unfolded: header + 5 live jobs
    # a page that starts inside the array doesn't list it again
    text, _ = w.engine.page(False, jobs[0].id, Access().caller(0), True, 1 << 20, 100, fold=True)
    assert "train" not in text


def test_fold_counts():
    job = lifecycle.accepted(1, jobfile.JobSpec(command="x", name="a"), "u", 1, 1, "s", 0.0)
    held = lifecycle.accepted(2, jobfile.JobSpec(command="x", name="a"), "u", 1, 1, "s", 0.0)
    held.held = "u"
    assert listing.fold_counts([job, held, job]) == {"queued": 2, "held": 1}


# --- the store: written once, read back whole ---------------------------------------------------------------

def stored_array(tmp_path, n_text=SWEEP):
    store = Store(str(tmp_path))
    store.init()
    spec = parse(n_text.encode(), "sweep.toml", owner_is_root=False)
    ids = [store.allocate_id()] + store.allocate_ids(sweep.size(spec.sweep) - 1)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    jobs = []
    for i, job_id in enumerate(ids):
        job = lifecycle.accepted(job_id, sweep.element(spec, i, ids[0]), "u", 1000, 1000, "sweep.toml", 1.0)
        job.array_id, job.array_index = ids[0], i
        jobs.append(job)
    return store, jobs


def test_the_store_writes_the_file_once_and_reads_each_element_back(tmp_path, monkeypatch):
    store, jobs = stored_array(tmp_path)
    list(store.create_array(jobs, SWEEP.encode()))              # every step
    assert os.stat(store.source_path(jobs[3].id)).st_nlink == 6            # one file, six names
    parses = []
    real = jobfile.parse
    monkeypatch.setattr(jobfile, "parse", lambda *a, **k: parses.append(1) or real(*a, **k))
    again = {j.id: j for j in Store(str(tmp_path)).load_jobs_safely(lambda n, e: pytest.fail(f"{n}: {e}"))}
    assert len(parses) == 1                                      # read back: the file parsed once, not 6 times
    for job in jobs:
        assert again[job.id].spec == job.spec and again[job.id].name == job.name
        assert (again[job.id].array_id, again[job.id].array_index) == (job.array_id, job.array_index)


def test_the_store_leaves_nothing_when_an_array_cant_be_written(tmp_path, monkeypatch):
    store, jobs = stored_array(tmp_path)
    real, calls = os.link, []

    def link(a, b):
        calls.append(b)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(a, b)
    monkeypatch.setattr(os, "link", link)
    with pytest.raises(OSError):
        list(store.create_array(jobs, SWEEP.encode()))
    assert os.listdir(store.jobs_dir) == [] and os.listdir(store.status_dir) == []


# --- the intake: counted against max_queued_per_user, made whole after a crash ------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the spool must be root-owned: needs root")


def dropped(d, name: str, text: str, uid: int = 0) -> int:
    """tests/test_daemon.py's drop, then the main loop's turns until it is idle: an array is recorded over a
    few of them. Returns the newest job id."""
    from gi.repository import GLib
    path = os.path.join(d.intake.spool.root, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)
    d.intake.ingest(name)
    while GLib.MainContext.default().iteration(False):
        pass
    return max(d.engine.jobs)


@needs_root
def test_an_array_counts_as_its_jobs_against_max_queued_per_user(make):
    d = make(max_queued_per_user=8, max_array_size=6)
    nobody = pwd.getpwnam("nobody").pw_uid
    first = dropped(d, "a.toml", SWEEP, uid=nobody)
    head = d.engine.jobs[first - 5]
    assert head.array_id == head.id and len(d.engine.array(head)) == 6
    assert d.engine.queued_of(nobody) + sum(j.state in ACTIVE for j in d.engine.array(head)) == 6
    second = dropped(d, "b.toml", SWEEP, uid=nobody)                       # 6 + 6 > 8: rejected
    job = d.engine.jobs[second]
    assert job.state == State.REJECTED and "makes 6 jobs" in job.reason and "max_queued_per_user = 8" in job.reason
    big = dropped(d, "c.toml", SWEEP.replace("seed = [1, 2, 3]", "seed = [1, 2, 3, 4]"), uid=nobody)
    assert "expands into 8 jobs; at most 6 (max_array_size)" in d.engine.jobs[big].reason
    assert os.path.exists(os.path.join(d.intake.spool.root, ".rejected")) and any(
        n.endswith("c.toml") for n in os.listdir(os.path.join(d.intake.spool.root, ".rejected")))


@needs_root
def test_an_array_whose_intake_was_cut_short_is_made_again_whole(make):
    d = make()
    first = dropped(d, "a.toml", SWEEP) - 5                     # drop gives the newest id: the last element's
    ids = [j.id for j in d.engine.array(d.engine.jobs[first])]
    # as if the daemon died before the first element's record landed: no record of its id, its entry in .work/
    os.unlink(d.engine.recorder.store.record_path(first))
    with open(d.intake.spool._work_path(first, "a.toml"), "w") as f:
        f.write(SWEEP)
    d2 = make()
    from gi.repository import GLib
    while GLib.MainContext.default().iteration(False):   # the array is recorded over main-loop turns
        pass
    again = d2.engine.jobs[first]
    assert [j.array_index for j in d2.engine.array(again)] == list(range(6))
    assert not any(i in d2.engine.jobs for i in ids[1:]), "the half-made elements are gone"
    assert not any(os.path.exists(d2.engine.recorder.store.record_path(i)) for i in ids[1:])
    assert not os.listdir(d2.intake.spool.work)



def test_history_by_name_finds_an_arrays_jobs_by_the_name_its_file_gave():
    w = World(gpus=4, duration=lambda job: 1)
    jobs = submit_array(w)
    w.run_until(w.clock.time() + 100)
    found, more = w.engine.finished(None, "train", "", 0.0, 100)
    assert [j.id for j in found] == [j.id for j in jobs] and more == 0
    assert [j.id for j in w.engine.finished(None, "train[2]", "", 0.0, 100)[0]] == [jobs[2].id]
