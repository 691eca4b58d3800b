"""The web sign-in beyond loopback (docs/web.md): the [web] config rules and the start refusal, the failure
counts (loginguard, pure), the daemon's authenticator with a fake PAM check (its worker thread, its bounds,
the same answer for every refusal), the PAM conversation and `pam.authenticate` against the real libpam with
throwaway services (root; a pam_exec script stands in for a password database), the helper process's input,
sessions and their cookies, and the dashboard's sign-in, CSRF and sign-out over a fake daemon."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import threading
import time
import uuid

import pytest

from gpusched import config as configmod
from gpusched import loginguard, pam, pamcheck, webauth
from gpusched.errors import Invalid, NotAllowed
from gpusched.web import csrf
from gpusched.web import sessions as sessionsmod
from gpusched.web.sessions import Sessions, cookie

# --- config: [web] keys, and the start refusal ----------------------------------------------------------------


def _cfg(tmp_path, text: str) -> configmod.Config:
    path = tmp_path / "gpusched.toml"
    path.write_text(text)
    return configmod.load(str(path))


def test_web_tls_keys_and_names(tmp_path):
    c = _cfg(tmp_path, '[web]\nlisten = ["127.0.0.1", "192.0.2.7"]\ntls_cert = "/etc/gpusched/web.crt"\n'
                       'tls_key = "/etc/gpusched/web.key"\nnames = ["GPU1.lab.example"]\n')
    assert c.web_tls_cert == "/etc/gpusched/web.crt" and c.web_tls_key == "/etc/gpusched/web.key"
    assert c.web_names == ("gpu1.lab.example",) and c.web_far() == ("192.0.2.7",)
    assert _cfg(tmp_path, "").web_far() == ()
    assert _cfg(tmp_path, '[web]\nlisten = ["::"]\n').web_far() == ("::",)      # a wildcard is beyond loopback
    for bad, key in (('tls_cert = "/a"\n', "web.tls_key"), ('tls_key = "/a"\n', "web.tls_cert"),
                     ('tls_cert = "rel.crt"\ntls_key = "/k"\n', "web.tls_cert"),
                     ('names = ["bad name"]\n', "web.names"), ('names = "x"\n', "web.names"),
                     ('tls = 1\n', "web.tls")):
        with pytest.raises(configmod.ConfigError, match=re.escape(key)):
            _cfg(tmp_path, "[web]\n" + bad)


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_tls(tmp_path, monkeypatch):
    from gpusched.web import __main__ as webmain
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    far = _cfg(tmp_path, '[web]\nlisten = ["127.0.0.1", "192.0.2.7"]\n')
    why = webmain.refusal(far)
    assert "192.0.2.7" in why and "tls_cert and tls_key" in why and "never cross the network in clear" in why
    assert webmain.refusal(_cfg(tmp_path, '[web]\nlisten = ["0.0.0.0"]\n'))
    assert webmain.refusal(_cfg(tmp_path, '[web]\nlisten = ["127.0.0.1", "::1", "127.0.0.2"]\n')) == ""
    tls = _cfg(tmp_path, '[web]\nlisten = ["192.0.2.7"]\ntls_cert = "/nonexistent.crt"\n'
                         'tls_key = "/nonexistent.key"\nnames = ["gpu1"]\n')
    assert webmain.refusal(tls) == ""
    with pytest.raises(OSError):                      # main() says so and exits 2
        webmain.tls_context(tls)
    assert webmain.tls_context(_cfg(tmp_path, "")) is None
    assert webmain.far_names(tls) == ("gpu1", "192.0.2.7")
    monkeypatch.setattr(webmain.socket, "gethostname", lambda: "GPU1")
    monkeypatch.setattr(webmain.socket, "getfqdn", lambda: "localhost")       # what DNS says without a name
    unnamed = _cfg(tmp_path, '[web]\nlisten = ["192.0.2.7"]\ntls_cert = "/c"\ntls_key = "/k"\n')
    assert webmain.far_names(unnamed) == ("gpu1", "192.0.2.7")
    monkeypatch.setenv("GPUSCHED_CONFIG", str(tmp_path / "gpusched.toml"))
    (tmp_path / "gpusched.toml").write_text('[web]\nlisten = ["192.0.2.7"]\n')
    assert webmain.main([]) == 2


def test_far_names_and_origins():
    names = csrf.far_names(("gpu1.lab",), ("127.0.0.1", "192.0.2.7", "2001:db8::5", "0.0.0.0"))
    assert names == ("gpu1.lab", "192.0.2.7", "[2001:db8::5]")
    hosts = csrf.allowed_hosts(8443, names)
    assert csrf.host_ok("gpu1.lab:8443", hosts) and csrf.host_ok("[2001:db8::5]:8443", hosts)
    assert not csrf.host_ok("evil.example:8443", hosts)
    origins = csrf.allowed_origins(8443, names)
    assert csrf.post_refusal("https://gpu1.lab:8443", None, origins) == ""
    assert csrf.post_refusal("http://gpu1.lab:8443", None, origins)          # beyond loopback: https only
    assert csrf.post_refusal("http://localhost:8443", None, origins) == ""
    assert csrf.post_refusal("https://localhost:8443", None, origins)
    both = csrf.allowed_origins(8443, names, ("http", "https"))              # a wildcard listener's loopback
    assert csrf.post_refusal("https://localhost:8443", None, both) == ""


# --- loginguard: failures counted (pure) ----------------------------------------------------------------------

def test_failures_wait_longer_and_longer_then_are_forgotten():
    lim = loginguard.Limiter(free=3, base=2.0, cap=900.0, forget=3600.0)
    t = 1000.0
    for _ in range(3):
        assert lim.wait("alice", t) == 0
        lim.failed("alice", t)
    assert lim.wait("alice", t) == 2.0 and lim.wait("alice", t + 1.5) == 0.5 and lim.wait("alice", t + 2) == 0
    lim.failed("alice", t + 2)
    assert lim.wait("alice", t + 2) == 4.0
    for i in range(20):
        lim.failed("alice", t + 3 + i)
    assert lim.wait("alice", t + 22) == 900.0                   # capped
    assert lim.wait("bob", t) == 0                              # others are not touched
    assert lim.wait("alice", t + 22 + 3601) == 0 and len(lim) == 0      # forgotten an hour after the last
    lim.failed("bob", t)
    lim.succeeded("bob")
    assert len(lim) == 0


def test_the_failure_table_is_bounded():
    lim = loginguard.Limiter(free=1, size=3)
    for i, key in enumerate("abcd"):
        lim.failed(key, float(i))
    assert len(lim) == 3 and lim.wait("a", 4.0) == 0 and lim.wait("d", 4.0) > 0


def test_source_keys():
    assert loginguard.source_key("192.0.2.7") == "192.0.2.7"
    assert loginguard.source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert loginguard.source_key("2001:db8:1:2:aaaa::1") == loginguard.source_key("2001:db8:1:2:bbbb::9") == \
        "2001:db8:1:2::/64"
    with pytest.raises(ValueError):
        loginguard.source_key("not an address")


# --- webauth: the daemon's authenticator, with a fake PAM check -------------------------------------------------

PEOPLE = {"alice": 1000, "bob": 1001, "root": 0, "www-data": 33}


class FakePwd:
    class Entry:
        def __init__(self, uid):
            self.pw_uid = uid

    @staticmethod
    def getpwnam(name):
        if name not in PEOPLE:
            raise KeyError(name)
        return FakePwd.Entry(PEOPLE[name])


class FakePam:
    """Accepts alice with "right"; takes `delay` seconds; records what it was asked (the password's copy is
    overwritten by the caller afterwards: that is checked too)."""

    def __init__(self, delay=0.0):
        self.delay, self.asked, self.buffers = delay, [], []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, user, password, rhost):
        self.asked.append((user, bytes(password), rhost))
        self.buffers.append(password)
        self.gate.wait(10)
        time.sleep(self.delay)
        return None if (user, bytes(password)) == ("alice", b"right") else "Authentication failure"


@pytest.fixture
def auth(monkeypatch):
    monkeypatch.setattr(webauth, "pwd", FakePwd)
    logged = []
    fake = FakePam()
    a = webauth.Authenticator(check=fake, person=lambda uid: 1000 <= uid <= 60000,
                              log=lambda m, p=6: logged.append(m), min_fail=0.3)
    a.fake, a.logged = fake, logged
    return a


def _finish(a, ticket, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        r = a.result(ticket)
        if r["done"]:
            return r
        assert time.monotonic() < deadline, "the attempt never ended"
        time.sleep(0.01)


def test_the_right_password_gives_the_uid_and_every_refusal_says_the_same(auth):
    assert _finish(auth, auth.start("alice", "right", "192.0.2.9")) == {"done": True, "uid": 1000, "name": "alice"}
    answers = []
    for user, password in (("alice", "wrong"), ("nosuchuser", "right"), ("root", "right"), ("www-data", "x"),
                           ("bad name!", "x")):
        t0 = time.monotonic()
        r = _finish(auth, auth.start(user, password, f"198.51.100.{len(answers)}"))
        answers.append((r, time.monotonic() - t0 >= 0.29))
    assert answers == [({"done": True, "uid": None, "message": webauth.REFUSED}, True)] * 5
    # PAM was asked for the two real people only: never for an unknown name, root or a system account
    assert [a[0] for a in auth.fake.asked] == ["alice", "alice"]
    assert all(not any(b) for b in auth.fake.buffers)          # the password buffers were overwritten
    assert not any("right" in m or "wrong" in m for m in auth.logged)       # passwords are never logged
    assert any("refused: uid 0 is not a person's account" in m for m in auth.logged)


def test_a_slow_check_does_not_hold_the_caller(auth):
    auth.fake.gate.clear()                          # PAM "takes" as long as the test says
    t0 = time.monotonic()
    ticket = auth.start("alice", "right", "192.0.2.9")
    assert time.monotonic() - t0 < 0.2                         # answered at once: the check runs elsewhere
    assert auth.result(ticket) == {"done": False}
    auth.fake.gate.set()
    assert _finish(auth, ticket)["uid"] == 1000
    assert auth.result(ticket)["uid"] is None                   # an answer is given once


def test_repeated_failures_are_delayed_per_name_and_per_address(auth):
    for i in range(3):
        assert _finish(auth, auth.start("alice", "wrong", f"198.51.100.{i}"))["uid"] is None
    with pytest.raises(NotAllowed, match=r"too many failed sign-ins .* try again in \d+ s"):
        auth.start("alice", "right", "203.0.113.1")             # even the right password waits
    _finish(auth, auth.start("bob", "wrong", "198.51.100.0"))   # others' names from those addresses: not yet
    # a name that exists nowhere is counted exactly like one that does (no telling which exist)
    for i in range(3):
        assert _finish(auth, auth.start("ghost", "x", f"198.51.101.{i}"))["uid"] is None
    with pytest.raises(NotAllowed, match="too many failed"):
        auth.start("ghost", "x", "203.0.113.2")
    # one address guessing at many names: refused after its 10 free failures
    for i in range(10):
        name = f"name{i}"
        try:
            _finish(auth, auth.start(name, "x", "203.0.113.77"))
        except NotAllowed:
            pytest.fail(f"refused too early, at {i}")
    with pytest.raises(NotAllowed, match="too many failed"):
        auth.start("bob", "x", "203.0.113.77")


def test_attempts_at_once_are_bounded(auth):
    auth.fake.gate.clear()
    tickets = [auth.start("alice", "wrong", "192.0.2.1")]
    with pytest.raises(NotAllowed, match="try again in a few seconds"):
        auth.start("alice", "wrong", "192.0.2.2")              # one at a time per name
    tickets.append(auth.start("bob", "wrong", "192.0.2.1"))
    with pytest.raises(NotAllowed, match="try again in a few seconds"):
        auth.start("carol", "wrong", "192.0.2.1")              # two at a time per address
    tickets += [auth.start(f"user{i}", "x", f"192.0.2.{10 + i}") for i in range(webauth.MAX_RUNNING - 2)]
    with pytest.raises(NotAllowed, match="try again in a few seconds"):
        auth.start("dave", "x", "192.0.2.99")                   # MAX_RUNNING in all
    auth.fake.gate.set()
    for t in tickets:
        _finish(auth, t)
    _finish(auth, auth.start("dave", "x", "192.0.2.99"))


def test_bad_arguments_and_sizes(auth):
    for args in ((1, "x", "192.0.2.1"), ("alice", None, "192.0.2.1"), ("alice", "", "192.0.2.1"),
                 ("alice", "x" * (webauth.MAX_PASSWORD + 1), "192.0.2.1"), ("alice", "x", "nowhere")):
        with pytest.raises(Invalid):
            auth.start(*args)
    assert not auth.fake.asked
    assert auth.result("no-such-ticket")["uid"] is None
    _finish(auth, auth.start("alice", "right", "fe80::1%eth0\0\nx"))           # the scope is dropped
    assert auth.fake.asked[-1][2] == "fe80::1"


def test_a_bug_in_the_check_ends_as_a_refusal(auth):
    def broken(user, password, rhost):
        raise RuntimeError("boom")
    auth.check = broken
    assert _finish(auth, auth.start("alice", "right", "192.0.2.1"))["uid"] is None
    assert any("internal error: RuntimeError: boom" in m for m in auth.logged)


# --- the web calls: sign-in only where the config listens beyond loopback -------------------------------------

def test_the_sign_in_calls_are_off_with_loopback_only(tmp_path, auth):
    from gpusched.webcalls import WebCalls

    class M:
        class engine:
            cfg = _cfg(tmp_path, "")
    calls = WebCalls(M(), web_user="root", auth=auth)
    calls.check_caller = lambda uid: None
    with pytest.raises(NotAllowed, match="sign-in is off"):
        calls.call(999, 0, "authenticate", '["alice", "right", "192.0.2.1"]')
    M.engine.cfg = _cfg(tmp_path, '[web]\nlisten = ["192.0.2.7"]\ntls_cert = "/c"\ntls_key = "/k"\n')
    ticket = calls.call(999, 0, "authenticate", '["alice", "right", "192.0.2.1"]')["ticket"]
    assert _finish(auth, ticket)["uid"] == 1000
    with pytest.raises(Invalid):
        calls.call(999, 0, "authenticate", '["alice", "right"]')


# --- pamcheck: the helper's input ------------------------------------------------------------------------------

def test_the_helper_reads_a_bounded_request(tmp_path):
    r, w = os.pipe()
    os.write(w, b"alice\x00192.0.2.1\x00s3cr\x00t")
    os.close(w)
    data = pamcheck.read_input(r)
    os.close(r)
    user, rhost, password = pamcheck.split(data)
    assert (user, rhost, bytes(password)) == ("alice", "192.0.2.1", b"s3cr\x00t")
    r, w = os.pipe()
    os.write(w, b"x" * (pamcheck.MAX_INPUT + 1))
    os.close(w)
    with pytest.raises(ValueError):
        pamcheck.read_input(r)
    os.close(r)
    assert pamcheck.check(bytearray(b"no separators")) == {"ok": False, "why": "malformed input"}


# --- the PAM conversation and pam.authenticate against the real libpam (root) ---------------------------------

def _why_not_pam() -> str | None:
    if os.geteuid() != 0:
        return "needs root: PAM services live in /etc/pam.d"
    try:
        pam._load()
    except OSError as e:
        return f"libpam.so.0 is not loadable: {e}"
    if not any(os.path.exists(os.path.join(d, "pam_exec.so")) for d in pam.MODULE_DIRS):
        return "pam_exec.so is missing (libpam-modules)"
    return None


root = pytest.mark.skipif(_why_not_pam() is not None, reason=str(_why_not_pam()))

# pam_exec gives the script the password (expose_authtok: on stdin, NUL-ended) and PAM_RHOST (environment)
CHECKER = """#!/usr/bin/python3
import os, sys
password = sys.stdin.buffer.read().split(b"\\0")[0]
sys.exit(0 if password == b"right pass" and os.environ.get("PAM_RHOST") == "192.0.2.5" else 1)
"""



@root
def test_authenticate_answers_the_password_prompt_with_the_password(service, tmp_path):
    script = tmp_path / "check"
    script.write_text(CHECKER)
    script.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    name = service(f"auth required pam_exec.so quiet expose_authtok {script}\naccount required pam_permit.so\n")
    said = []
    log = lambda m, p: said.append(m)                                        # noqa: E731
    assert pam.authenticate(name, "nobody", bytearray(b"right pass"), "192.0.2.5", log) is None
    why = pam.authenticate(name, "nobody", bytearray(b"wrong pass"), "192.0.2.5", log)
    assert why and "pam_authenticate" in why
    assert pam.authenticate(name, "nobody", bytearray(b"right pass"), "198.51.100.1", log)    # PAM_RHOST set
    assert not any("pass" in m for m in said)
    assert pam.authenticate(name, "nobody", bytearray(), "192.0.2.5", log) == "no password"


@root
def test_authenticate_needs_both_stacks_and_its_own_service(service):
    deny_account = service("auth required pam_permit.so\naccount required pam_deny.so\n")
    why = pam.authenticate(deny_account, "nobody", bytearray(b"x"), "192.0.2.5", lambda m, p: None)
    assert why and why.startswith("account of nobody")
    missing = f"gpusched-test-missing-{uuid.uuid4().hex[:8]}"        # never PAM's `other` in its place
    assert "no PAM service" in pam.authenticate(missing, "nobody", bytearray(b"x"), "192.0.2.5",
                                                lambda m, p: None)


def _messages(*pairs):
    msgs = [pam._Message(style, text) for style, text in pairs]
    arr = (ctypes.POINTER(pam._Message) * len(msgs))(*[ctypes.pointer(m) for m in msgs])
    return msgs, arr


@root
def test_the_conversation_answers_one_hidden_prompt_once_and_nothing_else(service):
    name = service("auth required pam_permit.so\naccount required pam_permit.so\n")
    said = []
    p = pam.Pam(name, "nobody", lambda m, prio: said.append(m), secret=bytearray(b"s3cret"))
    try:
        out = ctypes.POINTER(pam._Response)()
        _, arr = _messages((pam.PAM_TEXT_INFO, b"hello"), (pam.PAM_PROMPT_ECHO_OFF, b"Password: "))
        assert p._converse(2, arr, ctypes.pointer(out), None) == pam.PAM_SUCCESS
        assert out[0].resp is None and out[1].resp == b"s3cret"
        for k in range(2):                                      # what PAM would free
            raw = ctypes.cast(out, ctypes.POINTER(pam._Reply))[k].resp
            if raw:
                p.libc.free(raw)
        p.libc.free(ctypes.cast(out, ctypes.c_void_p))
        again = ctypes.POINTER(pam._Response)()
        _, arr = _messages((pam.PAM_PROMPT_ECHO_OFF, b"New password: "))
        assert p._converse(1, arr, ctypes.pointer(again), None) == pam.PAM_CONV_ERR     # answered once only
        _, arr = _messages((pam.PAM_PROMPT_ECHO_ON, b"login: "))
        assert p._converse(1, arr, ctypes.pointer(again), None) == pam.PAM_CONV_ERR     # nothing echoed
        assert "hello" in " ".join(said) and not any("s3cret" in m for m in said)
    finally:
        p.end()
    job = pam.Pam(name, "nobody", lambda m, prio: None)           # a job's: no secret, no answer at all
    try:
        _, arr = _messages((pam.PAM_PROMPT_ECHO_OFF, b"Password: "))
        assert job._converse(1, arr, ctypes.pointer(ctypes.POINTER(pam._Response)()), None) == pam.PAM_CONV_ERR
    finally:
        job.end()


# --- sessions and cookies -------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_cookies_are_secure_httponly_strict():
    c = cookie(sessionsmod.COOKIE, "abc", 43200)
    assert c.startswith("__Host-gpusched-session=abc; ")
    parts = set(c.split("; "))
    assert {"Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=43200"} <= parts
    assert not any(p.lower().startswith("domain=") for p in parts)       # __Host-: this host only


def test_sessions_expire_when_idle_and_after_their_lifetime():
    clock = Clock()
    s = Sessions(clock)
    a = s.create(1000, "alice")
    assert len(a.sid) >= 43 and s.get(a.sid) is a
    clock.t += sessionsmod.IDLE - 1
    assert s.get(a.sid) is a                                   # a request: the idle time starts again
    clock.t += sessionsmod.IDLE + 1
    assert s.get(a.sid) is None                                # idle too long
    b = s.create(1000, "alice")
    for _ in range(int(sessionsmod.LIFETIME // 1800) + 1):
        clock.t += 1800
        s.get(b.sid)
    assert s.get(b.sid) is None                                # 12 h at most, however busy
    c = s.create(1000, "alice")
    s.drop(c.sid)
    assert s.get(c.sid) is None and s.get(None) is None and s.get("x" * 200) is None


def test_sessions_are_bounded_per_person_and_in_all(monkeypatch):
    clock = Clock()
    s = Sessions(clock)
    first = s.create(1000, "alice")
    for _ in range(sessionsmod.PER_UID):
        clock.t += 1
        s.create(1000, "alice")
    assert s.get(first.sid) is None and len(s) == sessionsmod.PER_UID      # the oldest one ended
    monkeypatch.setattr(sessionsmod, "TOTAL", sessionsmod.PER_UID + 2)
    s.create(1001, "bob")
    s.create(1002, "carol")
    with pytest.raises(sessionsmod.Full):
        s.create(1003, "dave")


# --- the dashboard beyond loopback, over a fake daemon -----------------------------------------------------------

aiohttp = pytest.importorskip("aiohttp", reason="python3-aiohttp is not installed (scripts/setup-deps)")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from gpusched import people  # noqa: E402
from gpusched.web import login as loginmod  # noqa: E402
from gpusched.web.daemon import DaemonError  # noqa: E402
from gpusched.web.server import Dashboard  # noqa: E402
from tests.test_web import FakeDaemon  # noqa: E402


class SignInDaemon(FakeDaemon):
    """The fake daemon with the sign-in calls: alice's password is "right"; "slow" takes a few polls."""

    def __init__(self):
        super().__init__()
        self.tickets: dict[str, list] = {}
        self.sources: list[str] = []

    async def as_user(self, uid, verb, *args):
        if verb == "authenticate":
            user, password, source = args
            self.sources.append(source)
            if user == "locked":
                raise DaemonError("too many failed sign-ins for this name or from this address: try again in 9 s")
            ticket = f"t{len(self.tickets)}"
            ok = (user, password) == ("alice", "right")
            self.tickets[ticket] = [3, {"done": True, "uid": 1000, "name": "alice"} if ok else
                                    {"done": True, "uid": None, "message": webauth.REFUSED}]
            return {"ticket": ticket}
        if verb == "auth_result":
            left = self.tickets[args[0]]
            left[0] -= 1
            return left[1] if left[0] <= 0 else {"done": False}
        return await super().as_user(uid, verb, *args)


