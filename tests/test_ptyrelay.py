"""gpuschedctl run's pieces without the daemon: the wire's frames and messages (pure), the `attach` key, the
launch argv, the client's peer check; then the relay for real (a real pty, a real socket, the test playing
the client), and the monitor recording a relay that can't attach as "could not start"."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from gpusched import jobfile, launch, ptyrelay, ptywire
from gpusched.ctl import interactive
from tests.test_monitor import run_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the wire -------------------------------------------------------------------------------------------------

def test_frames_round_trip_whatever_the_chunking():
    stream = (ptywire.frame(ptywire.DATA, b"ls -l\r") + ptywire.winsize(50, 132) + ptywire.frame(ptywire.EOF)
              + ptywire.frames(ptywire.DATA, b"x" * (ptywire.MAX_PAYLOAD * 2 + 5)))
    for step in (1, 7, len(stream)):
        d = ptywire.Decoder()
        got = []
        for i in range(0, len(stream), step):
            got += d.feed(stream[i:i + step])
        assert d.pending == 0
        assert got[0] == (ptywire.DATA, b"ls -l\r")
        assert ptywire.parse_winsize(got[1][1]) == (50, 132)
        assert got[2] == (ptywire.EOF, b"")
        assert [len(p) for _, p in got[3:]] == [ptywire.MAX_PAYLOAD, ptywire.MAX_PAYLOAD, 5]
        assert b"".join(p for _, p in got[3:]) == b"x" * (ptywire.MAX_PAYLOAD * 2 + 5)


def test_oversized_or_unknown_frames_end_the_session():
    with pytest.raises(ptywire.ProtocolError, match="at most"):
        ptywire.Decoder().feed(ptywire.HEADER.pack(ptywire.DATA, ptywire.MAX_PAYLOAD + 1))
    with pytest.raises(ptywire.ProtocolError, match="unknown"):
        ptywire.Decoder().feed(b"Q\0\0\0\0")
    with pytest.raises(ValueError):
        ptywire.frame(ptywire.DATA, b"x" * (ptywire.MAX_PAYLOAD + 1))
    # a header alone is held, not a whole frame's buffer: nothing is allocated from the length
    d = ptywire.Decoder()
    assert d.feed(ptywire.HEADER.pack(ptywire.DATA, ptywire.MAX_PAYLOAD)) == []
    assert d.pending == ptywire.HEADER.size


def test_client_hello_is_checked_field_by_field():
    kind, payload = ptywire.Decoder().feed(ptywire.client_hello(True, 24, 80, "xterm-256color"))[0]
    assert kind == ptywire.HELLO
    assert ptywire.parse_client_hello(payload) == {"pty": True, "rows": 24, "cols": 80, "term": "xterm-256color"}
    # a TERM that is not a terminal type is left out by the client, refused by the relay
    _, payload = ptywire.Decoder().feed(ptywire.client_hello(False, 0, 0, "x\x1b]0;evil\x07"))[0]
    assert ptywire.parse_client_hello(payload)["term"] is None
    for bad in ({"v": 1, "pty": True, "rows": 24, "cols": 80, "term": "a b"},
                {"v": 2, "pty": True, "rows": 24, "cols": 80},
                {"v": 1, "pty": "yes", "rows": 24, "cols": 80},
                {"v": 1, "pty": True, "rows": -1, "cols": 80},
                {"v": 1, "pty": True, "rows": 24, "cols": 1 << 16},
                {"v": 1, "pty": True, "rows": True, "cols": 80},
                [1, 2]):
        with pytest.raises(ptywire.ProtocolError):
            ptywire.parse_client_hello(json.dumps(bad).encode())
    with pytest.raises(ptywire.ProtocolError, match="at most"):
        ptywire.parse_client_hello(b" " * (ptywire.MAX_HELLO + 1))
    with pytest.raises(ptywire.ProtocolError, match="not JSON"):
        ptywire.parse_client_hello(b"\xff")


def test_relay_hello_names_a_job():
    _, payload = ptywire.Decoder().feed(ptywire.relay_hello("42"))[0]
    assert ptywire.parse_relay_hello(payload) == "42"
    for bad in (b'{"v": 1, "job": "4 2"}', b'{"v": 1, "job": 42}', b'{"v": 0, "job": "42"}'):
        with pytest.raises(ptywire.ProtocolError):
            ptywire.parse_relay_hello(bad)


def test_exit_and_signals():
    assert ptywire.parse_exit(ptywire.Decoder().feed(ptywire.exit_frame({"exit_code": 7}))[0][1]) == 7
    assert ptywire.parse_exit(json.dumps(ptywire.exit_status(-signal.SIGINT)).encode()) == 130
    assert ptywire.exit_status(3) == {"exit_code": 3}
    for bad in (b'{"exit_code": 256}', b'{"signal": 0}', b'{"signal": "9"}', b"{}"):
        with pytest.raises(ptywire.ProtocolError):
            ptywire.parse_exit(bad)
    assert ptywire.parse_signal(ptywire.signal_frame(signal.SIGINT)[ptywire.HEADER.size:]) == signal.SIGINT
    with pytest.raises(ptywire.ProtocolError):
        ptywire.parse_signal(bytes([signal.SIGKILL]))
    with pytest.raises(ptywire.ProtocolError):
        ptywire.parse_winsize(b"\0\0\0")


# --- the job file and its launch --------------------------------------------------------------------------

def spec(text):
    return jobfile.parse(text.encode(), "run.toml", owner_is_root=False)


def test_attach_key():
    s = spec('command = ["bash"]\nattach = "/tmp/gpuschedctl-run-x/socket"\n')
    assert s.attach == "/tmp/gpuschedctl-run-x/socket"
    assert s.to_dict()["attach"] == "/tmp/gpuschedctl-run-x/socket"
    assert "attach" not in spec('command = "x"').to_dict()
    for value, message in (('"rel/socket"', "absolute"), ('"/tmp/a\\nb"', "control"), ('"/x\\u0000"', "NUL"),
                           ('"/' + "x" * 107 + '"', "longer than 107"), ("1", "a path")):
        with pytest.raises(jobfile.JobFileError, match=message):
            spec(f'command = "x"\nattach = {value}\n')
    with pytest.raises(jobfile.JobFileError, match="share one terminal"):
        spec('command = "x {a}"\nattach = "/tmp/s"\n[sweep]\na = [1, 2]\n')


ALICE = launch.Account("alice", 1000, 1000, "/home/alice", "/bin/bash")


def test_an_attached_job_runs_under_its_relay():
    s = spec('command = ["python", "-i"]\nattach = "/tmp/d/socket"\nconda = "torch"\n'
             'warn_signal = "SIGUSR1"\ntime_limit = "1h"\n')
    argv = launch.argv_for(s)
    assert argv[:4] == list(launch.RELAY) and "-I" in argv[:4]
    assert argv[4:9] == ["--setup-fd", "3", "--forward", str(int(signal.SIGUSR1)), "/tmp/d/socket"]
    assert argv[9] == "--"
    assert argv[10:12] == ["/bin/bash", "-c"] and argv[-3:] == ["gpusched-job", "python", "-i"]   # conda inside
    plan = launch.plan(5, 1, s, ALICE, [], [], "/l", "/r")
    assert plan.monitor["setup_fd"] == 3 and plan.monitor["argv"] == argv
    plain = spec('command = ["python", "-i"]')
    assert launch.argv_for(plain) == ["python", "-i"]
    assert "setup_fd" not in launch.plan(5, 1, plain, ALICE, [], [], "/l", "/r").monitor


def test_run_takes_a_command_after_dashes():
    from gpusched.ctl import jobopts
    from gpusched.ctl.main import build_parser
    args = build_parser().parse_args(["run", "--gpus", "1", "--class", "debug"])
    assert args.fn is interactive.cmd_run and args.takes_command     # main hands it what follows --
    doc = jobopts.job_doc(args, ["jupyter", "lab"], environ={}, cwd="/home/a")
    assert (doc["command"], doc["name"], doc["gpus"], doc["class"]) == (["jupyter", "lab"], "jupyter", 1, "debug")


def test_client_accepts_only_its_jobs_relay():
    scope = "0::/gpusched.slice/gpusched-job-42.scope/job\n"
    assert interactive.peer_ok(10, 1000, 42, 1000, scope) is None
    assert interactive.peer_ok(10, 0, 42, 1000, scope) is None              # root's relay (a root job)
    assert "uid 1001" in interactive.peer_ok(10, 1001, 42, 1000, scope)
    assert "outside job 42" in interactive.peer_ok(10, 1000, 42, 1000, "0::/user.slice/session-3.scope\n")
    assert "outside job 4" in interactive.peer_ok(10, 1000, 4, 1000, scope)  # job 42 is not job 4
    assert "outside job 42" in interactive.peer_ok(10, 1000, 42, 1000, "0::/gpusched-job-42.scopex/\n")


# --- the relay, for real ------------------------------------------------------------------------------------

class Client:
    """The test as gpuschedctl run: a listening socket, then frames."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "s")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.decoder = ptywire.Decoder()
        self.frames = []
        self.output = b""
        self.stderr = b""
        self.code = None

    def start(self, command, env=None, setup_fd=True):
        r, w = os.pipe()
        args = [sys.executable, "-m", "gpusched.ptyrelay"] + (["--setup-fd", str(w)] if setup_fd else [])
        self.setup_r = r
        self.proc = subprocess.Popen(args + [self.path, "--", *command], cwd=ROOT, pass_fds=(w,),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "GPUSCHED_JOB_ID": "9", **(env or {})})
        os.close(w)

    def accept(self, pty=True, rows=24, cols=80, then=b""):
        self.listener.settimeout(10)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)
        kind, payload = self.recv_frame()
        assert kind == ptywire.HELLO and ptywire.parse_relay_hello(payload) == "9"
        self.conn.sendall(ptywire.client_hello(pty, rows, cols, "xterm") + then)
        assert os.read(self.setup_r, 100) == b""          # attached: the setup fd closed, nothing said

    def recv_frame(self):
        while not self.frames:
            data = self.conn.recv(65536)
            assert data, "the relay hung up"
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def send(self, data):
        self.conn.sendall(ptywire.frames(ptywire.DATA, data))

    def until(self, text, timeout=10):
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            kind, payload = self.recv_frame()
            if kind == ptywire.DATA:
                self.output += payload
            elif kind == ptywire.STDERR:
                self.stderr += payload
            elif kind == ptywire.EXIT:
                self.code = ptywire.parse_exit(payload)
                break
        assert text in self.output, self.output

    def to_end(self):
        while self.code is None:
            kind, payload = self.recv_frame()
            if kind == ptywire.DATA:
                self.output += payload
            elif kind == ptywire.STDERR:
                self.stderr += payload
            elif kind == ptywire.EXIT:
                self.code = ptywire.parse_exit(payload)
        return self.code


