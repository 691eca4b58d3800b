"""The dashboard beyond loopback in the box, for the tests that sign in (test_web_login.py with curl,
test_web_signin.py with Chromium): [web] listens on a non-loopback address of this machine (the box shares
the host's network) on a random free port, over TLS with a self-signed certificate made here by openssl, and
alice, bob and root have passwords (chpasswd) for the daemon's real PAM check. `far` is the fixture."""

from __future__ import annotations

import re
import shlex
import time

import pytest

from tests import box

CONF = "/etc/gpusched/gpusched.toml"
CERT, KEY = "/etc/gpusched/web-test.crt", "/etc/gpusched/web-test.key"
JAR = "/run/gs-test-web-jar"
PASSWORDS = {"alice": "Alice-pass-1", "bob": "Bob-pass-1", "root": "Root-pass-1"}
REFUSED = "wrong user name or password"      # the one answer to every refused password (docs/web.md)


def far_address(gs) -> str:
    out = gs.sh("ip -4 -o addr show scope global", check=False).stdout
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    if not m:
        pytest.skip("this machine has no IPv4 address beyond loopback to listen on")
    return m.group(1)


def free_port(address: str) -> int:
    """A port free on both the address and loopback (other engineers' boxes share this network: not 8765)."""
    port = box.free_port((address, "127.0.0.1", "::1"))
    if port is None:
        pytest.skip("no free port")
    return port


class Far:
    def __init__(self, gs, address: str, port: int):
        self.gs, self.address, self.port = gs, address, port
        self.url = f"https://{address}:{port}"

    def spki(self) -> str:
        """The certificate's public key as Chromium's --ignore-certificate-errors-spki-list names it: the
        base64 of the SHA-256 of its DER SubjectPublicKeyInfo (the key pinned, not errors in general)."""
        return self.gs.sh(f"openssl x509 -in {CERT} -noout -pubkey | openssl pkey -pubin -outform der | "
                          f"openssl dgst -sha256 -binary | base64").stdout.strip()

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


def error(body: str) -> str:
    """The words of a page's error paragraph ("" if it has none)."""
    m = re.search(r'id="error">([^<]*)<', body)
    return m.group(1) if m else ""


@pytest.fixture
def far(gs):
    address = far_address(gs)
    port = free_port(address)
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
