"""The Debian package, in a box of its own: `apt install` of the .deb that scripts/build-deb makes gives an
enabled, running service that runs jobs; an upgrade to a newer build while a job runs leaves the job running,
re-adopted by the new daemon, with its real exit code recorded; `apt remove` stops the daemon and keeps the
jobs' records; `apt purge` removes state, spool and config.

The tests run in order, each on what the one before left. The box is not the session's one (that one has
gpusched installed by scripts/install): it boots beside it, in `$GPUSCHED_BOX_DIR-pkg`, with nothing installed.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from tests.box import DEFAULT_DIR, ROOT, Box, NoPackage, _mounted, build_deb, free_port
from tests.integration.conftest import SPOOL, STATE, Gs

APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends"


def _version() -> str:
    with open(os.path.join(ROOT, "packaging/debian/changelog")) as f:
        return f.readline().split("(")[1].split(")")[0]


VERSION = _version()
UPGRADE = VERSION + "+boxtest1"     # sorts after VERSION (dpkg --compare-versions)
WEB_CONFIG = "/etc/gpusched-pkgtest-web.toml"    # the box's dashboard config: its port (not under /etc/gpusched,
                                                 # which purge must leave empty)


def _build(*args: str) -> str:
    """scripts/build-deb (cached: unchanged inputs are not rebuilt); the .deb's path inside the box."""
    try:
        path = build_deb(*args)
    except NoPackage as e:
        pytest.skip(f"the .deb can't be built here: {e}")
    assert path.startswith(ROOT + "/"), path
    return "/src/" + os.path.relpath(path, ROOT)


@pytest.fixture(scope="module")
def debs() -> dict[str, str]:
    return {VERSION: _build(), UPGRADE: _build("--version", UPGRADE)}


@pytest.fixture(scope="module")
def pkg(debs):
    b = Box(base=DEFAULT_DIR + "-pkg")                        # a box, and a cgroup, of its own (tests/box.py)
    try:
        b.up()
        # the machine under the box is a container image whose /usr/sbin/policy-rc.d forbids maintainer
        # scripts to start services (exit 101, Docker's habit); a fresh Debian 12 has none
        b.run("rm -f /usr/sbin/policy-rc.d")
        b.add_user("alice")
        # the session's box runs beside this one in the same network namespace, its dashboard on 8765: this
        # one's gets a free port, for its socket (a drop-in after the generator's) and its service's config
        port = free_port()
        assert port is not None, "no free port for the package box's dashboard"
        b.run(f"mkdir -p /etc/systemd/system/gpusched-web.socket.d /etc/systemd/system/gpusched-web.service.d && "
              f"printf '[web]\\nport = {port}\\n' > {WEB_CONFIG} && chmod 0644 {WEB_CONFIG} && "
              f"printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{port}\\nListenStream=[::1]:{port}\\n' "
              f"> /etc/systemd/system/gpusched-web.socket.d/60-test.conf && "
              f"printf '[Service]\\nEnvironment=GPUSCHED_CONFIG={WEB_CONFIG}\\n' "
              f"> /etc/systemd/system/gpusched-web.service.d/60-test.conf")
        g = Gs(b)
        g.web_port = port
        yield g
    finally:
        b.down()
        left = [d for d in ("root", "rw", "lower") if _mounted(os.path.join(b.base, d))]
        assert not left, f"the box left mounts behind: {left}"


def _installed(gs: Gs) -> str:
    """The dpkg status and version of gpusched in the box."""
    return gs.sh("dpkg-query -W -f='${Status} ${Version}' gpusched", check=False).stdout.strip()


