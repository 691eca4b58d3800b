"""Signing in beyond loopback: the sign-in form, the password check through the daemon, sessions, signing out.

Only for a connection to a [web] listen address that is not loopback (served over HTTPS: __main__.py refuses
to start such a listener without TLS): there the kernel can't say who connects, so a person signs in with
their user name and login password. The web service can't check a password (it is an unprivileged user), so
the daemon does, with PAM, bounded against guessing and off its main loop (webauth.py): `authenticate`
answers a ticket at once, `auth_result` is asked every POLL until the check has ended.

The form is a POST like any other (same Host and Origin checks, server.py) and carries a token: an HMAC of a
random cookie set with the form, so another site can't sign someone's browser in as the attacker either
(login CSRF). Every refusal of a password says the same words, whether the user exists or not (REFUSED,
from the daemon); a name or address that failed too often is told how long to wait.

A success gives a session (sessions.py) in a Secure, HttpOnly, SameSite=Strict cookie; signing out (a POST
with the session's token) ends it on the server, not only in the browser.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from aiohttp import web

from gpusched.web import csrf, pages
from gpusched.web.daemon import Daemon, DaemonError
from gpusched.web.sessions import COOKIE, LIFETIME, Full, Session, Sessions, cookie

FORM_COOKIE = "__Host-gpusched-login"     # the sign-in form's CSRF cookie
FORM_AGE = 3600                           # seconds the form's cookie lives
POLL = 0.1                                # seconds between asking the daemon whether the check has ended
CHECK_DEADLINE = 45.0                     # seconds a check may take (the daemon kills PAM after 30)
MAX_USER = 64                             # characters of a user name sent to the daemon (it refuses over 32)
MAX_PASSWORD = 1024                       # bytes of a password (the daemon's own bound)



MAX_NEXT = 1024        # characters of the page to go back to after signing in


def landing(path: str) -> str:
    """Where to go after signing in: `path` (the page first asked for, /login?next=...) when it is a path of this
    site, else "/". Never another site: no scheme, no "//" or "/\\" (a browser reads both as another host), no
    control character, not the sign-in itself."""
    if (not path or len(path) > MAX_NEXT or not path.startswith("/") or path.startswith(("//", "/\\"))
            or "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
            or path.split("?")[0] in ("/login", "/logout")):
        return "/"
    return path

class Login:
    def __init__(self, daemon: Daemon, secret: bytes, own_uid: int, sessions: Sessions | None = None):
        self.daemon, self.secret, self.own_uid = daemon, secret, own_uid
        self.sessions = sessions or Sessions()

    def session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    @staticmethod
    def subject(s: Session) -> str:
        """What a session's form token is made of (csrf.token)."""
        return f"session {s.sid}"

    @staticmethod
    def _form_cookie(request: web.Request) -> str:
        """The form's cookie as the browser sent it back ("" if none or not one of ours)."""
        value = request.cookies.get(FORM_COOKIE, "")
        return value if 0 < len(value) <= 64 else ""

    def _page(self, status: int, token: str, user: str = "", problem: str = "", after: str = "/") -> web.Response:
        return web.Response(status=status, text=pages.login_page(token, user, problem, after),
                            content_type="text/html", charset="utf-8")

    async def form(self, request: web.Request) -> web.Response:
        """GET /login: the form, with its cookie (a new one unless the browser has one)."""
        after = landing(request.query.get("next", ""))
        if self.session(request) is not None:
            raise web.HTTPSeeOther(after)
        value = self._form_cookie(request)
        fresh = not value
        if fresh:
            value = secrets.token_urlsafe(16)
        response = self._page(200, csrf.token(self.secret, f"login {value}"), after=after)
        if fresh:
            response.headers.add("Set-Cookie", cookie(FORM_COOKIE, value, FORM_AGE))
        return response

    async def sign_in(self, request: web.Request) -> web.Response:
        """POST /login: check the password through the daemon; a session on success."""
        form = await request.post()
        after = landing(str(form.get("next", "")))
        value = self._form_cookie(request)
        token = csrf.token(self.secret, f"login {value}") if value else ""
        if not value or not csrf.token_ok(self.secret, f"login {value}", str(form.get("csrf", ""))):
            return self._page(403, token, problem="the form's token is missing or wrong: reload this page (the "
                                                  "browser must keep this site's cookies)")
        user, password = str(form.get("user", ""))[:MAX_USER], str(form.get("password", ""))
        if not user or not password:
            return self._page(400, token, user, "give a user name and a password", after=after)
        if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD:
            return self._page(400, token, user, f"the password is too long (at most {MAX_PASSWORD} bytes)",
                              after=after)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        if not peername:
            return self._page(400, token, user, "the connection has gone", after=after)
        try:
            uid, name, problem = await self._check(user, password, str(peername[0]))
        except DaemonError as e:
            status = 429 if "try again" in str(e) else 503
            return self._page(status, token, user, str(e), after=after)
        if uid is None:
            return self._page(401, token, user, problem, after=after)
        try:
            s = self.sessions.create(uid, name)
        except Full as e:
            return self._page(503, token, user, str(e), after=after)
        response = web.HTTPSeeOther(after)            # back to the page first asked for
        response.headers.add("Set-Cookie", cookie(COOKIE, s.sid, int(LIFETIME)))
        response.headers.add("Set-Cookie", cookie(FORM_COOKIE, "", 0))
        raise response

    async def _check(self, user: str, password: str, source: str) -> tuple[int | None, str, str]:
        """(uid, name, "") when the daemon accepts the password, else (None, "", its words for the person)."""
        ticket = (await self.daemon.as_user(self.own_uid, "authenticate", user, password, source))["ticket"]
        deadline = time.monotonic() + CHECK_DEADLINE
        while True:
            answer: dict[str, Any] = await self.daemon.as_user(self.own_uid, "auth_result", ticket)
            if answer.get("done"):
                break
            if time.monotonic() > deadline:
                return None, "", "the password check took too long: try again"
            await asyncio.sleep(POLL)
        if answer.get("uid") is None:
            return None, "", str(answer.get("message") or "refused")
        return int(answer["uid"]), str(answer.get("name", "")), ""

    async def sign_out(self, request: web.Request, viewer: pages.Viewer) -> web.Response:
        """POST /logout with the session's token: the session ends here and the browser forgets it."""
        s = self.session(request)
        form = await request.post()
        if s is None or not csrf.token_ok(self.secret, self.subject(s), str(form.get("csrf", ""))):
            return web.Response(status=403, text=pages.error_page(403, "the form's token is missing or wrong "
                                                                       "(reload the page)", viewer),
                                content_type="text/html", charset="utf-8")
        self.sessions.drop(s.sid)
        response = web.HTTPSeeOther("/login")
        response.headers.add("Set-Cookie", cookie(COOKIE, "", 0))
        raise response
