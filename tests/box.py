"""A real, throwaway systemd in a container (docs/box.md), for tests and the demo.

The box is an nspawn container over an overlay of this machine's /, writes going to a tmpfs, with the
checkout bound at /src. `sudo python3 tests/box.py [--tests] up|down|shell|run CMD...` drives one by hand: the
demo's box (scripts/run-service) by default, the test suite's with --tests; $GPUSCHED_BOX_DIR names another.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One box per directory, each in a cgroup of its own: the test suite's box and the demo's are apart, so a test
# run never takes down the demo (scripts/run-service) or the other way round. $GPUSCHED_BOX_DIR replaces both.
DEFAULT_DIR = os.environ.get("GPUSCHED_BOX_DIR", "/var/tmp/gpusched-tests-box")     # the test suite's
DEMO_DIR = os.environ.get("GPUSCHED_BOX_DIR", "/var/tmp/gpusched-demo-box")         # scripts/run-service's
MASK = ["postgresql.service", "getty@tty1.service", "e2scrub_reap.service", "systemd-timesyncd.service",
        "console-getty.service", "apt-daily.service", "apt-daily-upgrade.service", "man-db.service"]
PY = "/usr/bin/python3"


def free_port(hosts: tuple[str, ...] = ("127.0.0.1", "::1"), low: int = 20000, high: int = 29999) -> int | None:
    """A TCP port free on all of `hosts` now (None if 50 tries found none). Boxes share this machine's network
    namespace, and other people's boxes and the CI hold the dashboard's default port 8765: a box that serves on
    loopback takes one of these instead."""
    for _ in range(50):
        port = random.randint(low, high)
        try:
            for host in hosts:
                with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    return None


class BoxError(Exception):
    """A box that can't be started, found or used; its message is one line a person can act on."""


class NoPackage(Exception):
    """scripts/build-deb can't build here: its tools are missing and can't be installed (its exit status 3)."""