FAR = {"Host": "gpu1.lab:8443"}
ORIGIN = dict(FAR, Origin="https://gpu1.lab:8443")


def _far(fn):
    """fn(client, dash, daemon) against a dashboard whose every connection comes from beyond loopback (over
    TLS: the test pretends, as aiohttp's test client speaks plain HTTP)."""
    daemon = SignInDaemon()
    dash = Dashboard(daemon, 8443, own_uid=999, secret=b"s" * 32, lookup=lambda _p, _s: 1001,
                     person=lambda u: people.in_range(u, (1000, 60000)), far_names=("gpu1.lab",),
                     far=lambda _sockname: True)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(loginmod, "POLL", 0.01)
    monkey.setattr(aiohttp.web.BaseRequest, "secure", property(lambda self: True))

    async def go():
        client = TestClient(TestServer(dash.app(), host="127.0.0.1"))
        await client.start_server()
        try:
            return await fn(client, dash, daemon)
        finally:
            await client.close()
    try:
        return asyncio.run(go())
    finally:
        monkey.undo()


class Browser:
    """A client that keeps the cookies the dashboard sets and sends them back by hand: aiohttp's cookie jar
    would keep none of ours (they are Secure and this test client speaks plain HTTP)."""

    def __init__(self, client):
        self.client, self.cookies = client, {}

    def _headers(self, headers):
        h = dict(headers)
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return h

    def _keep(self, r):
        for c in r.headers.getall("Set-Cookie", []):
            name, _, rest = c.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return r

    async def get(self, path, headers=FAR):
        return self._keep(await self.client.get(path, headers=self._headers(headers), allow_redirects=False))

    async def post(self, path, data, headers=ORIGIN):
        return self._keep(await self.client.post(path, data=data, headers=self._headers(headers),
                                                 allow_redirects=False))

    async def token(self, path="/login"):
        r = await self.get(path)
        assert r.status == 200, (path, r.status)
        return re.search(r'name="csrf" value="([0-9a-f]+)"', await r.text()).group(1)

    async def sign_in(self, user="alice", password="right"):
        return await self.post("/login", {"csrf": await self.token(), "user": user, "password": password})


