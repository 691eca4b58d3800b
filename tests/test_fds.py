import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def open_fds(keep, extra=()):
    """In a fresh process: open some fds without CLOEXEC (also a high one), keep `keep`, list what is left."""
    code = f"""
import os
from gpusched import fds
opened = [os.open("/dev/null", os.O_RDONLY) for _ in range(5)]
for fd in opened:
    os.set_inheritable(fd, True)
os.dup2(opened[0], 900)
fds.close_all_but({tuple(keep)!r})
print(sorted(int(n) for n in os.listdir("/proc/self/fd")))
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return eval(p.stdout)


def test_only_0_1_2_are_left():
    assert open_fds((0, 1, 2)) == [0, 1, 2, 3]          # 3: the listing's own


def test_keeps_what_it_is_told_also_in_the_middle():
    assert open_fds((0, 1, 2, 4, 900)) == [0, 1, 2, 3, 4, 900]  # 3: the listing's own


def test_keeps_stdio_even_when_not_asked():
    # keep (2,): everything below and above goes, never a closerange(0, 0) that closes all
    assert open_fds((1, 2)) == [0, 1, 2]                   # 0: the listing's own
