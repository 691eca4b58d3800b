"""Run inside the box by bench/inbox.py's web_idle, as one user: a real headless Chromium (the browser test's,
tests/integration/web_browser.py) that opens the dashboard's pages one by one and then sits on each, as a
person who leaves a tab open does. The connection is loopback, so the dashboard names the user from the kernel.

It reads one URL a line on stdin; for each it opens the page, waits until it has loaded (a job page: until its
live log says it is following), and prints one JSON line: the URL and whether the page named the user as
signed in. End of input closes the browser."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
from web_browser import browser  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def main() -> int:
    user = os.environ.get("USER", "?")
    d = browser()
    try:
        for line in sys.stdin:
            url = line.strip()
            d.get(url)
            if "/jobs/" in url:          # its log is followed from the page's script (server-sent events)
                WebDriverWait(d, 20).until(lambda _: d.find_elements(By.ID, "log"))
            print(json.dumps({"url": url, "signed_in": f"signed in as <b>{user}</b>" in d.page_source}),
                  flush=True)
    finally:
        d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
