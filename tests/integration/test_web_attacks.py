"""The web dashboard attacked by local users in the box (issue 12's red team): who a connection is said to be
when it comes through forwarders, dual-stack sockets and system accounts, what a user can make the daemon do
through it, and the bounds. Plain HTTP clients run as each user (no browser needed: the identity is the
socket's, whatever speaks on it)."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration import test_web, webfar
from tests.integration.test_web import WEB_CALL, _uid

web = test_web.web                 # the fixture: the dashboard running in the box
far = webfar.far                   # the dashboard beyond loopback too, with TLS

# A TCP forwarder: 127.0.0.1:PORT -> 127.0.0.1:8765, run as whichever user the test says (systemd-run).
FORWARDER = r'''
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen()
def pipe(a, b):
    try:
        while (d := a.recv(65536)):
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
while True:
    c, _ = l.accept()
    u = socket.create_connection(("127.0.0.1", 8765))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
'''

# GET a path over a raw socket of the given family and address; prints who the page says we are.
WHO = r'''
import re, socket, sys
family = {"4": socket.AF_INET, "6": socket.AF_INET6}[sys.argv[1]]
s = socket.socket(family)
s.connect((sys.argv[2], int(sys.argv[3])))
s.sendall(b"GET /queue HTTP/1.0\r\nHost: localhost:%s\r\n\r\n" % sys.argv[4].encode())
data = b""
while (c := s.recv(65536)):
    data += c
m = re.search(r'signed in as <b>([^<]*)</b>( \(admin\))?', data.decode())
print(m.group(1) + (m.group(2) or "") if m else "public")
'''


def _who(web, user, family="4", address="127.0.0.1", port=8765, host_port=8765):
    """Who the dashboard says a connection to address:port is (its Host header names host_port: where a
    forwarder leads, or the dashboard's own port)."""
    return web.box.run(f"/usr/bin/python3 - {family} {address} {port} {host_port}", user=user,
                       input=WHO).stdout.strip()


@pytest.fixture
def forwarder(web):
    """forward(user, port): a forwarder to the dashboard run as `user` (None: root) on 127.0.0.1:port."""
    web.box.run("cat > /run/gs-test-forwarder.py", input=FORWARDER)
    started = []

    def forward(user, port):
        unit = f"gs-test-fwd-{port}"
        as_user = f"-p User={user} " if user else ""
        web.sh(f"systemd-run --unit={unit} {as_user}/usr/bin/python3 /run/gs-test-forwarder.py {port}")
        started.append(unit)
        for _ in range(50):
            if web.sh(f"curl -s -o /dev/null http://127.0.0.1:{port}/", check=False).returncode == 0:
                return
            web.sh("sleep 0.1")
        raise AssertionError(f"forwarder on {port} did not start")
    yield forward
    for unit in started:
        web.sh(f"systemctl stop {unit}", check=False)


def test_root_and_system_accounts_are_the_public_view(web, forwarder):
    assert _who(web, "bob") == "bob"
    assert _who(web, None) == "public"                       # root at a terminal: gpuschedctl, not the web
    # a root-owned service that forwards to loopback (a proxy, a fetcher): bob through it is not root
    forwarder(None, 18765)
    assert _who(web, "bob", port=18765) == "public"
    forwarder("www-data", 18766)                              # nor www-data (its jobs could read /var/www)
    assert _who(web, "bob", port=18766) == "public"
    # the documented limit (docs/web.md): a forwarder a person runs lends their identity to whoever uses it
    forwarder("alice", 18767)
    assert _who(web, "bob", port=18767) == "alice"


def test_a_dual_stack_client_is_known(web):
    assert _who(web, "alice", "6", "::ffff:127.0.0.1") == "alice"       # an IPv6 socket to the IPv4 address
    assert _who(web, "alice", "6", "::1") == "alice"


def test_the_daemon_acts_for_people_only(web):
    job = web.submit("alice", 'command = "sleep 300"\ngpus = 0\n')
    web.wait(job, "running")
    as_web = "setpriv --reuid=gpusched-web --regid=gpusched-web --clear-groups " + WEB_CALL
    for uid in (0, _uid(web, "www-data")):
        p = web.sh(f"{as_web} {uid} act '[\"cancel\", {job}]'", check=False)
        assert "acts for people only" in p.stdout, p
    assert web.status(job)["state"] == "running"
    ok = web.sh(f"{as_web} {_uid(web, 'alice')} act '[\"cancel\", {job}]'")
    assert "error" not in ok.stdout
    web.wait(job, "cancelled")


# Opens N log streams of a job at once; prints each one's HTTP status.
STREAMS = r'''
import socket, sys
job, n = sys.argv[1], int(sys.argv[2])
socks, codes = [], []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", 8765))
    s.sendall(f"GET /jobs/{job}/log HTTP/1.1\r\nHost: localhost:8765\r\n\r\n".encode())
    codes.append(s.recv(64).split()[1].decode())
    socks.append(s)
print(" ".join(codes))
'''


def test_a_user_cannot_flood_the_daemon_with_log_streams(web):
    job = web.submit("bob", 'command = "sleep 300"\ngpus = 0\n')
    web.wait(job, "running")
    codes = web.box.run(f"/usr/bin/python3 - {job} 9", user="bob", input=STREAMS).stdout.split()
    assert codes == ["200"] * 8 + ["429"], codes
    # closed (the script has ended): their places are free again once the dashboard has seen them go
    for _ in range(20):
        codes = web.box.run(f"/usr/bin/python3 - {job} 1", user="bob", input=STREAMS).stdout.split()
        if codes == ["200"]:
            break
        web.sh("sleep 0.1")
    assert codes == ["200"]
    web.sh(f"gpuschedctl cancel {job}", user="bob")


# Submits a job file through the form as the user running it: GET /submit for the token, POST it back.
SUBMIT = r'''
import re, sys, urllib.parse, urllib.request
page = urllib.request.urlopen("http://localhost:8765/submit").read().decode()
token = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
body = urllib.parse.urlencode({"csrf": token, "stem": "long", "text": sys.stdin.read()}).encode()
req = urllib.request.Request("http://localhost:8765/submit", body, {"Origin": "http://localhost:8765"})
print(urllib.request.urlopen(req).geturl())
'''


def test_a_long_job_file_goes_through_the_form(web):
    script = 'command = """\n' + "echo 'a line of a long inline script'\n" * 500 + '"""\ngpus = 0\n'   # 18 KiB
    web.box.run("cat > /run/gs-test-submit.py", input=SUBMIT)
    p = web.box.run("/usr/bin/python3 /run/gs-test-submit.py", user="alice", input=script, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    job = int(re.search(r"/jobs/(\d+)$", p.stdout.strip()).group(1))
    done = web.wait(job, {"succeeded", "failed"})
    assert done["user"] == "alice" and done["state"] == "succeeded"


# Binds 127.0.0.1 and ::1 at the port as the user running it: prints, for each, "taken" or "free".
SQUAT = r'''
import socket, sys
out = []
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(family)
    try:
        s.bind((host, int(sys.argv[1])))
        s.listen()
        out.append("free")
    except OSError:
        out.append("taken")
    finally:
        s.close()
print(" ".join(out))
'''


def test_the_port_is_never_free_while_the_dashboard_is_down(web):
    # systemd holds it (gpusched-web.socket): a user can't bind it while the service is stopped, and the next
    # visit starts the service again
    web.sh("systemctl stop gpusched-web.service")
    assert web.sh("systemctl is-active gpusched-web.service", check=False).stdout.strip() == "inactive"
    assert web.box.run("/usr/bin/python3 - 8765", user="bob", input=SQUAT).stdout.split() == ["taken", "taken"]
    assert _who(web, "alice") == "alice"                    # this visit starts it
    assert web.sh("systemctl is-active gpusched-web.service").stdout.strip() == "active"
    log = web.sh("journalctl --no-pager -o cat -u gpusched-web -n 20").stdout
    assert "2 of 2 sockets held by systemd" in log, log


# Opens N connections to the dashboard as the user running it and sends nothing on them: prints how many were
# refused at once (503), then how many the dashboard closed within 40 s.
HOLD = r'''
import json, socket, sys, time
n = int(sys.argv[1])
conns = [socket.create_connection(("127.0.0.1", 8765)) for _ in range(n)]
refused = 0
for c in conns:
    c.settimeout(0.2)
    try:
        if c.recv(200).startswith(b"HTTP/1.1 503"):
            refused += 1
    except OSError:
        pass
open(sys.argv[2], "w").write("holding\n")
closed, deadline = 0, time.monotonic() + 40
for c in conns:
    c.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        while c.recv(4096):
            pass
        closed += 1
    except OSError:
        pass
print(json.dumps({"refused": refused, "closed": closed}))
'''


def test_one_user_holding_idle_connections_stalls_nobody(web):
    web.box.run("cat > /run/gs-test-hold.py", input=HOLD)
    web.sh("rm -f /run/gs-test-holding; touch /run/gs-test-holding; chown bob /run/gs-test-holding")
    web.sh("systemd-run --unit=gs-test-hold -p User=bob -p StandardOutput=file:/run/gs-test-hold.out "
           "/usr/bin/python3 /run/gs-test-hold.py 300 /run/gs-test-holding")
    try:
        for _ in range(300):
            if web.sh("cat /run/gs-test-holding").stdout.strip() == "holding":
                break
            web.sh("sleep 0.1")
        else:
            raise AssertionError("the holder did not open its connections")
        assert _who(web, "alice") == "alice"                     # bob's 300 idle connections stall no one
        for _ in range(600):
            if web.sh("systemctl is-active gs-test-hold", check=False).stdout.strip() != "active":
                break
            web.sh("sleep 0.1")
        result = json.loads(web.sh("cat /run/gs-test-hold.out").stdout)
        # 64 admitted (gate.PER_OWNER), the rest told why at once; the admitted ones closed when idle (15 s)
        assert result == {"refused": 300 - 64, "closed": 300}, result
        assert _who(web, "bob") == "bob"                         # and bob gets in again afterwards
    finally:
        web.sh("systemctl stop gs-test-hold; systemctl reset-failed gs-test-hold", check=False)


def test_web_listen_and_port_are_where_systemd_holds_the_sockets(web):
    # the generator writes [web] into gpusched-web.socket at daemon-reload; a restart of the socket takes the
    # service with it
    conf = "/etc/gpusched/gpusched.toml"
    port = webfar.free_port("127.0.0.1")
    web.sh(f"cp {conf} {conf}.orig && printf '\\n[web]\\nport = {port}\\n' >> {conf}")
    try:
        web.sh("systemctl daemon-reload && systemctl restart gpusched-web.socket && systemctl start gpusched-web")
        listen = web.sh("systemctl show -p Listen gpusched-web.socket").stdout
        assert f"127.0.0.1:{port} (Stream)" in listen and f"[::1]:{port} (Stream)" in listen, listen
        assert ":8765" not in listen
        assert _who(web, "alice", port=port, host_port=port) == "alice"
        assert web.box.run(f"/usr/bin/python3 - {port}", user="bob", input=SQUAT).stdout.split() == ["taken"] * 2
    finally:
        web.sh(f"mv {conf}.orig {conf} && systemctl daemon-reload && systemctl restart gpusched-web.socket && "
               f"systemctl start gpusched-web", check=False)
    assert _who(web, "alice") == "alice"


# Sends MB megabytes of pipelined `GET /nope` on one connection as the user running it, reading nothing: prints
# how much went before the dashboard cut the connection.
PIPELINE = r'''
import socket, sys
s = socket.create_connection(("127.0.0.1", 8765))
burst = b"GET /nope HTTP/1.1\r\nHost: localhost:8765\r\n\r\n" * 1500
sent = 0
s.settimeout(10)
try:
    while sent < float(sys.argv[1]) * 2**20:
        sent += s.send(burst)
    print("sent all")
except OSError as e:
    print("cut after", sent // 2**20, "MB:", type(e).__name__)
'''


def _rss_kib(web) -> int:
    pid = web.sh("systemctl show -p MainPID --value gpusched-web").stdout.strip()
    return int(web.sh(f"grep VmRSS /proc/{pid}/status").stdout.split()[1])


def test_pipelined_requests_cannot_grow_the_dashboard(web):
    # aiohttp queued every request it parsed while answering the first: 50 MB of them grew gpusched-web by 2 GB
    before = _rss_kib(web)
    out = web.box.run("/usr/bin/python3 - 20", user="bob", input=PIPELINE, timeout=120).stdout
    assert out.startswith("cut after"), out          # gate.PIPELINE requests ahead at most, then cut
    assert _rss_kib(web) - before < 50 * 1024, (before, _rss_kib(web))
    assert _who(web, "alice") == "alice" and _who(web, "bob") == "bob"


# Opens N TCP connections to HOST:PORT and never starts TLS on them: prints how many the dashboard closed at once.
HANDSHAKES = r'''
import socket, sys, time
conns = [socket.create_connection((sys.argv[1], int(sys.argv[2]))) for _ in range(int(sys.argv[3]))]
time.sleep(1)                                   # well within the 10 s a handshake may take
closed = 0
for c in conns:
    c.setblocking(False)
    try:
        closed += c.recv(1) == b""
    except BlockingIOError:
        pass                                    # still open, waiting for its ClientHello
    except OSError:
        closed += 1
print(closed)
'''


def test_connections_that_never_finish_tls_are_counted(web, far):
    # beyond loopback they were counted only after the handshake: unfinished ones (10 s each) were no one's,
    # and a network client could take every descriptor the dashboard has, loopback's people's too
    out = web.box.run(f"/usr/bin/python3 - {far.address} {far.port} 200", user="bob", input=HANDSHAKES,
                      timeout=120).stdout
    assert out.split() == [str(200 - 64)], out        # past gate.PER_OWNER for that address: closed at once
    assert "signed in as" in web.sh(f"curl -s http://localhost:{far.port}/queue", user="alice").stdout