def test_beyond_loopback_nothing_but_the_sign_in_form_without_a_session():
    async def fn(client, dash, daemon):
        b = Browser(client)
        for path in ("/", "/queue", "/jobs/7", "/usage", "/submit"):
            r = await b.get(path)
            # not even the public view; the form brings them back to the page asked for
            assert r.status == 303 and r.headers["Location"] == ("/login" if path == "/" else f"/login?next={path}")
        r = await b.post("/jobs/7/cancel", {"csrf": "x"})
        assert r.status == 403 and not daemon.acts
        assert (await b.get("/static/style.css")).status == 200
        assert (await b.get("/queue", {"Host": "evil.example:8443"})).status == 421
        r = await b.get("/login")
        assert 'type="password"' in await r.text()
        form_cookie = r.headers["Set-Cookie"]
        assert form_cookie.startswith(loginmod.FORM_COOKIE + "=")
        assert {"Secure", "HttpOnly", "SameSite=Strict"} <= set(form_cookie.split("; "))
    _far(fn)


def test_sign_in_gives_a_secure_session_and_the_persons_own_view():
    async def fn(client, dash, daemon):
        b = Browser(client)
        r = await b.sign_in()
        assert r.status == 303 and r.headers["Location"] == "/"
        session = next(c for c in r.headers.getall("Set-Cookie") if c.startswith(sessionsmod.COOKIE + "="))
        assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} <= set(session.split("; "))
        assert loginmod.FORM_COOKIE not in b.cookies              # the form's cookie is done with
        assert daemon.sources == ["127.0.0.1"]              # the connection's address, for the daemon's counts
        r = await b.get("/queue")
        text = await r.text()
        assert r.status == 200 and "signed in as <b>alice</b>" in text and 'id="logout"' in text
        # the session's uid is who acts (not the kernel's owner of the connection, 1001 here)
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', text).group(1)
        assert token != csrf.token(dash.secret, 1000)      # a session's token is its own, not the uid's
        r = await b.post("/jobs/7/cancel", {"csrf": csrf.token(dash.secret, 1000)})
        assert r.status == 403 and not daemon.acts
        r = await b.post("/jobs/7/cancel", {"csrf": token}, dict(FAR, Origin="https://evil.example"))
        assert r.status == 403 and not daemon.acts
        r = await b.post("/jobs/7/cancel", {"csrf": token})
        assert r.status == 303 and daemon.acts == [(1000, "cancel", 7)]
    _far(fn)


