"""The dashboard's door (web/gate.py), its sockets (web/listeners.py) and its socket unit's generator
(web/generator.py): real loopback sockets and a real aiohttp server; only the owner of each connection is
made up (the kernel's answer is tested in test_web.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from gpusched.web import gate, generator, listeners  # noqa: E402
from gpusched.web.server import Dashboard  # noqa: E402


async def _serve(door: gate.Gate, handler=None):
    """An aiohttp app behind `door` on a free loopback port: (runner, port)."""
    async def default(request):
        return web.Response(text="ok")

    @web.middleware
    async def track(request, handler):                   # what server.py's guard does around each request
        door.enter(request.transport)
        try:
            return await handler(request)
        finally:
            door.leave(request.transport)

    app = web.Application(middlewares=[track])
    app.add_routes([web.get("/", handler or default)])
    runner = web.AppRunner(app, keepalive_timeout=door.idle)
    await runner.setup()
    sock = listeners.bind("127.0.0.1", 0)
    await listeners.GatedSite(runner, sock, door).start()
    return runner, sock.getsockname()[1]


async def _connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def _get(port: int) -> bytes:
    reader, writer = await _connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_one_owner_past_its_cap_is_refused_with_a_reason_and_others_still_get_in():
    owners = {"who": "mallory"}

    async def go():
        door = gate.Gate(lambda t: owners["who"], per_owner=3, total=100, idle=30)
        runner, port = await _serve(door)
        try:
            held = [await _connect(port) for _ in range(3)]
            await asyncio.sleep(0.1)
            assert door.open == {"mallory": 3}
            reader, _ = await _connect(port)               # the fourth: told why, then closed
            refused = await asyncio.wait_for(reader.read(), 5)
            assert refused.startswith(b"HTTP/1.1 503") and b"3 connections" in refused
            owners["who"] = "alice"                        # someone else is not stalled by mallory
            assert b"200 OK" in await _get(port)
            held[0][1].close()                             # mallory closes one: she may open one again
            await asyncio.sleep(0.1)
            owners["who"] = "mallory"
            assert b"200 OK" in await _get(port)
            assert door.refused == 1
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_everyone_together_is_capped_too():
    n = iter(range(1000))

    async def go():
        door = gate.Gate(lambda t: next(n), per_owner=10, total=2, idle=30)
        runner, port = await _serve(door)
        try:
            held = [await _connect(port) for _ in range(2)]
            await asyncio.sleep(0.1)
            reader, _ = await _connect(port)
            assert b"too many connections" in await asyncio.wait_for(reader.read(), 5)
            assert len(held) == 2 and door.refused == 1
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_the_network_fills_its_share_and_people_on_the_server_still_get_in():
    who = {"owner": None}
    n = iter(range(1000))

    async def go():
        door = gate.Gate(lambda t: who["owner"] or gate.far_owner(f"2001:db8:{next(n):x}::1"), per_owner=10,
                         total=6, idle=30, kind_totals={gate.FAR: 3})
        runner, port = await _serve(door)
        try:
            held = [await _connect(port) for _ in range(3)]     # three /64s: the network's share is full
            await asyncio.sleep(0.1)
            reader, _ = await _connect(port)
            assert b"too many connections" in await asyncio.wait_for(reader.read(), 5)
            who["owner"] = ("uid", 1000)                        # alice through ssh -L is not refused
            assert b"200 OK" in await _get(port)
            assert len(held) == 3 and door.kinds[gate.FAR] == 3
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_a_tls_connection_is_counted_before_its_handshake(tmp_path):
    # counted only after it, connections that never finish one were no one's: the network could open them
    # until the process had no descriptor left, for loopback's people too
    import ssl
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    client_tls.check_hostname = False

    async def go():
        door = gate.Gate(lambda t: gate.far_owner(t.get_extra_info("peername")[0]), per_owner=2, total=100,
                         idle=30)
        async def ok(request):
            return web.Response(text="ok")
        app = web.Application()
        app.add_routes([web.get("/", ok)])
        runner = web.AppRunner(app)
        await runner.setup()
        sock = listeners.bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        await listeners.GatedSite(runner, sock, door, ssl_context=server_tls).start()
        try:
            silent = [await _connect(port) for _ in range(2)]      # TCP only: no ClientHello, ever
            await asyncio.sleep(0.1)
            assert door.open == {gate.far_owner("127.0.0.1"): 2}
            reader, _ = await _connect(port)                       # the third: closed at once, in clear
            assert await asyncio.wait_for(reader.read(), 5) == b""
            silent[0][1].close()
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"200 OK" in await asyncio.wait_for(reader.read(), 5)
            assert door.refused == 1
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_a_far_owner_is_an_ipv4_address_or_an_ipv6_slash_64():
    assert gate.far_owner("192.0.2.7") == (gate.FAR, "192.0.2.7")
    assert gate.far_owner("::ffff:192.0.2.7") == (gate.FAR, "192.0.2.7")
    # one host picks any address of its /64: they are one owner
    assert gate.far_owner("2001:db8:1:2:aaaa::1") == gate.far_owner("2001:db8:1:2:ffff:1:2:3%eth0") == \
        (gate.FAR, "2001:db8:1:2::/64")
    assert gate.far_owner("2001:db8:1:3::1") != gate.far_owner("2001:db8:1:2::1")


def test_a_connection_that_sends_nothing_or_drips_its_headers_is_closed_when_idle():
    async def go():
        door = gate.Gate(lambda t: "mallory", per_owner=10, total=100, idle=0.5)
        runner, port = await _serve(door)
        try:
            silent_r, _ = await _connect(port)
            drip_r, drip_w = await _connect(port)
            start = time.monotonic()
            drip_w.write(b"GET / HTTP/1.1\r\n")
            for _ in range(3):
                await asyncio.sleep(0.2)
                drip_w.write(b"X-a: b\r\n")                  # never ends its headers
            assert await asyncio.wait_for(silent_r.read(), 5) == b""
            assert await asyncio.wait_for(drip_r.read(), 5) == b""
            assert time.monotonic() - start < 3
            await asyncio.sleep(0.1)
            assert door.open == {}                         # counted out again
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_a_request_in_progress_outlasts_the_idle_deadline_and_keep_alive_then_ends():
    async def slow(request):
        await asyncio.sleep(1.0)                           # twice the idle deadline
        return web.Response(text="done")

    async def go():
        door = gate.Gate(lambda t: "alice", per_owner=10, total=100, idle=0.5)
        runner, port = await _serve(door, slow)
        try:
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")      # keep-alive
            head = await asyncio.wait_for(reader.readuntil(b"done"), 5)
            assert b"200 OK" in head
            assert await asyncio.wait_for(reader.read(), 5) == b""   # then idle: closed
        finally:
            await runner.cleanup()
    asyncio.run(go())


@pytest.mark.parametrize("pause", [0.02, 0])
def test_a_connection_sending_many_requests_ahead_is_cut_and_a_few_are_answered(pause, caplog):
    # aiohttp queues every pipelined request it parses, unbounded: 50 MB of them grew the service by 2 GB
    async def slow(request):
        if pause:
            await asyncio.sleep(pause)
        return web.Response(text="ok")

    async def go():
        errors = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        door = gate.Gate(lambda t: "mallory", per_owner=10, total=100, idle=30)
        runner, port = await _serve(door, slow)
        try:
            one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            reader, writer = await _connect(port)
            writer.write(one * 3 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 5)).count(b"200 OK") == 4     # a few: all answered
            reader, writer = await _connect(port)
            writer.write(one * 20000)                           # 600 KB of them at once
            got = b""
            with pytest.raises(ConnectionResetError):
                while (chunk := await asyncio.wait_for(reader.read(65536), 5)):
                    got += chunk
                raise ConnectionResetError("closed")
            assert got.count(b"200 OK") <= gate.PIPELINE + 2 and door.cut == 1
            await asyncio.sleep(0.1)
            assert door.open == {}
            gc.collect()                                        # a task's exception never retrieved shows now
            await asyncio.sleep(0)
            assert not errors                                   # and aiohttp went quietly
        finally:
            await runner.cleanup()
    asyncio.run(go())
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def _tiny_window(port: int):
    """A connection whose reader takes almost nothing (a 2 KiB receive buffer) until it reads."""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=s)


def test_a_reader_that_does_not_take_its_answer_is_cut_and_a_slow_one_is_not():
    async def big(request):
        return web.Response(body=b"x" * (8 << 20))

    async def go():
        door = gate.Gate(lambda t: "mallory", per_owner=10, total=100, idle=0.3)
        runner, port = await _serve(door, big)
        try:
            stuck_r, stuck_w = await _tiny_window(port)
            stuck_w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")      # and never reads
            slow_r, slow_w = await _tiny_window(port)
            slow_w.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got, start = 0, time.monotonic()
            while (chunk := await asyncio.wait_for(slow_r.read(1 << 20), 5)):
                got += len(chunk)
                await asyncio.sleep(0.1)                        # slower than the idle deadline, but taking it
            assert got > 8 << 20 and door.stalled == 1, (got, door.stalled)
            assert time.monotonic() - start > 0.6               # several idle periods passed while it read
            await asyncio.sleep(0.1)
            assert door.open == {}                              # the stuck one's place is free
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_plan_serves_systemds_sockets_for_the_configured_addresses_and_binds_the_rest():
    a = listeners.bind("127.0.0.1", 0)
    b = listeners.bind("127.0.0.1", 0)
    try:
        pa = a.getsockname()[1]
        use, bind, stray = listeners.plan([("127.0.0.1", pa), ("127.0.0.2", pa)], [a, b])
        assert use == [a] and bind == [("127.0.0.2", pa)] and stray == [b]
        assert not listeners.is_far(a)
    finally:
        a.close()
        b.close()


def test_sockets_from_systemd_are_taken_only_when_meant_for_this_process():
    assert listeners.inherited({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, pid=2) == []
    sock = listeners.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    code = ("from gpusched.web import listeners; import os; s = listeners.inherited(); "
            "print([listeners.address_of(x) for x in s], os.environ.get('LISTEN_FDS'))")
    try:
        out = subprocess.run(["bash", "-c", f"LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -c \"{code}\" "
                                          f"3<&{sock.fileno()}"],
                             pass_fds=(sock.fileno(),), capture_output=True, text=True, timeout=30,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finally:
        sock.close()
    assert out.stdout.strip() == f"[('127.0.0.1', {port})] None", out.stderr


def _generate(tmp_path, monkeypatch, config: str, out: str) -> list[str] | None:
    """Run the generator on this config into tmp_path/out: the drop-in's lines after its comment, or None
    when it wrote none. It must exit 0 whatever happens (it runs at boot)."""
    conf = tmp_path / "gpusched.toml"
    conf.write_text(config)
    monkeypatch.setenv("GPUSCHED_CONFIG", str(conf))
    assert generator.main(["gen", str(tmp_path / out)]) == 0
    dropin = tmp_path / out / generator.DROPIN
    return dropin.read_text().splitlines()[1:] if dropin.exists() else None


TLS = 'tls_cert = "/etc/c.pem"\ntls_key = "/etc/k.pem"\n'


def test_the_generator_writes_web_listen_into_the_socket_unit(tmp_path, monkeypatch):
    lines = _generate(tmp_path, monkeypatch, '[web]\nlisten = ["127.0.0.1", "::1", "10.1.2.3"]\nport = 9443\n' + TLS,
                      "out")
    assert lines == ["[Socket]", "ListenStream=", "ListenStream=127.0.0.1:9443", "ListenStream=[::1]:9443",
                     "ListenStream=10.1.2.3:9443"]
    # invalid: nothing written, the boot goes on
    assert _generate(tmp_path, monkeypatch, "[web]\nport = 0\n", "bad") is None


def test_the_generator_leaves_out_what_systemd_would_misread_and_never_fails(tmp_path, monkeypatch, capsys):
    # a scope is a % in a unit file, one of systemd's specifiers: %i (empty) made fe80::1%ib0 into fe80::1b0
    lines = _generate(tmp_path, monkeypatch,
                      '[web]\nlisten = ["127.0.0.1", "fe80::1%ib0", "::1%lo"]\nport = 9443\n' + TLS, "out")
    assert lines == ["[Socket]", "ListenStream=", "ListenStream=127.0.0.1:9443"]
    assert "'fe80::1%ib0'" in capsys.readouterr().err
    # nothing left for systemd: its unit's own addresses
    assert _generate(tmp_path, monkeypatch, '[web]\nlisten = ["::1%lo"]\n', "none") is None
    (tmp_path / "file").write_text("")                 # an output directory that can't be made: still 0
    assert _generate(tmp_path, monkeypatch, "[web]\nport = 9000\n", "file") is None


def _dashboard():
    class Quiet:
        async def as_user(self, uid, verb, *args):
            return {"uid": uid, "name": "alice", "admin": False}
    return Dashboard(Quiet(), 8765, own_uid=999, secret=b"s" * 32, lookup=lambda _p, _s: 1000,
                     person=lambda u: True)


def test_a_post_that_is_not_a_form_or_whose_body_never_comes_is_refused(monkeypatch):
    from gpusched.web import server
    monkeypatch.setattr(server, "BODY_SECONDS", 0.3)

    async def go():
        runner = web.AppRunner(_dashboard().app(), lingering_time=0.5)   # how long a refused body is drained
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            head = b"POST /jobs/7/cancel HTTP/1.1\r\nHost: localhost:8765\r\nOrigin: http://localhost:8765\r\n"
            reader, writer = await _connect(port)
            writer.write(head + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            assert b" 415 " in await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            reader, writer = await _connect(port)
            writer.write(head + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\nc")
            assert b" 408 " in await asyncio.wait_for(reader.readline(), 5)
            writer.close()
        finally:
            await runner.cleanup()
    asyncio.run(go())


def test_the_viewer_is_the_owner_the_gate_found_at_accept_not_a_second_lookup():
    # the gate asked the kernel once, when it admitted the connection; each request on it reuses that answer
    asked = []

    class Daemon:
        async def as_user(self, uid, verb, *args):
            return {"uid": uid, "name": {1000: "alice"}[uid], "admin": False}

    def lookup(peer, sock):
        asked.append(peer)
        return 1001                                   # what a second look would wrongly say

    async def go():
        door = gate.Gate(lambda t: (gate.LOOPBACK, 1000), per_owner=10, total=100, idle=30)
        dash = Dashboard(Daemon(), 8765, own_uid=999, secret=b"s" * 32, lookup=lookup, person=lambda u: True,
                         gate=door)
        runner = web.AppRunner(dash.app())
        await runner.setup()
        sock = listeners.bind("127.0.0.1", 0)
        await listeners.GatedSite(runner, sock, door).start()
        try:
            reader, writer = await _connect(sock.getsockname()[1])
            writer.write(b"GET /submit HTTP/1.1\r\nHost: localhost:8765\r\nConnection: close\r\n\r\n")
            page = await asyncio.wait_for(reader.read(), 5)
            assert b"signed in as <b>alice</b>" in page and not asked, page[-300:]
        finally:
            await runner.cleanup()
    asyncio.run(go())