SCRIPT = r"""
stty size
echo "tty=$(tty) term=$TERM"
trap 'echo got-winch' WINCH
IFS= read -r line
echo "line=[$line]"
read -r _
stty size
trap 'echo interrupted' INT
sleep 100
echo "sleep ended $?"
exit 7
"""


def test_relay_runs_the_command_on_a_terminal(tmp_path):
    c = Client(tmp_path)
    c.start(["bash", "-c", SCRIPT])
    c.accept(rows=33, cols=101)
    c.until(b"33 101")
    c.until(b"term=xterm")
    assert b"tty=/dev/pts/" in c.output
    c.send(b"hello world\r")
    c.until(b"line=[hello world]")
    c.conn.sendall(ptywire.winsize(40, 120))
    time.sleep(0.3)
    c.send(b"\r")
    c.until(b"40 120")
    c.until(b"got-winch")                            # the kernel's SIGWINCH reached the foreground group
    time.sleep(0.3)
    c.send(b"\x03")                                  # Ctrl-C: SIGINT for the terminal's foreground group
    c.until(b"sleep ended 130")
    assert b"interrupted" in c.output
    assert c.to_end() == 7
    assert c.proc.wait(10) == 7                       # the relay ends as the command did
    log = c.proc.stdout.read()
    assert b"line=[hello world]" in log              # the session is in the job's log