def test_a_wrong_password_and_an_unknown_user_get_the_same_words():
    async def fn(client, dash, daemon):
        b = Browser(client)
        texts = []
        for user, password in (("alice", "wrong"), ("nosuchuser", "right")):
            r = await b.sign_in(user, password)
            assert r.status == 401 and sessionsmod.COOKIE not in b.cookies
            texts.append(re.search(r'id="error">([^<]*)<', await r.text()).group(1))
        assert texts == [webauth.REFUSED] * 2
        r = await b.sign_in("locked", "x")
        assert r.status == 429 and "try again in 9 s" in await r.text()
        assert (await b.get("/queue")).status == 303
    _far(fn)


def test_the_sign_in_form_needs_its_token_its_cookie_and_our_origin():
    async def fn(client, dash, daemon):
        b = Browser(client)
        token = await b.token()
        data = {"user": "alice", "password": "right"}
        assert (await b.post("/login", data)).status == 403                                    # no token
        r = await b.post("/login", dict(data, csrf=token), dict(FAR, Origin="https://evil.example"))
        assert r.status == 403                                                                   # another site
        b.cookies.clear()
        assert (await b.post("/login", dict(data, csrf=token))).status == 403     # the token without its cookie
        assert daemon.sources == []                                               # the daemon was never asked
    _far(fn)


