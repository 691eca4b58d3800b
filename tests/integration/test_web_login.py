"""The web dashboard beyond loopback in the box (docs/web.md, "Signing in from elsewhere"): [web] listens on a
non-loopback address of this machine (the box shares the host's network) over TLS with a self-signed
certificate made here by openssl, and people sign in with their password, checked by the daemon with the
real PAM stack (pam_unix, passwords set with chpasswd). curl is the browser: it checks the certificate,
keeps the cookies and sends what a browser sends (Origin), from a non-loopback address, so the kernel's
socket table is not what names anyone."""

from __future__ import annotations

import random
import re
import shlex
import socket
import time

import pytest

CONF = "/etc/gpusched/gpusched.toml"
CERT, KEY = "/etc/gpusched/web-test.crt", "/etc/gpusched/web-test.key"
JAR = "/run/gs-test-web-jar"
PASSWORDS = {"alice": "Alice-pass-1", "bob": "Bob-pass-1", "root": "Root-pass-1"}


def _far_address(gs) -> str:
    out = gs.sh("ip -4 -o addr show scope global", check=False).stdout
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    if not m:
        pytest.skip("this machine has no IPv4 address beyond loopback to listen on")
    return m.group(1)


def _free_port(address: str) -> int:
    """A port free on both the address and 127.0.0.1 (other engineers' boxes share this network: not 8765)."""
    for _ in range(50):
        port = random.randint(20000, 29999)
        try:
            for host in (address, "127.0.0.1"):
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    pytest.skip("no free port")


class Far:
    def __init__(self, gs, address: str, port: int):
        self.gs, self.address, self.port = gs, address, port
        self.url = f"https://{address}:{port}"

    def curl(self, path: str, *args: str, jar: str = JAR) -> tuple[int, dict[str, list[str]], str]:
        """(status, headers, body) of one request through curl, which checks the server's certificate
        against the test's own and keeps the cookies in `jar`."""
        cmd = (f"curl -s -S --max-time 60 --cacert {CERT} -b {jar} -c {jar} -D /run/gs-test-web-headers "
               f"-o /run/gs-test-web-body -w '%{{http_code}}' {' '.join(args)} {shlex.quote(self.url + path)}")
        status = int(self.gs.sh(cmd).stdout.strip()[-3:])
        headers: dict[str, list[str]] = {}
        for line in self.gs.sh("cat /run/gs-test-web-headers").stdout.splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.setdefault(k.strip().lower(), []).append(v.strip())
        return status, headers, self.gs.sh("cat /run/gs-test-web-body").stdout

    def token(self, path: str = "/login", jar: str = JAR) -> str:
        status, _, body = self.curl(path, jar=jar)
        assert status == 200, (path, status, body[-500:])
        return re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)

    def post(self, path: str, fields: dict[str, str], jar: str = JAR) -> tuple[int, dict, str]:
        data = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in fields.items())
        return self.curl(path, f"-H 'Origin: {self.url}'", data, jar=jar)

    def sign_in(self, user: str, password: str, jar: str = JAR) -> tuple[int, dict, str]:
        return self.post("/login", {"csrf": self.token(jar=jar), "user": user, "password": password}, jar=jar)


def _error(body: str) -> str:
    m = re.search(r'id="error">([^<]*)<', body)
    return m.group(1) if m else ""


