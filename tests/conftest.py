import os
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (rep_setup, rep_call, ...): the service fixtures print the
    machine's journal when the test itself failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def service(tmp_path):
    """Write a throwaway PAM service (tests/test_pam.py, test_web_login.py); yields a function (text) -> service name. Removed afterwards."""
    made = []

    def make(text: str) -> str:
        name = f"gpusched-test-{uuid.uuid4().hex[:12]}"
        path = os.path.join("/etc/pam.d", name)
        with open(path, "x") as f:
            f.write(text)
        made.append(path)
        return name

    yield make
    for path in made:
        os.unlink(path)
