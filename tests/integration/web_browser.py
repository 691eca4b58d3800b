"""Run inside the box by tests/integration/test_web.py, as one user: headless Chromium (Debian's chromium,
chromium-driver, python3-selenium) on the dashboard through loopback, so the connection is that user's in the
kernel's socket table. Prints one JSON object of what it saw; writes screenshots into OUT.

usage: web_browser.py OUT ROLE URL MINE OTHER
  ROLE  owner (follow MINE's log, refused on OTHER, cancel MINE, submit) | public (no log, no path, no action)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser(*more: str) -> webdriver.Chrome:
    """Headless Chromium with the arguments `more` too (web_signin_browser.py: a profile, a pinned key); its
    console (CSP refusals, failed loads) kept for get_log("browser")."""
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions", *more):
        opts.add_argument(arg)               # --no-sandbox: the box blocks the namespaces Chromium's sandbox uses
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=opts) \
        if hasattr(webdriver, "ChromeService") else webdriver.Chrome(options=opts)


def post_form(d: webdriver.Chrome, action: str, token: str) -> None:
    """POST a form with only the token `token` to `action` from the page shown, as a page's form would be sent
    (the browser adds Origin, Referer and the cookies itself): what a forged click on another's job does."""
    d.execute_script(
        "var f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "var i = document.createElement('input'); i.name = 'csrf'; i.value = arguments[1]; f.appendChild(i);"
        "document.body.appendChild(f); f.submit();", action, token)


def status_has(d: webdriver.Chrome, *words: str) -> bool:
    """Whether the job page's status says one of `words`."""
    try:                                        # the page may be being replaced (the action's redirect)
        return any(w in d.find_element(By.ID, "status").text for w in words)
    except Exception:  # noqa: BLE001
        return False


def text(d: webdriver.Chrome) -> str:
    return d.find_element(By.TAG_NAME, "body").text


def follow_log(d: webdriver.Chrome, wait: Any, seen: dict, shot: Any) -> None:
    """On a job's page: wait until its live log has shown "line 5"; how long that took and the log go into
    `seen`, a screenshot named "job" is taken."""
    t = time.monotonic()
    wait.until(lambda _: "line 5" in d.find_element(By.ID, "log").text)
    seen["log_after"] = time.monotonic() - t
    seen["log"] = d.find_element(By.ID, "log").text
    shot("job")


def main() -> int:
    out, role, url, mine, other = sys.argv[1:6]
    os.makedirs(out, exist_ok=True)
    seen: dict[str, object] = {}
    d = browser()
    wait = WebDriverWait(d, 20)

    def shot(name: str) -> None:
        d.save_screenshot(os.path.join(out, f"{name}.png"))

    try:
        d.get(f"{url}/queue")
        seen["queue"] = text(d)
        shot("queue")
        d.get(f"{url}/jobs/{mine}")
        seen["job_html"] = d.page_source
        if role == "public":
            seen["job_text"] = text(d)
            shot("public-job")
            d.get(f"{url}/")
            shot("public-gpus")
            seen["gpus"] = text(d)
            return print(json.dumps(seen)) or 0
        # follow my job's live log until it has printed line 5
        follow_log(d, wait, seen, shot)
        # the other user's job: no log, no buttons; a forged POST (with my own valid token) is refused
        d.get(f"{url}/jobs/{other}")
        seen["other_html"] = d.page_source
        d.get(f"{url}/submit")
        token = d.find_element(By.NAME, "csrf").get_attribute("value")
        post_form(d, f"/jobs/{other}/cancel", token)
        wait.until(lambda _: d.find_elements(By.ID, "error"))
        seen["refused"] = d.find_element(By.ID, "error").text
        # cancel my own job with its button
        d.get(f"{url}/jobs/{mine}")
        d.find_element(By.ID, "do-cancel").click()
        wait.until(lambda _: status_has(d, "stopping", "cancelled"))
        seen["after_cancel"] = d.find_element(By.ID, "status").text
        # submit a job file, a wrong one first (the parser's words), then a good one
        d.get(f"{url}/submit")
        area = d.find_element(By.ID, "jobfile")
        area.clear()
        area.send_keys('command = "echo hi"\ngpus = "two"\n')
        d.find_element(By.ID, "do-submit").click()
        wait.until(lambda _: d.find_elements(By.ID, "problems"))
        seen["problems"] = d.find_element(By.ID, "problems").text
        shot("submit-error")
        area = d.find_element(By.ID, "jobfile")
        area.clear()
        area.send_keys('command = "echo submitted from the web"\ngpus = 0\nname = "from-web"\n')
        d.find_element(By.ID, "do-submit").click()
        wait.until(lambda _: "/jobs/" in d.current_url)
        seen["submitted_url"] = d.current_url
        d.get(f"{url}/")
        shot("gpus")
        d.get(f"{url}/usage?since=7d")
        shot("usage")
        print(json.dumps(seen))
        return 0
    finally:
        d.quit()


if __name__ == "__main__":
    sys.exit(main())
