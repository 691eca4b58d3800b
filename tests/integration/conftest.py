"""Integration tests: one real systemd box per session, the real gpusched.service in it (4 simulated GPUs),
driven the way users drive it: files into the spool, gpuschedctl, systemctl, journalctl."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import time
import tomllib
import uuid

import pytest

from tests.box import Box, _mounted

SPOOL = "/var/spool/gpusched"
STATE = "/var/lib/gpusched"
FINAL = {"succeeded", "failed", "cancelled", "rejected"}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (they boot a systemd container)"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn is missing (apt-get install systemd-container; scripts/setup-deps does it)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _why_not()
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


class Gs:
    """The service in the box, as users see it."""

    def __init__(self, box: Box):
        self.box = box
        self.state = STATE

    def sh(self, cmd: str, user: str | None = None, check: bool = True, timeout: float = 120):
        return self.box.run(cmd, user=user, check=check, timeout=timeout)

    def drop(self, user: str, text: str | bytes, name: str | None = None) -> str:
        """Write a job file into the spool as `user`, the way `cat > spool/x.toml` does. Returns its name."""
        name = name or f"job-{uuid.uuid4().hex[:8]}.toml"
        data = text.encode() if isinstance(text, str) else text
        b64 = base64.b64encode(data).decode()
        # written in one go and closed, as an editor's save or `cp` would do; bytes kept exact
        self.box.run(f"echo {b64} | base64 -d > {SPOOL}/{name}", user=user)
        return name

    def submit(self, user: str, text: str, name: str | None = None) -> int:
        name = name or f"job-{uuid.uuid4().hex[:8]}.toml"
        home = "/root" if user == "root" else f"/home/{user}"
        self.box.run(f"cat > {home}/{name}", user=None if user == "root" else user, input=text)
        out = self.sh(f"cd {home} && gpuschedctl submit {name}", user=None if user == "root" else user)
        return int(out.stdout.strip())

    def job_by_source(self, user: str, name: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # the newest file of that name (an earlier test may have dropped one of the same name); of an
            # array's jobs, which share their file, the first
            mine = [j for j in self.list(all=True) if j.get("source") == name and j["user"] == user]
            if mine:
                return min(mine, key=lambda j: (-(j.get("array_id") or j["id"]), j["id"]))
            time.sleep(0.1)
        raise AssertionError(f"no job from {user} with source {name}")

    def list(self, all: bool = False) -> list[dict]:
        return json.loads(self.sh("gpuschedctl list --json" + (" --all" if all else "")).stdout)["jobs"]

    def status(self, job_id: int) -> dict:
        return tomllib.loads(self.sh(f"cat {self.state}/status/{job_id}.toml").stdout)

    def wait(self, job_id: int, states: set[str] | str, timeout: float = 30) -> dict:
        states = {states} if isinstance(states, str) else states
        deadline = time.monotonic() + timeout
        st = {}
        while time.monotonic() < deadline:
            try:
                st = self.status(job_id)
            except Exception:  # noqa: BLE001 - not written yet
                st = {}
            if st.get("state") in states:
                return st
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {st}")

    def unit_prop(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        props: dict[str, str] = {}
        for line in out.splitlines():                  # list properties (DeviceAllow) come one line each
            if "=" in line:
                key, value = line.split("=", 1)
                props[key] = props[key] + "\n" + value if key in props else value
        return props

    def journal(self, *args: str) -> str:
        self.sh("journalctl --sync", check=False)
        return self.sh("journalctl --no-pager -o cat " + " ".join(args), check=False).stdout

    def active(self) -> bool:
        return self.sh("systemctl is-active gpusched", check=False).stdout.strip() == "active"

    @contextlib.contextmanager
    def configured(self, extra: str, state_dir: str | None = None):
        """Run the service with `extra` lines added to its config (and another state directory), then put
        the config back and restart it."""
        conf = "/etc/gpusched/gpusched.toml"
        head = f'state_dir = "{state_dir}"\n' if state_dir else ""
        self.sh(f"cp {conf} {conf}.orig && {{ printf %s {shlex.quote(head + extra + chr(10))}; cat {conf}.orig; }} "
                f"> {conf} && systemctl restart gpusched")
        old_state = self.state
        self.state = state_dir or self.state
        try:
            yield self
        finally:
            self.state = old_state
            self.sh(f"mv {conf}.orig {conf}; systemctl restart gpusched", check=False)

    def main_pid(self) -> str:
        return self.sh("systemctl show -p MainPID --value gpusched").stdout.strip()

    def clear(self) -> None:
        """Cancel whatever the last test left and wait until nothing runs: reset through the service."""
        for j in self.list():
            self.sh(f"gpuschedctl cancel {j['id']}", check=False)
        deadline = time.monotonic() + 60
        while self.list() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.list(), "jobs left over from an earlier test"


@pytest.fixture(scope="session")
def box():
    b = Box()
    b.up()
    try:
        b.install(simulated_gpus=4)
        for user in ("alice", "bob"):
            b.add_user(user)
        yield b
    finally:
        b.down()
        left = [d for d in ("root", "rw", "lower") if _mounted(os.path.join(b.base, d))]
        assert not left, f"the box left mounts behind: {left}"


def serve(machine, request, what: str):
    """The service on `machine` (the box, or tests/vm's VM) for one test: started again if a test stopped it,
    its jobs cleared; the machine's journal printed when the test failed (tests/conftest.py keeps the report)."""
    g = Gs(machine)
    if not g.active():
        g.sh("systemctl reset-failed gpusched; systemctl start gpusched")
    g.clear()
    yield g
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"---- journal of {what} (last 150 lines) ----")
        print(g.sh("journalctl --no-pager -n 150", check=False).stdout)


@pytest.fixture
def gs(box, request):
    yield from serve(box, request, "the box")