def build_deb(*args: str, src: str = ROOT) -> str:
    """scripts/build-deb --no-lintian ARGS (cached: unchanged inputs are not rebuilt): the .deb's path on this
    machine. Raises NoPackage where it can't be built for want of its tools, BoxError when the build fails."""
    p = subprocess.run([os.path.join(src, "scripts/build-deb"), "--no-lintian", *args], capture_output=True,
                       text=True, timeout=900)
    if p.returncode == 3:
        raise NoPackage(p.stderr.strip())
    if p.returncode != 0:
        raise BoxError(f"scripts/build-deb {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout.strip().splitlines()[-1]


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _hierarchies() -> list[str]:
    """The cgroup hierarchies systemd-nspawn places a box in (the named v1 one and the unified one of a hybrid
    layout, or v2's)."""
    if os.path.isdir("/sys/fs/cgroup/systemd"):
        return ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
    return ["/sys/fs/cgroup"]


def _enter_cgroup(name: str) -> None:
    """In the forked child, before exec: move into /<name> of every hierarchy. systemd-nspawn (--keep-unit, no
    registration) puts the box in `payload` beside the cgroup it was started from: two boxes started from the
    same one would share it, and each one's systemd would see and manage the other's units (gpusched.slice,
    the job scopes of the same ids). A failure leaves it where it was (the box still boots)."""
    for mount in _hierarchies():
        try:
            with open(f"{mount}/{name}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass


def _remove_cgroup(name: str) -> None:
    for mount in _hierarchies():
        for d, _, _ in sorted(os.walk(f"{mount}/{name}"), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _cli(flag: str) -> str:
    """How a person calls box.py for this box, from the checkout."""
    env = f"GPUSCHED_BOX_DIR={shlex.quote(os.environ['GPUSCHED_BOX_DIR'])} " if "GPUSCHED_BOX_DIR" in os.environ else ""
    return f"sudo {env}python3 tests/box.py{flag}"


class Box:
    def __init__(self, base: str = DEFAULT_DIR, src: str = ROOT, name: str | None = None):
        name = name or os.path.basename(base.rstrip("/"))
        self.base = base
        self.src = src
        self.name = name
        self.root = os.path.join(base, "root")
        self.pidfile = base + ".pid"
        self.logfile = base + ".log"
        self.cgroup = "gpusched-" + self.name        # the box's own cgroup (_enter_cgroup)
        self.sd: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def up(self, timeout: float = 60) -> None:
        """Boot the box; on any failure (or ^C) take down what was set up and raise BoxError."""
        if os.geteuid() != 0:
            raise BoxError("booting a box needs root: run it with sudo")
        if not shutil.which("systemd-nspawn"):
            raise BoxError("systemd-nspawn is missing: apt install systemd-container (scripts/setup-deps does)")
        if not os.path.isdir(self.src):
            raise BoxError(f"the checkout to bind at /src, {self.src}, is not a directory")
        self.down()                                      # a leftover box makes the next boot fail
        try:
            self._boot(timeout)
        except BaseException as e:
            self.down()
            if isinstance(e, subprocess.CalledProcessError):
                why = (e.stderr or "").strip() or f"exit status {e.returncode}"
                raise BoxError(f"{' '.join(e.cmd)} failed: {why} (the box was taken down)") from e
            if isinstance(e, BoxError):
                raise BoxError(f"{e} (the box was taken down; nspawn's output: {self.logfile})") from e
            if isinstance(e, OSError):
                raise BoxError(f"{e} (the box was taken down)") from e
            raise

    def _boot(self, timeout: float) -> None:
        for d in ("lower", "rw", "root"):
            os.makedirs(os.path.join(self.base, d), exist_ok=True)
        _sh("mount", "--bind", "/", os.path.join(self.base, "lower"))
        _sh("mount", "-t", "tmpfs", "tmpfs", os.path.join(self.base, "rw"))
        os.makedirs(os.path.join(self.base, "rw/upper"), exist_ok=True)
        os.makedirs(os.path.join(self.base, "rw/work"), exist_ok=True)
        _sh("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={self.base}/lower,upperdir={self.base}/rw/upper,workdir={self.base}/rw/work", self.root)
        timers = os.path.join(self.root, "etc/systemd/system/timers.target.wants")
        for unit in MASK + (os.listdir(timers) if os.path.isdir(timers) else []):
            target = os.path.join(self.root, "etc/systemd/system", unit)
            if os.path.lexists(target):
                os.unlink(target)
            os.symlink("/dev/null", target)
        for mount in _hierarchies():
            try:
                os.makedirs(f"{mount}/{self.cgroup}", exist_ok=True)
            except OSError:
                pass
        with open(self.logfile, "wb") as log:
            proc = subprocess.Popen(
                ["systemd-nspawn", "-D", self.root, "--register=no", "--keep-unit", "--link-journal=no",
                 "-M", self.name, "-b", f"--bind={self.src}:/src"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: _enter_cgroup(self.cgroup))
        with open(self.pidfile, "w") as f:
            f.write(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BoxError(f"systemd-nspawn exited with {proc.returncode}: {self._last_log_line()}")
            self.sd = self._find_systemd(proc.pid)
            if self.sd and self.run("systemctl is-system-running --wait", check=False).stdout.strip() in (
                    "running", "degraded"):
                return
            time.sleep(0.1)
        raise BoxError(f"the box did not boot in {timeout:g} s")

    def _last_log_line(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return "(no output)"
        return lines[-1] if lines else "(no output)"

    @staticmethod
    def _find_systemd(nspawn_pid: int) -> int | None:
        try:
            children = open(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read().split()
        except OSError:
            return None
        for p in children:
            try:
                if open(f"/proc/{p}/comm").read().strip() == "systemd":
                    return int(p)
            except OSError:
                pass
        return None

    def attach(self) -> None:
        """Find a box started earlier (by `up` in another process)."""
        try:
            with open(self.pidfile) as f:
                self.sd = self._find_systemd(int(f.read().strip() or 0))
        except (OSError, ValueError):
            self.sd = None
        if not self.sd:
            demo = self.base == DEMO_DIR != DEFAULT_DIR
            raise BoxError(f"no box is running in {self.base}: " + (
                "`sudo scripts/run-service` boots it with gpusched and the demo's jobs" if demo else
                f"`{_cli(self._flag())} up` starts one"))

    def _flag(self) -> str:
        return " --tests" if self.base == DEFAULT_DIR and DEFAULT_DIR != DEMO_DIR else ""


    def down(self) -> None:
        if os.path.exists(self.pidfile):
            try:
                with open(self.pidfile) as f:
                    pid = int(f.read().strip() or 0)
            except ValueError:
                pid = 0
            if pid and os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
                for _ in range(200):
                    if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                        break
                    time.sleep(0.05)
                else:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
            os.unlink(self.pidfile)
        _remove_cgroup(self.cgroup)
        for d in ("root", "rw", "lower"):
            path = os.path.join(self.base, d)
            # not os.path.ismount: a bind mount of / onto a directory of the same filesystem fools it
            while _mounted(path):
                if _sh("umount", path, check=False).returncode != 0:
                    _sh("umount", "-l", path, check=False)
        self.sd = None

    # --- running things inside ---------------------------------------------------------------------------

    def command(self, cmd: str, user: str | None = None) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that run a shell command in the box, as root or as `user` (run() runs it;
        a test that needs a terminal starts it on a pty itself)."""
        if not self.sd:
            raise BoxError(f"no box is up here (Box.up or Box.attach first): {self.base}")
        argv = ["nsenter", "-t", str(self.sd), "-a"]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        if user:
            argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env", "--",
                     "/usr/bin/env", f"HOME=/home/{user}", f"USER={user}", f"PATH={env['PATH']}", "LANG=C.UTF-8"]
        return argv + ["/bin/bash", "-c", cmd], env

    def run(self, cmd: str, user: str | None = None, check: bool = True, timeout: float | None = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """A shell command in the box (all its namespaces), as root or as `user`."""
        argv, env = self.command(cmd, user)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input,
                           cwd="/")
        if check and p.returncode != 0:
            raise BoxError(f"in box{' as ' + user if user else ''}: {cmd!r} exited {p.returncode}\n"
                           f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}")
        return p

    def install(self, simulated_gpus: int = 4) -> None:
        """gpusched's Debian package (scripts/build-deb, built here and cached) installed in the box with apt,
        as an administrator would; from the checkout's files (scripts/install alone) only where the package
        can't be built, saying so."""
        try:
            deb = build_deb(src=self.src)
        except (NoPackage, BoxError) as e:
            print(f"box: the package can't be built ({str(e).strip()[-300:]}); installing from the checkout",
                  file=sys.stderr)
        else:
            # this machine's image forbids services to start from maintainer scripts (Docker's policy-rc.d,
            # exit 101); a real Debian has none, and the box's copy is its own (an overlay)
            self.run("rm -f /usr/sbin/policy-rc.d")
            self.run(f"/src/scripts/install --deb /src/{os.path.relpath(deb, self.src)} "
                     f"--simulated-gpus {simulated_gpus} --start", timeout=300)
            return
        self.run(f"/src/scripts/install --simulated-gpus {simulated_gpus} --start", timeout=300)

    def add_user(self, name: str) -> None:
        self.run(f"id {name} >/dev/null 2>&1 || useradd -m -s /bin/bash {shlex.quote(name)}")


USAGE = """usage: sudo python3 tests/box.py [--tests] up [--install] | down | shell | run CMD...
  up         boot the box (--install: install gpusched into it with 4 simulated GPUs and start it)
  down       stop it and remove it, with everything done in it
  shell      a root shell in it (`su - demo` there to be the demo's user)
  run CMD    run CMD in it as root
  --tests    the test suite's box instead of the demo's (scripts/run-service)"""


def main(argv: list[str]) -> int:
    tests = "--tests" in argv[:1]
    argv = argv[1:] if tests else argv
    if not argv or argv[0] not in ("up", "down", "shell", "run") or (argv[0] == "run" and len(argv) < 2):
        print(USAGE, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    if os.geteuid() != 0:
        print("box.py: the box is root's: run it with sudo", file=sys.stderr)
        return 1
    box = Box(base=DEFAULT_DIR if tests else DEMO_DIR)
    flag = " --tests" if tests else ""
    try:
        if argv[0] == "up":
            box.up()
            if "--install" in argv:
                try:
                    box.install()
                except BaseException:
                    box.down()
                    raise
            print(f"box is up in {box.base}: `{_cli(flag)} shell` enters it, `{_cli(flag)} down` removes it "
                  "with everything done in it")
        elif argv[0] == "down":
            box.down()
        elif argv[0] == "shell":
            box.attach()
            os.execvp("nsenter", ["nsenter", "-t", str(box.sd), "-a", "/bin/bash", "-l"])
        else:
            box.attach()
            p = box.run(" ".join(argv[1:]), check=False, timeout=None)
            sys.stdout.write(p.stdout)
            sys.stderr.write(p.stderr)
            return p.returncode
    except BoxError as e:
        print(f"box.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
