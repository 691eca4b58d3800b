"""The enforcement suite's guest: one cgroup v2 VM per session (tests/vm/vm.py), the .deb from
scripts/build-deb installed in it with apt, 4 simulated GPUs mapped to device nodes made by mknod, and the
users alice and bob. Tests drive it as the box's tests drive theirs (tests/integration/conftest.py's Gs)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.box import NoPackage, build_deb
from tests.integration.conftest import serve
from tests.vm.vm import Vm, VmError, image, why_not

CONFIG = "".join('[[gpus.simulated]]\nname = "Simulated A100 80GB"\nmemory = "80G"\n\n' for _ in range(4))
# the nodes of a real NVIDIA driver, without the driver: an open the device cgroup allows fails with ENXIO
NODES = " && ".join([f"mknod -m 666 /dev/nvidia{i} c 195 {i}" for i in range(4)]
                    + ["mknod -m 666 /dev/nvidiactl c 195 255"])


def pytest_collection_modifyitems(config, items):
    reason = why_not()
    for item in items:
        if os.sep + "vm" + os.sep in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def _deb() -> str:
    try:
        return build_deb()
    except NoPackage as e:
        pytest.skip(f"the .deb can't be built here: {e}")


@pytest.fixture(scope="session")
def vm():
    deb = _deb()
    t0 = time.monotonic()
    try:
        img = image()
    except VmError as e:   # no mirror, no mmdebstrap: nothing to show here, which is not a failure of gpusched
        pytest.skip(f"the VM image can't be built here: {e}")
    built = time.monotonic() - t0
    v = Vm(img)
    try:
        v.up()
        t1 = time.monotonic()
        v.run(f"apt-get install -y -q {v.put(deb, 'gpusched.deb')}", timeout=300)   # offline: its Depends are in the image
        v.run("cat > /etc/gpusched/gpusched.toml", input=CONFIG)
        v.run(f"{NODES} && "
              "useradd -m -s /bin/bash alice && useradd -m -s /bin/bash bob && systemctl restart gpusched")
        print(f"\nvm: image {built:.0f} s, boot {v.boot_s:.0f} s ({v.accel}), install {time.monotonic() - t1:.0f} s",
              file=sys.stderr)
        yield v
    finally:
        v.down()


@pytest.fixture
def gs(vm, request):
    yield from serve(vm, request, "the VM")
