import json
from types import SimpleNamespace

import pytest

from gpusched import api, lifecycle
from gpusched.access import Access
from gpusched.api import Api, Manager
from gpusched.errors import NoSuchJob
from gpusched.jobfile import JobSpec
from gpusched.listing import Listing
from gpusched.model import FINAL, State
from gpusched.testing import FakeClock

ALICE, BOB = 1000, 1001


class DBus:
    def GetConnectionUnixUser(self, sender):
        return {":1.alice": ALICE, ":1.bob": BOB, ":1.root": 0}[sender]


class Bus:
    def get(self, name, path):
        return DBus()


class Engine:
    """Stands in for the engine: a job table, cancels recorded, and a bug in gpu_table."""

    def __init__(self, jobs):
        self.jobs = {j.id: j for j in jobs}
        self.live = {j.id: j for j in jobs if j.state not in FINAL}
        self.listing = Listing()
        self.cancelled = []
        self.clock = FakeClock()                       # show's budget of the daemon's time (callbudget.py)

    def get(self, job_id):
        if job_id not in self.jobs:
            raise NoSuchJob(f"no job {job_id}")
        return self.jobs[job_id]

    def page(self, all, after, viewer, table, max_bytes, max_count, fold=False, submitted=None):
        jobs = self.jobs if all else self.live
        ids = sorted(i for i in jobs if i > after)
        return self.listing.page((jobs[i] for i in ids), viewer, table, not after, max_bytes, max_count,
                                 submitted=submitted)

    def array(self, job):
        return None                                    # no job arrays here (tests/test_arrays.py has them)

    def explain(self, job):
        return {"ahead": "none: it is first in line"} if job.state == State.QUEUED else {}

    def cancel(self, job, by, now=False):
        self.cancelled.append((job.id, by.uid, now))
        return "killed" if now else "stopping"

    def gpu_table(self):
        raise KeyError("a bug")


def Daemon(jobs):
    return Manager(Engine(jobs), Access())


def job(i, uid=ALICE, user="alice", tags=(), command="true"):
    return lifecycle.accepted(i, JobSpec(command=command, name=f"j{i}", tags=tuple(tags)), user, uid, uid,
                              f"{i}.toml", 1_700_000_000.0)


def ctx(who):
    return SimpleNamespace(sender=f":1.{who}")


def list_all(a, who, all=False, table=False):
    out, after, pages = [], 0, 0
    while True:
        raw = a.ListPage(all, after, table, dbus_context=ctx(who))
        assert len(raw) <= api.PAGE_BYTES + 4096
        reply = json.loads(raw)
        out += reply["ok"] if not table else reply["ok"].split("\n")
        pages += 1
        if not reply["last"]:
            return out, pages
        after = reply["last"]


def test_listing_over_the_bus_limit_comes_in_bounded_pages(monkeypatch):
    # 40 jobs of ~1 MB each: 40 MB in all, over the system bus's 32 MiB message limit
    jobs = [job(i, tags=["t" * 1000] * 1000) for i in range(1, 41)]
    a = Api(Daemon(jobs), Bus())
    got, pages = list_all(a, "bob")
    assert [j["id"] for j in got] == list(range(1, 41)) and pages >= 10
    assert all("source" not in j for j in got)          # bob sees alice's jobs as the queue, not her files
    rows, _ = list_all(a, "bob", table=True)
    assert len(rows) == 41


def test_a_reply_over_the_limit_is_an_error_that_says_so(monkeypatch):
    monkeypatch.setattr(api, "MAX_REPLY", 2000)
    a = Api(Daemon([job(1, command="x" * 5000)]), Bus())
    shown = json.loads(a.Show(1, dbus_context=ctx("alice")))["ok"]
    assert "spec" not in shown and "left out" in shown["truncated"]
    monkeypatch.setattr(api, "MAX_REPLY", 100)
    err = json.loads(a.Show(1, dbus_context=ctx("alice")))["error"]
    assert "too large" in err and "Show" in err


def test_errors_are_answers_and_bugs_are_not_blamed_on_the_caller():
    a = Api(Daemon([job(1)]), Bus())
    assert json.loads(a.Show(99, dbus_context=ctx("bob"))) == {"error": "no job 99"}
    assert "belongs to alice" in json.loads(a.CancelNow(1, dbus_context=ctx("bob")))["error"]
    err = json.loads(a.Gpus(dbus_context=ctx("bob")))["error"]
    assert "internal error" in err and "journalctl" in err and "a bug" not in err


def test_cancel_now_passes_now_and_old_cancel_still_works():
    d = Daemon([job(1), job(2)])
    a = Api(d, Bus())
    assert json.loads(a.CancelNow(1, dbus_context=ctx("alice"))) == {"ok": "killed"}
    assert json.loads(a.Cancel(2, dbus_context=ctx("root"))) == {"ok": "stopping"}
    assert d.engine.cancelled == [(1, ALICE, True), (2, 0, False)]


@pytest.mark.parametrize("method", ["CancelNow", "Cancel", "Show", "ListPage", "Lookup", "Gpus"])
def test_every_method_is_in_the_introspection(method):
    assert f'<method name="{method}">' in Api.__doc__


def test_a_bugs_value_error_is_not_shown_as_the_callers_mistake():
    d = Daemon([job(1)])

    def broken():
        raise ValueError("invalid literal for int() with base 10: 'x'")
    d.engine.gpu_table = broken
    err = json.loads(Api(d, Bus()).Gpus(dbus_context=ctx("bob")))["error"]
    assert "internal error" in err and "invalid literal" not in err
