"""The web dashboard's pure parts and its HTTP layer over a fake daemon: identity from the kernel's socket
table (peer.py, with real loopback sockets), escaping of hostile names, the CSRF and Host checks, what the
public view leaves out. The daemon side of its calls (webcalls.py) is in test_webcalls.py."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="python3-aiohttp is not installed (scripts/setup-deps)")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from gpusched import people  # noqa: E402
from gpusched.web import csrf, pages, peer, server  # noqa: E402
from gpusched.web.daemon import DaemonError  # noqa: E402
from gpusched.web.server import Dashboard  # noqa: E402

# --- peer.py: the socket table -------------------------------------------------------------------------------

LE = sys.byteorder == "little"


def test_decode_ipv4_and_ipv6_addresses():
    assert peer.decode_address(("0100007F" if LE else "7F000001") + ":1F90") == ("127.0.0.1", 8080)
    v6 = ("00000000000000000000000001000000" if LE else "00000000000000000000000000000001") + ":2255"
    assert peer.decode_address(v6) == ("::1", 0x2255)
    mapped = ("0000000000000000FFFF00000100007F" if LE else "0000000000000000 0000FFFF7F000001".replace(" ", ""))
    assert peer.decode_address(mapped + ":0050") == ("127.0.0.1", 80)


def _line(local: str, remote: str, state: str, uid: int, inode: int) -> str:
    return (f"   1: {local} {remote} {state} 00000000:00000000 00:00000000 00000000  {uid:5d}        0 {inode} 1 "
            f"0000000000000000 20 4 30 10 -1")


LO = "0100007F" if LE else "7F000001"
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"


def test_find_owner_picks_the_client_end_and_only_an_established_one():
    server = ("127.0.0.1", 8765)
    lines = [HEADER,
             _line(f"{LO}:223D", f"{LO}:A000", "01", 999, 11),      # the server's own accepted socket
             _line(f"{LO}:A000", f"{LO}:223D", "01", 1001, 12),     # the client's: uid 1001
             _line(f"{LO}:A001", f"{LO}:223D", "06", 0, 0)]         # TIME_WAIT: uid 0, no inode
    assert peer.find_owner(lines, ("127.0.0.1", 0xA000), server) == 1001
    assert peer.find_owner(lines, ("127.0.0.1", 0xA001), server) is None     # closed: no one, not root
    assert peer.find_owner(lines, ("127.0.0.1", 0xA002), server) is None     # not there
    assert peer.find_owner(["garbage", "1: zz:zz"], ("127.0.0.1", 1), server) is None


def _connect_as(uid: int, client_family: int, via: str, port: int) -> tuple[int, int]:
    """A child process that drops to `uid`, connects, and holds the connection until its pipe closes: (pid,
    the write end to close)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # the child: never returns into pytest
        try:
            os.close(hold_w)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            client = socket.socket(client_family)
            client.connect((via, port))
            os.write(ready_w, b"x")
            os.read(hold_r, 1)
            client.close()
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return pid, hold_w