def test_relay_ends_as_a_signal_ended_the_command(tmp_path):
    c = Client(tmp_path)
    c.start(["bash", "-c", "kill -USR2 $$"])
    c.accept()
    assert c.to_end() == 128 + signal.SIGUSR2
    assert c.proc.wait(10) == -signal.SIGUSR2


def test_relay_without_a_terminal_uses_pipes(tmp_path):
    c = Client(tmp_path)
    c.start(["bash", "-c", "trap 'echo INT; exit 3' INT; test -t 0 || echo no-tty; cat; echo err >&2; "
                           "while :; do sleep 0.1; done"])
    c.accept(pty=False)
    c.until(b"no-tty")
    c.send(b"piped in\n")
    c.until(b"piped in")
    c.conn.sendall(ptywire.frame(ptywire.EOF))
    c.until(b"piped in\n")
    deadline = time.monotonic() + 10
    while b"err" not in c.stderr and time.monotonic() < deadline:
        kind, payload = c.recv_frame()
        if kind == ptywire.STDERR:
            c.stderr += payload
    assert c.stderr == b"err\n"                     # stderr apart from stdout
    c.proc.send_signal(signal.SIGINT)                # the relay itself outlives a stop signal (CMD decides)
    time.sleep(0.3)
    assert c.proc.poll() is None
    c.conn.sendall(ptywire.signal_frame(signal.SIGINT))   # Ctrl-C at a client without a terminal
    c.until(b"INT")
    assert c.to_end() == 3
    assert c.proc.wait(10) == 3


