"""Run inside the box by tests/integration/test_web_signin.py: headless Chromium signs in to the dashboard
beyond loopback (HTTPS on an address that is not loopback: docs/web.md, "Signing in from elsewhere") as one
person, in a fresh profile of its own, and does what a person does there. Prints one JSON object of what it
saw; writes screenshots into OUT.

The test's certificate is self-signed. The browser trusts it by its key only: --ignore-certificate-errors-
spki-list with the SHA-256 of the certificate's public key (Chromium honours it only with --user-data-dir),
so a certificate with any other key is still an error, as it would be for a person who imported the
certificate; --ignore-certificate-errors, which would accept anyone's, is never used. --untrusted first opens
the page in a profile without that pin, to see that the certificate is refused there.

usage: web_signin_browser.py OUT URL SPKI USER PASSWORD MINE OTHER [--untrusted]
  MINE   USER's running job: its live log is followed, then it is cancelled with its button
  OTHER  someone else's running job: its page has no log and no action for USER, its log is refused
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from web_browser import browser, follow_log, post_form, status_has, text

SESSION = "__Host-gpusched-session"


def signed_in_as(d) -> str:
    found = d.find_elements(By.CSS_SELECTOR, ".who b")
    return found[0].text if found else ""


def submit(d, wait: WebDriverWait, button_id: str) -> None:
    """Click a form's button and wait until the page it brings is there: a new document (a new window object,
    without the mark put on the old one), loaded. Not selenium's staleness_of: while the old page goes,
    chromedriver may answer its question with a plain error ("Node with given id does not belong to the
    document") instead of a stale element: `wait` takes errors for "not yet"."""
    d.execute_script("window.gsOldPage = true")
    d.find_element(By.ID, button_id).click()
    wait.until(lambda _: d.execute_script(
        "return window.gsOldPage === undefined && document.readyState === 'complete'"))


def untrusted(url: str) -> dict[str, Any]:
    """What a profile that doesn't pin the key shows for the sign-in page: the certificate error, no form."""
    profile = tempfile.mkdtemp(prefix="gs-profile-")
    d = browser(f"--user-data-dir={profile}")
    try:
        d.get(f"{url}/login")
        return {"title": d.title, "form": bool(d.find_elements(By.ID, "password")),
                "cert_error": "ERR_CERT_AUTHORITY_INVALID" in d.page_source}
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    out, url, spki, user, password, mine, other = sys.argv[1:8]
    os.makedirs(out, exist_ok=True)
    seen: dict[str, Any] = {}
    if "--untrusted" in sys.argv[8:]:
        seen["untrusted"] = untrusted(url)
    profile = tempfile.mkdtemp(prefix="gs-profile-")          # a fresh profile: no cookie of anyone before
    d = browser(f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={spki}")
    # a refused password alone takes 2 s, on a machine others share; an error while a page is replaced is
    # "not yet" (submit)
    wait = WebDriverWait(d, 30, ignored_exceptions=(WebDriverException,))

    def shot(name: str) -> None:
        d.save_screenshot(os.path.join(out, f"{name}.png"))

    def sign_in(name: str, pw: str) -> float:
        d.find_element(By.ID, "user").clear()
        d.find_element(By.ID, "user").send_keys(name)
        d.find_element(By.ID, "password").send_keys(pw)
        t = time.monotonic()
        submit(d, wait, "do-login")
        return time.monotonic() - t

    def error() -> str:
        found = d.find_elements(By.ID, "error")
        return found[0].text if found else ""

    try:
        # no session: any page gives the sign-in form
        d.get(f"{url}/queue")
        seen["first_url"] = d.current_url
        seen["cookies_before"] = sorted(c["name"] for c in d.get_cookies())
        d.set_window_size(1000, 400)                 # the form is small: docs/img/web-signin.png without the void
        shot("signin")
        d.set_window_size(1280, 900)
        # a wrong password, then an unknown user: the same words, both after the same wait
        seen["refusals"] = []
        for name, pw in ((user, password + "-wrong"), ("nosuchuser", password)):
            took = sign_in(name, pw)
            seen["refusals"].append({"error": error(), "seconds": took, "url": d.current_url,
                                     "session": any(c["name"] == SESSION for c in d.get_cookies())})
        shot("signin-refused")
        # the right password: signed in, on the page first asked for (the queue)
        sign_in(user, password)
        seen["signed_in_url"], seen["signed_in_as"] = d.current_url, signed_in_as(d)
        cookie = next((c for c in d.get_cookies() if c["name"] == SESSION), None)
        assert cookie, f"no session cookie after signing in: {d.get_cookies()} on {d.current_url}"
        seen["cookie"] = {k: v for k, v in cookie.items() if k != "value"}
        seen["document_cookie"] = d.execute_script("return document.cookie")   # HttpOnly: none for scripts
        name, button = d.find_element(By.CSS_SELECTOR, ".who b").rect, d.find_element(By.ID, "logout").rect
        seen["logout_beside_name"] = abs((name["y"] + name["height"] / 2) - (button["y"] + button["height"] / 2)) \
            < button["height"] / 2
        # the queue
        d.get(f"{url}/queue")
        seen["queue"] = text(d)
        shot("queue")
        # my job: its log follows live
        d.get(f"{url}/jobs/{mine}")
        follow_log(d, wait, seen, shot)
        # the other's job: no log, no action; its log refused; a forged cancel with my own token refused
        d.get(f"{url}/jobs/{other}")
        seen["other_html"] = d.page_source
        d.get(f"{url}/jobs/{other}/log")
        seen["other_log"] = text(d)
        d.get(f"{url}/queue")
        post_form(d, f"/jobs/{other}/cancel", d.find_element(By.NAME, "csrf").get_attribute("value"))
        wait.until(lambda _: d.find_elements(By.ID, "error"))
        seen["other_cancel"] = error()
        # cancel my job with its button: the browser sends the form's token, its Origin and the cookie
        d.get(f"{url}/jobs/{mine}")
        d.find_element(By.ID, "do-cancel").click()
        wait.until(lambda _: status_has(d, "stopping", "cancelled"))
        seen["after_cancel"] = d.find_element(By.ID, "status").text
        seen["after_cancel_url"] = d.current_url
        # sign out (from the queue, so that Back goes there)
        d.get(f"{url}/queue")
        old = next(c for c in d.get_cookies() if c["name"] == SESSION)
        submit(d, wait, "logout")
        seen["signed_out_url"] = d.current_url
        seen["cookies_after"] = sorted(c["name"] for c in d.get_cookies())
        # Back: the queue again? No: the sign-in form
        d.back()
        wait.until(lambda _: d.execute_script("return document.readyState") == "complete")
        seen["back"] = {"url": d.current_url, "form": bool(d.find_elements(By.ID, "password")),
                        "signed_in_as": signed_in_as(d)}
        # the old cookie put back, as a thief who copied it would: nobody's
        d.execute_cdp_cmd("Network.setCookie", {"name": SESSION, "value": old["value"], "url": f"{url}/",
                                                "path": "/", "secure": True, "httpOnly": True,
                                                "sameSite": "Strict"})
        seen["replayed_cookie_set"] = any(c["name"] == SESSION and c["value"] == old["value"]
                                          for c in d.get_cookies())
        d.get(f"{url}/queue")
        seen["replayed"] = {"url": d.current_url, "form": bool(d.find_elements(By.ID, "password")),
                            "signed_in_as": signed_in_as(d)}
        # what the console said all along (a CSP refusal would be here)
        seen["console"] = [e.get("message", "") for e in d.get_log("browser")]
        print(json.dumps(seen))
        return 0
    except Exception:
        shot("failure")                    # where it stopped, for the test's report (stderr has the traceback)
        print(f"failed on {d.current_url}:\n{d.page_source[-3000:]}\nsaw so far: {seen}", file=sys.stderr)
        raise
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
