"""Signing in to the dashboard beyond loopback (docs/web.md, "Signing in from elsewhere") in a real browser:
headless Chromium from Debian, driven by python3-selenium in the box (web_signin_browser.py), over TLS with
the test's self-signed certificate (webfar.py), trusted by its key alone. As alice, then as bob in a fresh
profile: the sign-in form, a refusal that says the same for a wrong password and an unknown user, the
queue, their own job's live log, someone else's job refused, cancelling with the page's button (the token,
Origin and cookie as the browser sends them), and signing out for good (Back and the old cookie both give
the sign-in form). The browser runs as a uid with no account: its connections are no person's in the
kernel's socket table, so only the session can say who it is. Screenshots: <box dir>/shots/signin-*."""

from __future__ import annotations

from tests.integration import webfar
from tests.integration.browsing import LINES, browse
from tests.integration.webfar import PASSWORDS, REFUSED

far = webfar.far                   # the fixture: the dashboard beyond loopback, with TLS and passwords
SESSION = "__Host-gpusched-session"


def _sign_in_as(far, user, mine, other, untrusted=False) -> dict:
    args = [far.url, far.spki(), user, PASSWORDS[user], str(mine), str(other)] + (["--untrusted"] if untrusted else [])
    return browse(far.gs, f"signin-{user}", "web_signin_browser.py", *args)


def _check(seen: dict, far, user: str, other_user: str, mine: int, other: int) -> None:
    """What a person sees in a real browser from signing in to signing out."""
    assert seen["first_url"] == f"{far.url}/login?next=/queue", seen["first_url"]   # nothing without a session
    assert seen["cookies_before"] == ["__Host-gpusched-login"], seen["cookies_before"]   # the form's own
    wrong, unknown = seen["refusals"]
    assert wrong["error"] == unknown["error"] == REFUSED, seen["refusals"]
    assert not wrong["session"] and not unknown["session"]
    assert wrong["seconds"] >= 1.9 and unknown["seconds"] >= 1.9, seen["refusals"]     # the same wait too
    # back on the page first asked for, through the two refusals
    assert seen["signed_in_url"] == f"{far.url}/queue" and seen["signed_in_as"] == user, seen
    # the browser kept the cookie as the server meant: this host only, HTTPS only, no script, no other site
    cookie = seen["cookie"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert cookie["path"] == "/" and cookie["domain"] == far.address, cookie
    assert seen["document_cookie"] == ""
    assert seen["logout_beside_name"], "the sign-out button is not on the name's line in the header"
    assert str(mine) in seen["queue"] and str(other) in seen["queue"] and f"signed in as {user}" in seen["queue"]
    assert "line 5" in seen["log"] and seen["log_after"] < 15
    assert 'id="log"' not in seen["other_html"] and "do-cancel" not in seen["other_html"]
    assert 'id="no-log"' in seen["other_html"]
    assert f"belongs to {other_user}" in seen["other_log"], seen["other_log"]
    assert f"belongs to {other_user}" in seen["other_cancel"], seen["other_cancel"]
    assert seen["after_cancel_url"] == f"{far.url}/jobs/{mine}"
    # signed out: the form, the cookie gone; Back and the old cookie put back give the form again
    assert seen["signed_out_url"] == f"{far.url}/login" and SESSION not in seen["cookies_after"], seen
    assert seen["back"] == {"url": f"{far.url}/login?next=/queue", "form": True, "signed_in_as": ""}, seen["back"]
    assert seen["replayed_cookie_set"], "the old cookie could not be put back: the replay would prove nothing"
    assert seen["replayed"] == {"url": f"{far.url}/login?next=/queue", "form": True,
                                "signed_in_as": ""}, seen["replayed"]
    # nothing on these pages was refused by the Content-Security-Policy (the live log's script included)
    assert not [m for m in seen["console"] if "Content Security Policy" in m or "Refused to" in m], seen["console"]


def test_alice_then_bob_sign_in_in_a_real_browser_act_and_sign_out(far):
    gs = far.gs
    a = gs.submit("alice", LINES.format(name="alice-train"))
    b = gs.submit("bob", LINES.format(name="bob-train"))
    gs.wait(a, "running")
    gs.wait(b, "running")
    seen = _sign_in_as(far, "alice", a, b, untrusted=True)
    # without the pinned key the browser refuses the certificate: the pin is what lets it in
    assert seen["untrusted"]["cert_error"] and not seen["untrusted"]["form"], seen["untrusted"]
    _check(seen, far, "alice", "bob", a, b)
    assert gs.wait(a, "cancelled")["state"] == "cancelled"
    assert gs.status(b)["state"] == "running"                         # bob's job untouched
    a2 = gs.submit("alice", LINES.format(name="alice-second"))
    gs.wait(a2, "running")
    _check(_sign_in_as(far, "bob", b, a2), far, "bob", "alice", b, a2)
    assert gs.wait(b, "cancelled")["state"] == "cancelled"
    assert gs.status(a2)["state"] == "running"
    # the daemon's journal: each sign-in and refusal, never a password
    log = gs.journal("-u gpusched", "--since=-10min")
    assert "web sign-in of 'alice' from" in log and "web sign-in of 'nosuchuser' from" in log
    assert not any(p in gs.journal("--since=-10min") for p in PASSWORDS.values())