def test_sign_out_ends_the_session_on_the_server():
    async def fn(client, dash, daemon):
        b = Browser(client)
        await b.sign_in()
        sid = b.cookies[sessionsmod.COOKIE]
        token = await b.token("/")
        assert (await b.post("/logout", {"csrf": "wrong"})).status == 403
        assert dash.login.sessions.get(sid) is not None
        r = await b.post("/logout", {"csrf": token})
        assert r.status == 303 and r.headers["Location"] == "/login"
        assert sessionsmod.COOKIE not in b.cookies                                # the browser forgets it
        assert dash.login.sessions.get(sid) is None                               # and so does the server
        b.cookies[sessionsmod.COOKIE] = sid                                       # an old copy, replayed
        assert (await b.get("/queue")).status == 303
    _far(fn)


def test_beyond_loopback_plain_http_is_refused():
    daemon = SignInDaemon()
    dash = Dashboard(daemon, 8443, own_uid=999, far_names=("gpu1.lab",), far=lambda _s: True)

    async def go():
        client = TestClient(TestServer(dash.app(), host="127.0.0.1"))
        await client.start_server()
        try:
            r = await client.get("/login", headers=FAR)
            return r.status, await r.text()
        finally:
            await client.close()
    status, text = asyncio.run(go())
    assert status == 403 and "HTTPS only" in text


def test_on_loopback_there_is_nothing_to_sign_in_to():
    from tests.test_web import H, _run

    async def fn(client, dash, daemon):
        assert (await client.get("/login", headers=H)).status == 404
        r = await client.get("/queue", headers=H)
        assert "signed in as <b>alice</b>" in await r.text() and 'id="logout"' not in await r.text()
    _run(1000, fn)


def test_after_signing_in_only_a_page_of_this_site_is_gone_back_to():
    from gpusched.web.login import landing
    assert landing("/jobs/7") == "/jobs/7" and landing("/queue?user=alice&page=2") == "/queue?user=alice&page=2"
    for elsewhere in ("//evil.example/x", "/\\evil.example", "https://evil.example/", "javascript:alert(1)",
                      "/x\r\nSet-Cookie: a=b", "", "/login?next=/x", "/logout", "/" + "a" * 2000):
        assert landing(elsewhere) == "/", elsewhere