def test_apt_install_gives_an_enabled_running_service_that_runs_jobs(pkg, debs):
    gs = pkg
    gs.sh(f"{APT} install {debs[VERSION]}", timeout=300)
    assert _installed(gs) == f"install ok installed {VERSION}"
    assert gs.sh("systemctl is-enabled gpusched").stdout.strip() == "enabled"
    assert gs.active()
    # the package's files, not a copy left by scripts/install on the machine under the box
    unit = gs.unit_prop("gpusched.service", "FragmentPath")["FragmentPath"]
    assert unit.endswith("lib/systemd/system/gpusched.service") and not unit.startswith("/etc/"), unit
    where = gs.sh("cd / && python3 -c 'import gpusched; print(gpusched.__file__)'").stdout.strip()
    assert where == "/usr/lib/python3/dist-packages/gpusched/__init__.py"
    gs.sh("python3 -I -c 'from gpusched._vendor import pynvml; pynvml.nvmlInit'")   # the copy it carries
    assert gs.sh("ls /usr/share/dbus-1/system.d/org.gpusched1.conf", check=False).returncode == 0
    # the dashboard's port is held by systemd (gpusched-web.socket, where the generator says), its service runs
    assert gs.sh("systemctl is-enabled gpusched-web.socket gpusched-web").stdout.split() == ["enabled"] * 2
    assert gs.sh("systemctl is-active gpusched-web.socket gpusched-web").stdout.split() == ["active"] * 2
    assert f"127.0.0.1:{gs.web_port}" in gs.sh("systemctl show -p Listen gpusched-web.socket").stdout
    assert gs.sh("test -x /lib/systemd/system-generators/gpusched-web-generator && "
                 "test -e /run/systemd/generator/gpusched-web.socket.d/50-listen.conf", check=False).returncode == 0
    assert gs.sh(f"stat -c '%a %U' {SPOOL} {STATE}").stdout.split("\n")[:2] == ["1733 root", "755 root"]
    conffiles = gs.sh("dpkg-query -W -f='${Conffiles}' gpusched").stdout
    assert {"/etc/gpusched/gpusched.toml", "/etc/pam.d/gpusched", "/etc/pam.d/gpusched-web"} <= set(conffiles.split())
    # the autopkgtest (debian/tests/control) against the installed package: a user's job runs as that user
    out = gs.sh("/src/packaging/debian/tests/smoke", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "smoke: ok" in out.stdout


def test_an_upgrade_while_a_job_runs_keeps_the_job_and_records_its_real_exit_code(pkg, debs):
    gs = pkg
    assert gs.active(), "needs the installed package of the test before"
    go = f"/home/alice/go-{uuid.uuid4().hex[:8]}"
    job = gs.submit("alice", f'gpus = 0\ncommand = "while [ ! -e {go} ]; do sleep 0.1; done; exit 7"\n')
    scope = gs.wait(job, "running")["unit"]
    old_pid = gs.main_pid()
    socket_since = gs.unit_prop("gpusched-web.socket", "ActiveEnterTimestampMonotonic")

    # the two steps `apt install` takes, one at a time: the old daemon is not stopped while the new files are
    # unpacked (the old prerm leaves it be), and the new postinst restarts it
    gs.sh(f"dpkg --unpack {debs[UPGRADE]}", timeout=300)
    assert _installed(gs) == f"install ok unpacked {UPGRADE}"
    assert gs.active() and gs.main_pid() == old_pid
    gs.sh("dpkg --configure gpusched", timeout=300)
    assert _installed(gs) == f"install ok installed {UPGRADE}"
    # the new daemon runs and has taken the job back
    assert gs.active() and gs.main_pid() != old_pid
    assert gs.sh(f"systemctl is-active {scope}").stdout.strip() == "active"
    assert gs.status(job)["state"] == "running"
    log = gs.journal("-u gpusched")            # the old daemon started it: only the new one re-adopts it
    assert f"job {job} re-adopted" in log, log[-3000:]
    # the dashboard's socket was never closed: its port was not free for a moment during the upgrade
    assert gs.unit_prop("gpusched-web.socket", "ActiveEnterTimestampMonotonic") == socket_since

    gs.sh(f"touch {go}", user="alice")
    st = gs.wait(job, {"succeeded", "failed", "cancelled"}, timeout=30)
    assert (st["state"], st["exit_code"], st["attempt"]) == ("failed", 7, 1), st
    assert not st.get("preemptions")


def test_apt_remove_stops_the_daemon_and_keeps_the_jobs_records(pkg):
    gs = pkg
    ended = [j["id"] for j in gs.list(all=True)]
    assert ended, "needs the jobs of the tests before"
    go = f"/home/alice/go-{uuid.uuid4().hex[:8]}"
    running = gs.submit("alice", f'gpus = 0\ncommand = "while [ ! -e {go} ]; do sleep 0.1; done; exit 5"\n')
    scope = gs.wait(running, "running")["unit"]
    gs.sh(f"{APT} remove gpusched", timeout=300)
    assert _installed(gs).startswith("deinstall ok config-files")
    assert gs.sh("systemctl is-active gpusched", check=False).stdout.strip() == "inactive"
    assert gs.unit_prop("gpusched.service", "LoadState")["LoadState"] == "not-found"
    assert gs.sh("command -v gpuschedctl", check=False).returncode != 0
    # the records, the spool and the config stay
    for job in ended:
        gs.sh(f"test -f {STATE}/status/{job}.toml")
    gs.sh(f"test -d {SPOOL} && test -f /etc/gpusched/gpusched.toml && test -f /etc/pam.d/gpusched")
    # a job still running is left to finish; its monitor writes how it ended into its result file, which the
    # daemon of the next install turns into the job's record
    assert gs.sh(f"systemctl is-active {scope}").stdout.strip() == "active"
    st = gs.status(running)
    gs.sh(f"touch {go}", user="alice")
    result = f"{STATE}/results/{running}.{st['attempt']}.{st['start_token']}.json"
    gs.sh(f"for i in $(seq 300); do test -s {result} && break; sleep 0.1; done; test -s {result}")
    assert json.loads(gs.sh(f"cat {result}").stdout)["exit_code"] == 5
    assert gs.status(running)["state"] == "running"       # no daemon to read it


def test_installing_again_after_remove_carries_on_from_the_kept_records(pkg, debs):
    gs = pkg
    assert _installed(gs).startswith("deinstall ok config-files"), "needs the removed package of the test before"
    gs.sh(f"{APT} install {debs[UPGRADE]}", timeout=300)
    assert gs.active()
    jobs = {j["id"]: j for j in gs.list(all=True)}
    ran = max(jobs)                                           # the job that ended while nothing was installed
    st = gs.wait(ran, {"failed"}, timeout=10)
    assert (st["exit_code"], st["attempt"]) == (5, 1), st
    assert gs.submit("alice", 'gpus = 0\ncommand = "true"\n') > ran      # ids go on, never reused
    gs.sh(f"{APT} remove gpusched", timeout=300)


def test_apt_purge_removes_state_spool_and_config(pkg):
    gs = pkg
    assert _installed(gs).startswith("deinstall ok config-files"), "needs the removed package of the test before"
    gs.sh(f"{APT} purge gpusched", timeout=300)
    assert gs.sh("dpkg-query -W -f='${Status}' gpusched", check=False).stdout.strip() in ("", "unknown ok not-installed")
    for path in (STATE, SPOOL, "/etc/gpusched", "/etc/pam.d/gpusched",
                 "/etc/systemd/system/multi-user.target.wants/gpusched.service"):
        assert gs.sh(f"test -e {path}", check=False).returncode != 0, f"{path} is still there after purge"
