"""The linter runs as a test: unused imports, undefined names and the like fail the suite."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyflakes_is_clean():
    p = subprocess.run([sys.executable, "-m", "pyflakes", "gpusched", "tests", "bench", "bench/run"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