@pytest.mark.parametrize("kernel", [peer.ask_kernel, None], ids=["sock_diag", "proc-table"])
@pytest.mark.parametrize("family,host,client_family,via", [
    (socket.AF_INET, "127.0.0.1", socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1", socket.AF_INET6, "::1"),
    # a dual-stack client: an IPv6 socket to ::ffff:127.0.0.1 is listed in tcp6, the connection is IPv4
    (socket.AF_INET, "127.0.0.1", socket.AF_INET6, "::ffff:127.0.0.1")])
def test_owner_of_a_real_loopback_connection_is_the_uid_that_made_it(family, host, client_family, via, kernel):
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another uid")
    try:
        listener = socket.socket(family)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    listener.listen()
    pid, hold = _connect_as(65534, client_family, via, listener.getsockname()[1])
    accepted, _ = listener.accept()
    try:
        assert peer.owner_uid(accepted.getpeername(), accepted.getsockname(), kernel=kernel) == 65534
        os.close(hold)                               # the client's end is gone: no owner any more
        os.waitpid(pid, 0)
        assert peer.owner_uid(accepted.getpeername(), accepted.getsockname(), kernel=kernel) is None
    finally:
        accepted.close()
        listener.close()


def test_sock_diag_replies_are_read_strictly():
    import struct
    msg = struct.pack("=BBBB48xIIIII", socket.AF_INET, peer.TCP_ESTABLISHED, 0, 0, 0, 0, 0, 1001, 77)
    hdr = peer.NLMSG_HDR.pack(16 + len(msg), peer.SOCK_DIAG_BY_FAMILY, 0, 1, 0)
    assert peer.diag_owner(hdr + msg) == 1001
    closed = struct.pack("=BBBB48xIIIII", socket.AF_INET, 6, 0, 0, 0, 0, 0, 0, 0)    # TIME_WAIT: uid 0, no inode
    assert peer.diag_owner(hdr + closed) is None
    error = peer.NLMSG_HDR.pack(36, peer.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    assert peer.diag_owner(error) is None
    assert peer.diag_owner(b"") is None and peer.diag_owner((hdr + msg)[:40]) is None


def test_not_loopback_has_no_owner():
    assert peer.owner_uid(("192.0.2.1", 5555), ("127.0.0.1", 8765)) is None
    assert peer.owner_uid(("127.0.0.1", 5555), ("192.0.2.1", 8765)) is None
    assert peer.owner_uid(("nonsense", "x"), ("127.0.0.1", 8765)) is None


# --- csrf.py --------------------------------------------------------------------------------------------------

def test_host_and_origin_checks():
    hosts = csrf.allowed_hosts(8765)
    assert csrf.host_ok("localhost:8765", hosts) and csrf.host_ok("[::1]:8765", hosts)
    assert not csrf.host_ok("evil.example:8765", hosts) and not csrf.host_ok("localhost:9999", hosts)
    origins = csrf.allowed_origins(8765)
    assert csrf.post_refusal("http://localhost:8765", None, origins) == ""
    assert csrf.post_refusal("http://evil.example", None, origins)
    assert csrf.post_refusal("https://localhost:8765", None, origins)       # not ours: we serve http
    assert csrf.post_refusal("null", "http://127.0.0.1:8765/jobs/1", origins) == ""
    assert csrf.post_refusal("null", None, origins)
    assert csrf.post_refusal(None, None, origins)
    key = b"k" * 32
    assert csrf.token_ok(key, 1000, csrf.token(key, 1000))
    assert not csrf.token_ok(key, 1001, csrf.token(key, 1000))
    assert not csrf.token_ok(key, None, csrf.token(key, 1000))
    assert not csrf.token_ok(b"x" * 32, 1000, csrf.token(key, 1000))


# --- pages.py: hostile names ------------------------------------------------------------------------------------

EVIL = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>\x1b[2J'


def _job(**kw):
    job = {"id": 7, "name": EVIL, "user": "alice", "uid": 1000, "state": "running", "reason": EVIL,
           "tags": [EVIL], "gpus": [{"index": 0, "uuid": "GPU-x"}], "submitted": "2026-01-01T10:00:00"}
    job.update(kw)
    return job


def _no_markup_from_users(text: str) -> None:
    assert "<script>" not in text and "<img" not in text and "\x1b" not in text
    assert "&lt;script&gt;" in text


def test_hostile_names_are_escaped_everywhere():
    alice = pages.Viewer(1000, "alice", token="t")
    _no_markup_from_users(pages.queue_page([_job()], alice))
    _no_markup_from_users(pages.job_page(_job(source=EVIL, log="/var/lib/gpusched/logs/7.log"), alice))
    _no_markup_from_users(pages.submit_page(alice, EVIL, problems=EVIL))
    _no_markup_from_users(pages.layout("x", "", pages.Viewer(1000, EVIL)))
    gpus = {"gpus": [{"index": 0, "name": EVIL, "memory_total": 1 << 30, "memory_free": 0, "state": "foreign",
                      "foreign": [{"user": EVIL, "pid": 1, "command": EVIL}]}]}
    _no_markup_from_users(pages.gpus_page(gpus, {}, 0.0, alice))


def test_public_view_of_a_job_has_no_log_nor_actions():
    public = pages.Viewer(None)
    text = pages.job_page(_job(name="train"), public)
    assert 'id="log"' not in text and "do-cancel" not in text and 'id="no-log"' in text
    bob = pages.Viewer(1001, "bob", token="t")
    assert "do-cancel" not in pages.job_page(_job(name="train"), bob)
    alice = pages.Viewer(1000, "alice", token="t")
    assert "do-cancel" in pages.job_page(_job(name="train"), alice) and 'id="log"' in pages.job_page(_job(), alice)


def test_queue_folds_arrays_filters_and_pages():
    jobs = [dict(_job(id=i, name=f"sweep[{i - 10}]", state="queued"), array_id=10, array_index=i - 10)
            for i in range(10, 16)]
    jobs += [_job(id=100 + i, name=f"j{i}", user="bob", uid=1001, state="queued", tags=["big"]) for i in range(250)]
    text = pages.queue_page(jobs, pages.Viewer(None))
    assert "10[6]" in text and "6 queued" in text and "page 1 of 3" in text
    assert "page 1 of 1" in pages.queue_page(jobs, pages.Viewer(None), user="alice")
    assert "(6 rows, 6 jobs)" in pages.queue_page(jobs, pages.Viewer(None), user="alice", expand=True)
    assert "(250 rows" in pages.queue_page(jobs, pages.Viewer(None), tag="big")


def test_queue_of_ten_thousand_jobs_renders_fast():
    import time
    jobs = [_job(id=i, name=f"job-{i}", state="queued") for i in range(1, 10_001)]
    t = time.perf_counter()
    pages.queue_page(jobs, pages.Viewer(1000, "alice"), page=50)
    assert time.perf_counter() - t < 0.5


# --- the HTTP layer over a fake daemon -------------------------------------------------------------------------

class FakeDaemon:
    def __init__(self):
        self.acts: list[tuple] = []
        self.log = [b"line 1\n", b"line 2 <b>\x1b[31m\n"]
        self.calls: list[tuple] = []
        self.quiet = False                      # the log: a running job that prints nothing

    async def call(self, method, *args):
        if method == "Show":
            return {"ok": _job(name="train", state="running")}
        raise AssertionError(method)

    async def gpus(self):
        return {"gpus": [], "simulated": True}

    async def public_page(self, all=False):
        return [{k: v for k, v in _job(name="train").items()}]

    async def user_page(self, uid, all=False):
        return [_job(name="train")]

    async def as_user(self, uid, verb, *args):
        self.calls.append((uid, verb) + args)
        if verb == "whoami":
            names = {1000: "alice", 1001: "bob", 0: "root", 33: "www-data", 65534: "nobody"}
            return {"uid": uid, "name": names[uid], "admin": uid == 0}
        if verb == "gpu_history":
            return {}
        if verb == "show":
            return _job(name="train", log="/var/lib/gpusched/logs/7.log", source="train.toml")
        if verb == "act":
            if uid != 1000:
                raise DaemonError("job 7 belongs to alice; only its owner, root or an admin may cancel it")
            self.acts.append((uid,) + args)
            return "cancelled"
        if verb == "log":
            if uid != 1000:
                raise DaemonError("job 7 belongs to alice; its log is for its owner, root and admins")
            if self.quiet:
                return {"data": "", "offset": 0, "state": "running"}
            i = args[1]
            data = self.log[i] if i < len(self.log) else b""
            state = "running" if i < len(self.log) else "succeeded"
            return {"data": base64.b64encode(data).decode(), "offset": i + 1 if data else i, "state": state}
        raise AssertionError(verb)


def _run(uid, fn, port=8765):
    """fn(client, dash) against a dashboard whose every connection is owned by `uid` (people: 1000 to 60000)."""
    daemon = FakeDaemon()
    dash = Dashboard(daemon, port, own_uid=999, secret=b"s" * 32, lookup=lambda _p, _s: uid,
                     person=lambda u: people.in_range(u, (1000, 60000)))

    async def go():
        client = TestClient(TestServer(dash.app(), host="127.0.0.1"))    # any free port: Host is ours to send
        await client.start_server()
        try:
            return await fn(client, dash, daemon)
        finally:
            await client.close()
    return asyncio.run(go())


H = {"Host": "localhost:8765"}


def test_refuses_a_foreign_host_header():
    async def fn(client, dash, daemon):
        r = await client.get("/queue", headers={"Host": "evil.example:8765"})
        assert r.status == 421
        r = await client.get("/queue", headers=H)
        assert r.status == 200 and "signed in as <b>alice</b>" in await r.text()
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    _run(1000, fn)


def test_actions_need_the_token_and_our_origin():
    async def fn(client, dash, daemon):
        good = csrf.token(dash.secret, 1000)
        ours = dict(H, Origin="http://localhost:8765")
        r = await client.post("/jobs/7/cancel", data={"csrf": "wrong"}, headers=ours, allow_redirects=False)
        assert r.status == 403 and not daemon.acts
        r = await client.post("/jobs/7/cancel", data={"csrf": good}, headers=dict(H, Origin="http://evil.example"),
                              allow_redirects=False)
        assert r.status == 403 and not daemon.acts
        r = await client.post("/jobs/7/cancel", data={"csrf": good}, headers=ours, allow_redirects=False)
        assert r.status == 303 and daemon.acts == [(1000, "cancel", 7)]
    _run(1000, fn)


def test_the_daemons_refusal_is_shown_to_the_other_user():
    async def fn(client, dash, daemon):
        r = await client.post("/jobs/7/cancel", data={"csrf": csrf.token(dash.secret, 1001)},
                              headers=dict(H, Origin="http://localhost:8765"), allow_redirects=False)
        assert r.status == 403 and "belongs to alice" in await r.text() and not daemon.acts
        r = await client.get("/jobs/7/log", headers=H)
        assert r.status == 403
    _run(1001, fn)


def test_public_view_cannot_act_and_sees_no_log():
    async def fn(client, dash, daemon):
        r = await client.get("/jobs/7", headers=H)
        text = await r.text()
        assert "public view" in text and 'id="log"' not in text and "logs/7.log" not in text
        r = await client.post("/jobs/7/cancel", data={"csrf": "x"}, headers=dict(H, Origin="http://localhost:8765"),
                              allow_redirects=False)
        assert r.status == 403 and not daemon.acts
        assert (await client.get("/jobs/7/log", headers=H)).status == 403
    _run(None, fn)
    _run(999, fn)                                    # the web service's own uid is nobody's
    # root and system accounts: their connections come from services (a proxy, a fetcher) that someone steered,
    # so they are not signed in: a root-owned forwarder gives no admin view, a www-data one no jobs as www-data
    for uid in (0, 33, 65534):
        _run(uid, fn)


def test_people_are_the_login_defs_range():
    text = ["# comment", "UID_MIN\t 2000 # people from here", "UID_MAX 0x7fff", "SYS_UID_MAX 999", "junk"]
    assert people.uid_range(text) == (2000, 0x7FFF)
    assert people.uid_range(["UID_MIN x"]) == people.DEFAULTS
    bounds = people.uid_range(text)
    assert [people.in_range(u, bounds) for u in (0, 999, 2000, 0x7FFF, 0x8000)] == [False, False, True, True, False]
    assert not people.in_range(0, (0, 60000))         # root never, whatever the file says


def test_a_user_follows_a_bounded_number_of_logs():
    async def fn(client, dash, daemon):
        daemon.quiet = True
        open_ = [await client.get("/jobs/7/log", headers=H) for _ in range(server.FOLLOW_PER_UID)]
        assert all(r.status == 200 for r in open_)
        r = await client.get("/jobs/7/log", headers=H)
        assert r.status == 429 and "too many logs" in await r.text()
        open_.pop().close()                                # a reader that goes away frees its place
        for _ in range(50):
            if dash._following.get(1000, 0) < server.FOLLOW_PER_UID:
                break
            await asyncio.sleep(0.05)
        r = await client.get("/jobs/7/log", headers=H)
        assert r.status == 200
        for r in open_ + [r]:
            r.close()
        for _ in range(50):                                 # and the daemon is asked no more for them
            if not dash._following:
                break
            await asyncio.sleep(0.05)
        assert dash._following == {}
        n = len(daemon.calls)
        await asyncio.sleep(3 * server.LOG_POLL)
        assert len(daemon.calls) == n
    _run(1000, fn)


def test_names_and_admin_flags_are_asked_again_after_a_while(monkeypatch):
    async def fn(client, dash, daemon):
        for _ in range(3):
            assert (await client.get("/queue", headers=H)).status == 200
        return sum(1 for c in daemon.calls if c[1] == "whoami")
    assert _run(1000, fn) == 1
    monkeypatch.setattr(server, "WHO_TTL", -1.0)
    assert _run(1000, fn) == 3


def test_live_log_streams_escaped_text_then_ends():
    async def fn(client, dash, daemon):
        r = await client.get("/jobs/7/log", headers=H)
        assert r.headers["Content-Type"].startswith("text/event-stream")
        body = (await r.read()).decode()
        assert 'data: "line 1\\n"' in body and "\\\\x1b[31m" in body
        assert body.rstrip().endswith('event: end\ndata: "succeeded"')
    _run(1000, fn)
