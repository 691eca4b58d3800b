"""A Debian 12 guest with pure cgroup v2, booted with qemu, for what the nspawn box can't enforce (issue 10).

The image comes from scripts/vm-image (built once, cached under /var/cache/gpusched-vm). The guest boots
with `-snapshot` (its writes vanish with it) and a 9p share: the host drops a command file into the share's
queue, the guest's agent (tests/vm/guest/gpusched-vm-agent) runs it as root under the guest's systemd and
writes back stdout, stderr and the exit status. KVM is tried first with a short probe (a Linux guest hangs
with KVM on some hosts), then plain emulation (TCG).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KVM_PROBE_S = 10


class VmError(Exception):
    pass


def why_not() -> str | None:
    """Why the VM can't run here, or None."""
    if os.geteuid() != 0:
        return "the VM tests need root (scripts/vm-image builds the image with mmdebstrap)"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    return None


def image() -> str:
    """The cached image's directory, built first if needed (minutes, once). VmError if it can't be."""
    p = subprocess.run([os.path.join(ROOT, "scripts/vm-image")], capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise VmError(f"scripts/vm-image failed: {p.stderr.strip()[-2000:]}")
    return p.stdout.strip().splitlines()[-1]


class Vm:
    def __init__(self, image_dir: str, memory: str = "1536", cpus: int = 2):
        self.image_dir, self.memory, self.cpus = image_dir, memory, cpus
        self.share = tempfile.mkdtemp(prefix="gpusched-vm-", dir="/var/tmp")
        self.console = os.path.join(self.share, "console.log")
        self.proc: subprocess.Popen | None = None
        self.accel = ""
        self.boot_s = 0.0

    def _start(self, accel: str) -> None:
        img = self.image_dir
        cpu = ["-cpu", "host,-arch-capabilities"] if accel == "kvm" else ["-cpu", "max"]
        cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=multi" if accel == "tcg" else "kvm", *cpu,
               "-smp", str(self.cpus), "-m", self.memory, "-nographic", "-no-reboot", "-snapshot",
               "-kernel", f"{img}/vmlinuz", "-initrd", f"{img}/initrd.img",
               "-append", "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=0",
               "-drive", f"file={img}/root.img,format=raw,if=virtio",
               "-virtfs", f"local,path={self.share},mount_tag=host,security_model=none,id=host",
               "-nic", "none", "-serial", f"file:{self.console}", "-monitor", "none", "-display", "none"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.share, "qemu.err"), "w"))
        self.accel = accel

    def _console(self) -> str:
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(os.path.join(self.share, "ready")):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def up(self, boot_timeout: float = 600) -> None:
        t0 = time.monotonic()
        accel = os.environ.get("GPUSCHED_VM_ACCEL", "")
        if not accel and os.access("/dev/kvm", os.R_OK | os.W_OK):
            # the probe: a kernel that prints its banner within KVM_PROBE_S boots under KVM here
            self._start("kvm")
            deadline = time.monotonic() + KVM_PROBE_S
            while time.monotonic() < deadline and "Linux version" not in self._console() and self.proc.poll() is None:
                time.sleep(0.2)
            if "Linux version" in self._console():
                accel = "kvm"
            else:
                self._kill()
                os.unlink(self.console)
        if accel != "kvm":
            self._start("tcg")
        if not self._wait_ready(boot_timeout):
            tail = self._console()[-3000:]
            self.down()
            raise VmError(f"the guest did not come up ({self.accel}); console:\n{tail}")
        self.boot_s = time.monotonic() - t0

    def run(self, cmd: str, user: str | None = None, check: bool = True, timeout: float = 120,
            input: str = "") -> subprocess.CompletedProcess:
        """Run `cmd` with bash in the guest (as root, or as `user` through runuser)."""
        if user:
            cmd = f"exec runuser -u {user} -- bash -c {shlex.quote(cmd)}"
        q = os.path.join(self.share, "q")
        n = os.path.join(q, uuid.uuid4().hex)
        with open(n + ".in", "w") as f:
            f.write(input)
        with open(n + ".tmp", "w") as f:
            f.write(f"exec timeout -k 5 {int(timeout)} bash -c {shlex.quote(cmd)}\n")
        os.rename(n + ".tmp", n + ".cmd")
        deadline = time.monotonic() + timeout + 30
        while not os.path.exists(n + ".rc"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise VmError(f"no answer from the guest to {cmd!r}; console:\n{self._console()[-2000:]}")
            time.sleep(0.05)
        rc = int(open(n + ".rc").read().strip() or 255)
        out, err = open(n + ".out", errors="replace").read(), open(n + ".err", errors="replace").read()
        for ext in (".in", ".run", ".out", ".err", ".rc"):
            with contextlib.suppress(OSError):
                os.unlink(n + ext)
        p = subprocess.CompletedProcess(cmd, rc, out, err)
        if check and rc != 0:
            raise VmError(f"guest command failed ({rc}): {cmd}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}")
        return p

    def put(self, src: str, name: str) -> str:
        """Copy a host file into the share; its path in the guest."""
        shutil.copy(src, os.path.join(self.share, name))
        return f"/mnt/host/{name}"

    def down(self) -> None:
        self._kill()
        shutil.rmtree(self.share, ignore_errors=True)

