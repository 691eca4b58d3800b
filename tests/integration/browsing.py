"""A real browser in the box for the dashboard's tests (test_web.py on loopback, test_web_signin.py beyond
it): headless Chromium from Debian driven by python3-selenium, through a script of this folder run inside
the box as a user, so that its loopback connections are that user's in the kernel's socket table. The script
takes the box's folder for its screenshots as its first argument and prints one JSON object of what it saw
as its last line; the screenshots are kept in <box dir>/shots/ (docs/img/ has the main ones)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil

import pytest

SHOTS = "/var/tmp/web-shots"          # in the box: a folder per run of a browser script
# a uid with no account (the owner of its connections is no person); HOME for Chromium's files
NO_ACCOUNT = "setpriv --reuid=4242 --regid=4242 --clear-groups env HOME=/var/tmp LANG=C.UTF-8"
# a job whose live log a browser follows: a line every 0.1 s until it is cancelled
LINES = 'command = "for i in $(seq 1 100000); do echo line $i; sleep 0.1; done"\ngpus = 1\nname = "{name}"\n'


def need_browser() -> None:
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(path):
            pytest.skip(f"{path} is missing (apt-get install chromium chromium-driver; scripts/setup-deps does)")
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("python3-selenium is missing (scripts/setup-deps installs it)")


def browse(gs, name: str, script: str, *args: str, user: str | None = None, timeout: float = 240) -> dict:
    """Run tests/integration/SCRIPT OUT ARGS... in the box as `user` (None: as NO_ACCOUNT), OUT being
    SHOTS/NAME; its screenshots are copied to <box dir>/shots/NAME-*.png. Returns what it printed."""
    need_browser()
    out = f"{SHOTS}/{name}"
    gs.sh(f"mkdir -p {SHOTS} && chmod 1777 {SHOTS}")
    cmd = " ".join(shlex.quote(a) for a in ("/usr/bin/python3", f"/src/tests/integration/{script}", out, *args))
    p = gs.sh(cmd if user else f"{NO_ACCOUNT} {cmd}", user=user, timeout=timeout, check=False)
    assert p.returncode == 0, f"{script} as {user or 'uid 4242'} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    keep = os.path.join(gs.box.base, "shots")
    os.makedirs(keep, exist_ok=True)
    src = os.path.join(gs.box.root, out.lstrip("/"))
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), os.path.join(keep, f"{name}-{f}"))
    return json.loads(p.stdout.strip().splitlines()[-1])
