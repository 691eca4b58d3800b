"""The web dashboard beyond loopback in the box (docs/web.md, "Signing in from elsewhere"): [web] listens on a
non-loopback address of this machine (the box shares the host's network) over TLS with a self-signed
certificate made here by openssl, and people sign in with their password, checked by the daemon with the
real PAM stack (pam_unix, passwords set with chpasswd). curl is the browser: it checks the certificate,
keeps the cookies and sends what a browser sends (Origin), from a non-loopback address, so the kernel's
socket table is not what names anyone."""

from __future__ import annotations

import re
import time

from tests.integration import webfar
from tests.integration.webfar import CERT, JAR, PASSWORDS, REFUSED, error, far_address, free_port

far = webfar.far                   # the fixture: the dashboard beyond loopback, with TLS and passwords


def test_a_person_signs_in_sees_their_own_jobs_acts_and_signs_out(far):
    gs = far.gs
    job = gs.submit("alice", 'command = "sleep 300"\ngpus = 0\n')
    gs.wait(job, "running")
    # nothing but the sign-in form without a session (not even the public queue)
    status, headers, _ = far.curl("/queue")
    assert status == 303 and headers["location"] == ["/login?next=/queue"]     # and back there once signed in
    # a wrong password and an unknown user: the same words; root, even with its right password: the same
    said = []
    for user, password in (("alice", "wrong"), ("nosuchuser", "wrong"), ("root", PASSWORDS["root"])):
        status, headers, body = far.sign_in(user, password)
        said.append((status, error(body)))
        assert not any("gpusched-session" in c for c in headers.get("set-cookie", []))
    assert said == [(401, REFUSED)] * 3, said
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
    assert status == 303 and headers["location"] == ["/login?next=/queue"]
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
        assert status == 401 and error(body) == REFUSED
    t0 = time.monotonic()
    status, _, body = far.sign_in("bob", PASSWORDS["bob"])
    assert status == 429 and re.search(r"too many failed sign-ins .*try again in \d+ s", error(body)), body[-800:]
    assert time.monotonic() - t0 < 1.5                       # refused at once, PAM not even asked
    # alice is not locked out by bob's failures
    status, _, _ = far.sign_in("alice", PASSWORDS["alice"], jar=f"{JAR}-alice")
    assert status == 303


def test_beyond_loopback_without_tls_the_dashboard_refuses_to_start(gs):
    address = far_address(gs)
    gs.sh(f"printf '[web]\\nlisten = [\"127.0.0.1\", \"{address}\"]\\nport = {free_port(address)}\\n' "
          f"> /run/gs-test-web-notls.toml && chmod 644 /run/gs-test-web-notls.toml")
    p = gs.sh("setpriv --reuid=gpusched-web --regid=gpusched-web --clear-groups /usr/bin/python3 -m gpusched.web "
              "--config /run/gs-test-web-notls.toml", check=False, timeout=30)
    assert p.returncode == 2, p
    assert f"[web] listen names {address}, beyond loopback" in p.stderr
    assert "never cross the network in clear" in p.stderr and "tls_cert and tls_key" in p.stderr
