"""A real, throwaway systemd in a container (see shared/SYSTEMD_BOX.md), for tests and the demo.

The box is an nspawn container over an overlay of this machine's /, writes going to a tmpfs, with the
checkout bound at /src. `python3 tests/box.py up|down|shell|run CMD...` drives one by hand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.environ.get("GPUSCHED_BOX_DIR", "/var/tmp/gpusched-box")   # one box per directory
MASK = ["postgresql.service", "getty@tty1.service", "e2scrub_reap.service", "systemd-timesyncd.service",
        "console-getty.service", "apt-daily.service", "apt-daily-upgrade.service", "man-db.service"]
PY = "/usr/bin/python3"


class BoxError(Exception):
    pass


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


class Box:
    def __init__(self, base: str = DEFAULT_DIR, src: str = ROOT, name: str = "gpusched-box"):
        name = os.path.basename(base) if base != DEFAULT_DIR or "GPUSCHED_BOX_DIR" in os.environ else name
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
        self.down()                                      # a leftover box makes the next boot fail
        for d in ("lower", "rw", "root"):
            os.makedirs(os.path.join(self.base, d), exist_ok=True)
        _sh("mount", "--bind", "/", os.path.join(self.base, "lower"))
        _sh("mount", "-t", "tmpfs", "tmpfs", os.path.join(self.base, "rw"))
        os.makedirs(os.path.join(self.base, "rw/upper"))
        os.makedirs(os.path.join(self.base, "rw/work"))
        _sh("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={self.base}/lower,upperdir={self.base}/rw/upper,workdir={self.base}/rw/work", self.root)
        timers = os.path.join(self.root, "etc/systemd/system/timers.target.wants")
        for unit in MASK + (os.listdir(timers) if os.path.isdir(timers) else []):
            target = os.path.join(self.root, "etc/systemd/system", unit)
            if os.path.lexists(target):
                os.unlink(target)
            os.symlink("/dev/null", target)
        log = open(self.logfile, "wb")
        for mount in _hierarchies():
            try:
                os.makedirs(f"{mount}/{self.cgroup}", exist_ok=True)
            except OSError:
                pass
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
                raise BoxError(f"systemd-nspawn exited: {open(self.logfile, errors='replace').read()[-2000:]}")
            self.sd = self._find_systemd(proc.pid)
            if self.sd and self.run("systemctl is-system-running --wait", check=False).stdout.strip() in (
                    "running", "degraded"):
                return
            time.sleep(0.1)
        raise BoxError("the box did not boot in time")

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
        with open(self.pidfile) as f:
            self.sd = self._find_systemd(int(f.read()))
        if not self.sd:
            raise BoxError("no box is running (python3 tests/box.py up)")

    def down(self) -> None:
        if os.path.exists(self.pidfile):
            pid = int(open(self.pidfile).read() or 0)
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
                    os.kill(pid, 9)
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

    def run(self, cmd: str, user: str | None = None, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """A shell command in the box (all its namespaces), as root or as `user`."""
        assert self.sd, "box is not up"
        argv = ["nsenter", "-t", str(self.sd), "-a"]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        if user:
            argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env", "--",
                     "/usr/bin/env", f"HOME=/home/{user}", f"USER={user}", f"PATH={env['PATH']}", "LANG=C.UTF-8"]
        argv += ["/bin/bash", "-c", cmd]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input,
                           cwd="/")
        if check and p.returncode != 0:
            raise BoxError(f"in box{' as ' + user if user else ''}: {cmd!r} exited {p.returncode}\n"
                           f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}")
        return p

    def install(self, simulated_gpus: int = 4) -> None:
        self.run(f"/src/scripts/install --simulated-gpus {simulated_gpus} --start", timeout=300)

    def add_user(self, name: str) -> None:
        self.run(f"id {name} >/dev/null 2>&1 || useradd -m -s /bin/bash {shlex.quote(name)}")


def main(argv: list[str]) -> int:
    box = Box()
    if not argv or argv[0] not in ("up", "down", "shell", "run"):
        print("usage: box.py up [--install] | down | shell | run CMD...", file=sys.stderr)
        return 2
    if argv[0] == "up":
        box.up()
        if "--install" in argv:
            box.install()
        print(f"box is up: systemd is PID {box.sd} on this machine; `python3 tests/box.py shell` to enter")
    elif argv[0] == "down":
        box.down()
    elif argv[0] == "shell":
        box.attach()
        os.execvp("nsenter", ["nsenter", "-t", str(box.sd), "-a", "/bin/bash", "-l"])
    else:
        box.attach()
        p = box.run(" ".join(argv[1:]), check=False)
        sys.stdout.write(p.stdout)
        sys.stderr.write(p.stderr)
        return p.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
