import argparse
import io
import json
import sys

import pytest
from gi.repository import Gio, GLib

from gpusched import ctl
from gpusched.ctl import client as clientmod
from gpusched.ctl.client import bus_error
from gpusched.ctl.common import CtlError

EVIL = "x\x1b]0;pwned\x07\x1b[2J\r\u202ey"
RAW = ("\x1b", "\x07", "\r", "\u202e")


class FakeClient:
    calls: list = []
    replies: dict = {}

    def __init__(self, timeout=None):                 # as client.Client (top asks for a shorter one)
        pass

    def call(self, method, *args):
        FakeClient.calls.append((method, *args))
        reply = FakeClient.replies[method]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def raw(self, method, *args):
        FakeClient.calls.append((method, *args))
        return FakeClient.replies[method]


@pytest.fixture
def client(monkeypatch):
    FakeClient.calls, FakeClient.replies = [], {}
    monkeypatch.setattr(clientmod, "Client", FakeClient)
    return FakeClient


def no_raw_controls(text):
    return not any(c in text for c in RAW)


def test_show_escapes_every_field_and_keeps_command_lines(client, capsys):
    client.replies["Show"] = {"id": 3, "name": EVIL, "reason": f"bad\n{EVIL}", "source": EVIL + ".toml",
                              "gpus": [{"index": 0, "uuid": EVIL}], "history": [{"attempt": 1, "outcome": EVIL}],
                              "spec": {"command": f"echo 1\n{EVIL}", "tags": [EVIL], EVIL: 1}}
    assert ctl.main(["show", "3"]) == 0
    out = capsys.readouterr().out
    assert no_raw_controls(out) and "\\x1b]0;pwned\\x07" in out and "\\u202e" in out
    assert "   command: echo 1\n                x\\x1b" in out
    assert ctl.main(["show", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["job"]["name"] == EVIL        # --json stays exact


def test_list_escapes_rows_again_and_json_is_passed_through(client, capsys):
    client.replies["ListPage"] = json.dumps({"last": 0, "ok": f"ID  NAME\n1   {EVIL}"})
    client.replies["ListFolded"] = client.replies["ListPage"]     # the table, arrays folded (the default)
    assert ctl.main(["list"]) == 0
    out = capsys.readouterr().out
    assert no_raw_controls(out) and out.count("\n") == 2
    client.replies["ListPage"] = '{"last": 0, "ok": [%s]}' % json.dumps({"id": 1, "name": EVIL})
    assert ctl.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": 1, "jobs": [{"id": 1, "name": EVIL}]}


def test_list_json_follows_pages(client, capsys):
    pages = iter(['{"last": 2, "ok": [{"id": 1},{"id": 2}]}', '{"last": 0, "ok": [{"id": 3}]}'])
    client.raw = lambda self, method, *args: next(pages)
    assert ctl.main(["list", "--json", "--all"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [1, 2, 3]


def test_errors_are_escaped_and_exit_non_zero(client, capsys):
    client.replies["Show"] = CtlError(f"no job named {EVIL}")
    with pytest.raises(SystemExit) as e:
        ctl.main(["show", "4"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("gpuschedctl: no job named x\\x1b") and no_raw_controls(err)


def test_requeue_hold_calls_requeue_held(client, capsys):
    client.replies["RequeueHeld"] = "stopping; requeued and held when it has stopped"
    client.replies["Requeue"] = "stopping; requeued when it has stopped"
    assert ctl.main(["requeue", "--hold", "5"]) == 0 and ctl.main(["requeue", "6"]) == 0
    assert client.calls == [("RequeueHeld", 5), ("Requeue", 6)]


def test_cancel_now_calls_cancel_now_and_reports_each_failure(client, capsys):
    client.replies["CancelNow"] = "killed"
    assert ctl.main(["cancel", "--now", "5", "6"]) == 0
    assert client.calls == [("CancelNow", 5), ("CancelNow", 6)]
    assert capsys.readouterr().out == "job 5: killed\njob 6: killed\n"
    client.replies["Cancel"] = CtlError("job 7 belongs to alice; only its owner, root or an admin may cancel it")
    assert ctl.main(["cancel", "7"]) == 1
    assert "belongs to alice" in capsys.readouterr().err


def test_gpus_table_is_escaped(client, capsys):
    client.replies["Gpus"] = {"gpus": [{"index": 0, "name": EVIL, "memory_total": 1 << 30, "memory_free": 0,
                                        "state": "foreign", "uuid": "GPU-1", "foreign_pids": [1, 2],
                                        "foreign_pids_more": 3,
                                        "foreign": [{"pid": 1, "user": "bob", "name": "x", "cmdline": EVIL,
                                                     "gpu_memory": None}]}],
                               "simulated": False, "error": EVIL}
    assert ctl.main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert no_raw_controls(out) and "pids 1,2 and 3 more" in out
    assert any(line.split()[:4] == ["0", "1", "bob", "-"] and "x\\x1b]0;pwned" in line for line in out.splitlines())


class Tty(io.BytesIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty,raw", [(True, False), (False, False), (True, True)])
def test_logs_are_escaped_on_a_terminal_and_raw_otherwise(client, monkeypatch, tmp_path, tty, raw):
    log = tmp_path / "1.log"
    data = "ok\tline\n\x1b]0;pwned\x07 50%\r100%\r\n\u202eé".encode() + b"\xff\xc3"
    log.write_bytes(data)
    client.replies["Show"] = {"state": "succeeded", "log": str(log), "user": "alice", "source": "a.toml"}
    buf = Tty() if tty else io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf))
    assert ctl.main(["logs", "1"] + (["--raw"] if raw else [])) == 0
    out = buf.getvalue()
    if tty and not raw:
        assert out.decode() == "ok\tline\n\\x1b]0;pwned\\x07 50%\n100%\n\\u202eé\\xff\\xc3"
    else:
        assert out == data


def test_logs_follow_polls_the_state_with_outcomes_and_shows_the_job_once_it_started(monkeypatch, tmp_path):
    # Show of a queued job works out its place in the whole queue: polled four times a second by every
    # `logs -f` (and top's `l` key) on a waiting job, it cost the daemon more than all of its time
    log = tmp_path / "1.log"
    log.write_bytes(b"hello\n")
    states = iter(["queued", "queued", "running", "running", "succeeded"])
    calls = []

    class Client:
        def call(self, method, *args):
            calls.append(method)
            if method == "Outcomes":
                return [{"id": 1, "state": next(states), "final": False}]
            assert method == "Show"
            started = calls.count("Outcomes") >= 3 or calls.count("Show") > 5     # (Show polled: ends too)
            if not started:
                return {"state": "queued", "user": "alice"}
            return {"state": "running" if calls.count("Show") < 9 else "succeeded", "log": str(log)}

    monkeypatch.setattr(clientmod, "Client", Client)
    monkeypatch.setattr("time.sleep", lambda s: None)
    buf = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf))
    assert ctl.main(["logs", "-f", "1"]) == 0
    assert buf.getvalue() == b"hello\n"
    assert calls.count("Show") == 2                  # once at first, once when it had started


def remote(name, text):
    return GLib.Error.new_literal(Gio.io_error_quark(), f"GDBus.Error:{name}: {text}", Gio.IOErrorEnum.DBUS_ERROR)


def test_bus_errors_are_said_in_words():
    msg = bus_error(remote("org.freedesktop.DBus.Error.ServiceUnknown", "The name org.gpusched1 was not "
                                                                            "provided by any .service files"))
    assert msg.startswith("gpusched is not on the system bus") and "ServiceUnknown" in msg
    msg = bus_error(remote("unknown.KeyError", "'x'"))
    assert msg.startswith("gpusched failed (KeyError: 'x')") and "journalctl" in msg
    msg = bus_error(remote("org.freedesktop.DBus.Error.NoReply", "did not receive a reply"))
    assert "no answer in time" in msg
    assert bus_error(ValueError("plain")) == "plain"


def test_job_options_become_the_keys_of_a_job_file():
    import tomllib

    from gpusched import jobfile
    from gpusched.ctl import jobopts
    ap = argparse.ArgumentParser()
    jobopts.add_options(ap)
    args = ap.parse_args(["--gpus", "2", "--memory", "8G", "--env", "A=b=c", "--export", "HOME2", "--tag", "x",
                          "--time-limit", "1h", "--class", "debug"])
    doc = jobopts.job_doc(args, ["python", "train.py", "--lr", "1e-3"], environ={"HOME2": "/h"}, cwd="/w")
    assert doc == {"command": ["python", "train.py", "--lr", "1e-3"], "name": "python", "gpus": 2,
                   "class": "debug", "time_limit": "1h", "workdir": "/w", "env": {"HOME2": "/h", "A": "b=c"},
                   "tags": ["x"], "limits": {"memory": "8G"}}
    data = jobopts.job_toml(doc)
    assert tomllib.loads(data.decode()) == doc
    spec = jobfile.parse(jobopts.job_toml({k: v for k, v in doc.items() if k != "class"}), "python.toml",
                         owner_is_root=False)
    assert spec.gpus == 2 and spec.command == ("python", "train.py", "--lr", "1e-3")
    for bad, env in ((["--export", "NOPE"], {}), (["--env", "novalue"], {})):
        with pytest.raises(jobopts.OptionError):
            jobopts.job_doc(ap.parse_args(bad), ["x"], environ=env, cwd="/")
    with pytest.raises(jobopts.OptionError):
        jobopts.job_doc(ap.parse_args([]), [], environ={}, cwd="/")