@pytest.fixture
def far(gs):
    address = _far_address(gs)
    port = _free_port(address)
    gs.sh(f"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=gpusched-test -addext "
          f"subjectAltName=IP:{address} -keyout {KEY} -out {CERT} 2>/dev/null && chgrp gpusched-web {KEY} "
          f"&& chmod 0640 {KEY}")
    for user, password in PASSWORDS.items():
        gs.sh(f"echo {shlex.quote(f'{user}:{password}')} | chpasswd")
    web = (f'\n[web]\nport = {port}\nlisten = ["127.0.0.1", "{address}"]\ntls_cert = "{CERT}"\n'
           f'tls_key = "{KEY}"\n')
    gs.sh(f"cp {CONF} {CONF}.orig && printf %s {shlex.quote(web)} >> {CONF} && "
          f"systemctl restart gpusched && systemctl restart gpusched-web")
    f = Far(gs, address, port)
    try:
        for _ in range(100):
            if gs.sh(f"curl -s -o /dev/null --cacert {CERT} {f.url}/login", check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(gs.sh("journalctl --no-pager -n 30 -u gpusched-web", check=False).stdout)
        yield f
    finally:
        gs.sh(f"mv {CONF}.orig {CONF}; rm -f {CERT} {KEY} {JAR}*; systemctl restart gpusched; "
              f"systemctl restart gpusched-web", check=False)


def test_a_person_signs_in_sees_their_own_jobs_acts_and_signs_out(far):
    gs = far.gs
    job = gs.submit("alice", 'command = "sleep 300"\ngpus = 0\n')
    gs.wait(job, "running")
    # nothing but the sign-in form without a session (not even the public queue)
    status, headers, _ = far.curl("/queue")
    assert status == 303 and headers["location"] == ["/login"]
    # a wrong password and an unknown user: the same words; root, even with its right password: the same
    said = []
    for user, password in (("alice", "wrong"), ("nosuchuser", "wrong"), ("root", PASSWORDS["root"])):
        status, headers, body = far.sign_in(user, password)
        said.append((status, _error(body)))
        assert not any("gpusched-session" in c for c in headers.get("set-cookie", []))
    assert said == [(401, "wrong user name or password")] * 3, said
    # the right one: a session cookie a browser keeps to this site's HTTPS pages only
    status, headers, _ = far.sign_in("alice", PASSWORDS["alice"])
    assert status == 303, headers
    cookie = next(c for c in headers["set-cookie"] if c.startswith("__Host-gpusched-session="))
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} <= set(cookie.split("; ")), cookie
    # alice's private view of her job: its log and its actions
    status, _, body = far.curl(f"/jobs/{job}")
    assert status == 200 and "signed in as <b>alice</b>" in body and 'id="log"' in body and 'id="do-cancel"' in body
    # a POST without the form's token is refused, and nothing happens
    status, _, body = far.post(f"/jobs/{job}/cancel", {"do": "cancel"})
    assert status == 403 and "token" in body
    assert gs.status(job)["state"] == "running"
    status, _, _ = far.post(f"/jobs/{job}/cancel", {"csrf": far.token(f"/jobs/{job}")})
    assert status == 303
    gs.wait(job, "cancelled")
    # signing out ends the session on the server: the old cookie, replayed, is nobody's
    gs.sh(f"cp {JAR} {JAR}.old")
    status, headers, _ = far.post("/logout", {"csrf": far.token("/")})
    assert status == 303 and headers["location"] == ["/login"]
    status, headers, _ = far.curl("/queue", jar=f"{JAR}.old")
    assert status == 303 and headers["location"] == ["/login"]
    log = gs.journal("-u gpusched", "--since=-5min")
    assert "web sign-in of 'alice' from" in log and "uid 0 is not a person's account" in log
    everything = gs.journal("--since=-5min")              # no password anywhere in the journal
    assert not any(p in everything for p in PASSWORDS.values())


def test_repeated_failures_lock_the_name_and_never_stall_the_daemon(far):
    gs = far.gs
    # a failed sign-in takes about 2 s (pam_unix's delay): the daemon answers everyone meanwhile
    jar = f"{JAR}-slow"
    token = far.token(jar=jar)
    gs.sh(f"(curl -s -o /dev/null --cacert {CERT} -b {jar} -c {jar} -H 'Origin: {far.url}' --data-urlencode "
          f"csrf={token} --data-urlencode user=bob --data-urlencode password=wrong1 {far.url}/login; "
          f"touch /run/gs-test-slow-done) >/dev/null 2>&1 &")
    time.sleep(0.5)
    t0 = time.monotonic()                                    # a bus call, answered by the daemon's main loop
    gs.sh("busctl call org.gpusched1 /org/gpusched1 org.gpusched1.Manager Status >/dev/null", user="alice")
    took = time.monotonic() - t0
    assert gs.sh("test -e /run/gs-test-slow-done", check=False).returncode != 0, "the sign-in was not slow"
    assert took < 1.0, f"the daemon took {took:.2f} s to answer while a password was checked"
    for _ in range(100):
        if gs.sh("test -e /run/gs-test-slow-done", check=False).returncode == 0:
            break
        time.sleep(0.1)
    gs.sh("rm -f /run/gs-test-slow-done")
    # two more failures for bob: then the name waits, even with the right password
    for password in ("wrong2", "wrong3"):
        status, _, body = far.sign_in("bob", password)
        assert status == 401 and _error(body) == "wrong user name or password"
    t0 = time.monotonic()
    status, _, body = far.sign_in("bob", PASSWORDS["bob"])
    assert status == 429 and re.search(r"too many failed sign-ins .*try again in \d+ s", _error(body)), body[-800:]
    assert time.monotonic() - t0 < 1.5                       # refused at once, PAM not even asked
    # alice is not locked out by bob's failures
    status, _, _ = far.sign_in("alice", PASSWORDS["alice"], jar=f"{JAR}-alice")
    assert status == 303


def test_beyond_loopback_without_tls_the_dashboard_refuses_to_start(gs):
    address = _far_address(gs)
    gs.sh(f"printf '[web]\\nlisten = [\"127.0.0.1\", \"{address}\"]\\nport = {_free_port(address)}\\n' "
          f"> /run/gs-test-web-notls.toml && chmod 644 /run/gs-test-web-notls.toml")
    p = gs.sh("setpriv --reuid=gpusched-web --regid=gpusched-web --clear-groups /usr/bin/python3 -m gpusched.web "
              "--config /run/gs-test-web-notls.toml", check=False, timeout=30)
    assert p.returncode == 2, p
    assert f"[web] listen names {address}, beyond loopback" in p.stderr
    assert "never cross the network in clear" in p.stderr and "tls_cert and tls_key" in p.stderr