def test_input_sent_with_the_hello_is_not_lost(tmp_path):
    # without a terminal, the client sends its stdin at once: it may arrive in the hello's read
    c = Client(tmp_path)
    c.start(["bash"])
    c.accept(pty=False, then=ptywire.frames(ptywire.DATA, b"echo early; exit 4\n") + ptywire.frame(ptywire.EOF))
    assert c.to_end() == 4
    assert c.output == b"early\n"


def test_leaving_hangs_up_the_command(tmp_path):
    c = Client(tmp_path)
    mark = tmp_path / "hup"
    c.start(["bash", "-c", f"trap 'echo hup > {mark}; exit 9' HUP; echo ready; while :; do sleep 0.1; done"])
    c.accept()
    c.until(b"ready")
    c.conn.close()                                   # the client is gone
    assert c.proc.wait(10) == 9
    assert mark.read_text() == "hup\n"
    assert b"went away; hanging up" in c.proc.stdout.read()


def test_leaving_kills_a_command_that_ignores_the_hangup(tmp_path, monkeypatch):
    c = Client(tmp_path)
    c.start(["bash", "-c", "trap '' HUP; echo ready; while :; do sleep 0.1; done"])
    c.accept()
    c.until(b"ready")
    c.conn.close()
    start = time.monotonic()
    assert c.proc.wait(20) == -signal.SIGKILL
    assert time.monotonic() - start < ptyrelay.HANGUP_WAIT + 5


def test_no_client_means_the_command_never_runs(tmp_path):
    mark = tmp_path / "ran"
    r, w = os.pipe()
    p = subprocess.run([sys.executable, "-m", "gpusched.ptyrelay", "--setup-fd", str(w), str(tmp_path / "none"),
                        "--", "touch", str(mark)], cwd=ROOT, pass_fds=(w,), capture_output=True, timeout=30)
    os.close(w)
    assert p.returncode == ptyrelay.SETUP_FAILED
    said = os.read(r, 4096).decode()
    assert "nothing listens at" in said and "is gone" in said
    assert not mark.exists()


def test_a_socket_that_is_not_gpuschedctl_is_left_quickly(tmp_path):
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(tmp_path / "other"))
    other.listen(1)
    with pytest.raises(ptyrelay.AttachError, match="said nothing"):
        ptyrelay.attach(str(tmp_path / "other"), "9", timeout=0.5)
    conn, _ = other.accept()
    conn.close()
    # one that answers something else

    def answer():
        c, _ = other.accept()
        c.recv(100)
        c.sendall(b"SSH-2.0-OpenSSH\r\n")
        time.sleep(1)
        c.close()
    t = threading.Thread(target=answer)
    t.start()
    with pytest.raises(ptyrelay.AttachError, match="not gpuschedctl run"):
        ptyrelay.attach(str(tmp_path / "other"), "9", timeout=5)
    t.join()


def test_the_monitor_records_a_relay_that_could_not_attach(tmp_path):
    # in /tmp: the job runs as nobody when the tests run as root, and pytest's tmp_path is root's alone
    mark = f"/tmp/gpusched-test-{uuid.uuid4().hex}"
    argv = [sys.executable, "-m", "gpusched.ptyrelay", "--setup-fd", "3", mark + "-gone", "--", "touch", mark]
    result, log, _ = run_job(tmp_path, "", argv=argv, setup_fd=3,
                             env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": ROOT})
    assert result["exit_code"] == 127
    assert "cannot attach to a terminal: nothing listens at" in result["error"]
    assert b"cannot attach" in log
    assert not os.path.exists(mark)

