"""The dashboard's HTTP server (aiohttp): routes, who is asking, and the checks every request passes.

Who: each request's connection is looked up in the kernel's socket table (peer.py) while the server holds it;
the uid found is the viewer, with nothing the browser sends (no cookie, no header) able to change it. No uid
(not loopback, not found, the web service's own, or not a person's account: root and system accounts, whose
connections are made by services that someone steered, people.py) is the public view: GPUs and the queue as
`gpuschedctl list` shows everyone.

Checks, before anything else:
- Host must be one of this server's loopback names with its port (localhost, 127.0.0.1, [::1]): a page of
  another site that rebinds its DNS name to 127.0.0.1 reaches us with its own name as Host and is refused,
  so it can never read a page with a log or a form token in it.
- A POST must carry an Origin (or, lacking one, a Referer) of one of those names, and the form's CSRF token,
  an HMAC of the viewer's uid under a key made at start (csrf.py): a page elsewhere in the user's browser can
  neither forge it nor read it.
- Responses say no framing, no sniffing, no referrer to other sites, and scripts only from /static (no inline script).

Beyond loopback (a connection to a [web] listen address that is not loopback, over HTTPS): no kernel
identity, so a person signs in with their password (login.py) and their session names their uid; without
one, such a connection gets the sign-in form and nothing else (not even the public view: the queue's names
are for the server's users, not the network's). Host names and origins are then this server's names
(`[web] names`) too, over https.

Bounds: a followed log costs the single-threaded daemon a call every LOG_POLL to LOG_POLL_MAX while the job is
quiet, so a uid may follow at most FOLLOW_PER_UID logs at once and everyone together FOLLOW_TOTAL (429 beyond):
a user opening thousands of streams would otherwise keep the daemon busy for everyone. Connections themselves
are counted per owner and closed when idle by gate.py, before aiohttp reads a byte; a POST's body must arrive
whole within BODY_SECONDS.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hmac
import json
import os
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gpusched import people
from gpusched.listing import printable
from gpusched.web import csrf, pages
from gpusched.web.daemon import Daemon, DaemonError
from gpusched.web.gate import LOOPBACK
from gpusched.web.login import Login
from gpusched.web.peer import is_loopback, owner_uid

STATIC = os.path.join(os.path.dirname(__file__), "static")
LOG_POLL = 0.2               # seconds before the next log read once a followed job's log had nothing new,
LOG_POLL_MAX = 1.6           # doubling while it stays quiet up to this (a job silent for long costs ~1 call in 1.6 s)
MAX_BODY = 2 << 20           # bytes of a POST body (a job file is at most 1 MiB)
VERBS = ("cancel", "cancel-now", "hold", "release", "requeue")
FOLLOW_PER_UID = 8           # logs one uid may follow at once (tabs open on their jobs)
FOLLOW_TOTAL = 64            # logs followed at once by everyone together
BODY_SECONDS = 10.0          # a POST's body must arrive within this
WHO_TTL = 60.0               # seconds a uid's name and admin flag are kept (a user leaving admin_group shows soon)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
VIEWER = "gpusched.viewer"     # the request's key for its Viewer
OPEN_BEYOND_LOOPBACK = ("/login",)   # what a connection from beyond loopback gets before it signs in (and /static)


class Dashboard:
    def __init__(self, daemon: Daemon, port: int, own_uid: int, secret: bytes | None = None,
                 lookup: Any = owner_uid, person: Any = people.is_person, far_names: tuple[str, ...] = (),
                 loopback_schemes: tuple[str, ...] = ("http",), far: Any = None, gate: Any = None):
        self.daemon = daemon
        self.gate = gate            # gate.Gate: connections per owner and idle deadlines (None in unit tests)
        self.port = port
        self.own_uid = own_uid
        self.secret = secret or os.urandom(32)
        self.lookup = lookup
        self.person = person
        self.hosts = csrf.allowed_hosts(port, far_names)
        self.origins = csrf.allowed_origins(port, far_names, loopback_schemes)
        # whether a connection came to an address beyond loopback (its local end; tests pretend)
        self.far = far or (lambda sockname: not is_loopback(str(sockname[0])))
        self.login = Login(daemon, self.secret, own_uid)
        self._who: dict[int, tuple[str, bool, float]] = {}
        self._following: dict[int, int] = {}        # uid -> logs it follows now

    # --- who is asking -----------------------------------------------------------------------------------

    def is_far(self, request: web.Request) -> bool:
        transport = request.transport
        return transport is not None and self.far(transport.get_extra_info("sockname"))

    async def viewer(self, request: web.Request) -> pages.Viewer:
        transport = request.transport
        if transport is None:
            return pages.Viewer(None)
        far = self.is_far(request)
        if far:                                        # beyond loopback: the session, if any, says who
            session = self.login.session(request)
            uid, subject = (session.uid, self.login.subject(session)) if session else (None, "")
        else:
            # the gate asked the kernel when it accepted the connection (a socket's owner can't change while
            # it is held); without a gate (unit tests), ask now
            known = self.gate.owner_of(transport) if self.gate is not None else None
            if isinstance(known, tuple) and len(known) == 2 and known[0] == LOOPBACK:
                uid = known[1]
            else:
                uid = self.lookup(transport.get_extra_info("peername"), transport.get_extra_info("sockname"))
            subject = uid
        if uid is None or uid == self.own_uid or not self.person(uid):
            return pages.Viewer(None, far=far)
        name, admin, when = self._who.get(uid, ("", False, 0.0))
        if not name or time.monotonic() - when > WHO_TTL:
            try:
                me = await self.daemon.as_user(uid, "whoami")
                name, admin = me["name"], bool(me["admin"])
                if len(self._who) > 1000:
                    self._who.clear()
                self._who[uid] = (name, admin, time.monotonic())
            except DaemonError:
                return pages.Viewer(None, far=far)
        return pages.Viewer(uid, name, admin, csrf.token(self.secret, subject), far=far)

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # inside a request the gate's idle deadline does not run (a followed log is meant to last)
        transport = request.transport
        if self.gate is not None and transport is not None:
            self.gate.enter(transport)
        try:
            return await self._checked(request, handler)
        finally:
            if self.gate is not None and transport is not None:
                self.gate.leave(transport)

    async def _checked(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not csrf.host_ok(request.headers.get("Host", ""), self.hosts):
            return _text(421, "this dashboard answers only to its own names on its own port (localhost, "
                              "127.0.0.1, [::1] and [web] names: a Host header of another name is refused, "
                              "DNS rebinding)")
        if self.is_far(request) and not request.secure:
            return _text(403, "beyond loopback this dashboard is served over HTTPS only")
        if request.method == "POST":
            # every form here is urlencoded; its body is read now, whole and in time, so a body sent a byte a
            # minute holds nothing for long (the gate's idle deadline stops inside a request)
            if request.content_type != "application/x-www-form-urlencoded":
                return _text(415, "this dashboard takes forms only (application/x-www-form-urlencoded)")
            try:
                await asyncio.wait_for(request.read(), BODY_SECONDS)
            except asyncio.TimeoutError:
                return _text(408, f"the form did not arrive within {BODY_SECONDS:.0f} seconds")
        viewer = await self.viewer(request)
        request[VIEWER] = viewer
        if request.method == "POST":
            why = csrf.post_refusal(request.headers.get("Origin"), request.headers.get("Referer"), self.origins)
            if why:
                return self.page(403, pages.error_page(403, why, viewer))
        if viewer.far and not viewer.signed_in and request.path not in OPEN_BEYOND_LOOPBACK \
                and not request.path.startswith("/static/"):
            if request.method == "GET":              # and back here once signed in
                raise web.HTTPSeeOther("/login" if request.path == "/" else f"/login?next={quote(request.path_qs)}")
            return self.page(403, pages.error_page(403, "sign in first", viewer))
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except DaemonError as e:
            response = self.page(_status(str(e)), pages.error_page(_status(str(e)), str(e), viewer))
        if not response.prepared:
            response.headers.update(HEADERS)
        return response

    async def _form(self, request: web.Request, viewer: pages.Viewer) -> dict[str, str] | web.Response:
        if not viewer.signed_in:
            return self.page(403, pages.error_page(403, "acting needs to know who you are; this connection's "
                                                        "owner is not known (public view)", viewer))
        form = await request.post()
        if not hmac.compare_digest(viewer.token, str(form.get("csrf", ""))):
            return self.page(403, pages.error_page(403, "the form's token is missing or wrong (reload the page)",
                                                   viewer))
        return {k: str(v) for k, v in form.items()}

    @staticmethod
    def page(status: int, text: str) -> web.Response:
        return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")

    # --- pages --------------------------------------------------------------------------------------------

    async def gpus(self, request: web.Request) -> web.Response:
        viewer = request[VIEWER]
        info, history = await asyncio.gather(self.daemon.gpus(), 
                                             self.daemon.as_user(viewer.uid or self.own_uid, "gpu_history"))
        return self.page(200, pages.gpus_page(info, history, time.time(), viewer))

    async def jobs(self, viewer: pages.Viewer, all: bool) -> list[dict[str, Any]]:
        if viewer.signed_in:
            return await self.daemon.user_page(viewer.uid, all)
        return await self.daemon.public_page(all)

    async def queue(self, request: web.Request) -> web.Response:
        viewer, q = request[VIEWER], request.query
        all = q.get("all") == "1"
        try:
            page = int(q.get("page", "1"))
        except ValueError:
            page = 1
        jobs = await self.jobs(viewer, all)
        return self.page(200, pages.queue_page(jobs, viewer, q.get("user", "")[:64], q.get("state", "")[:32],
                                               q.get("tag", "")[:64], page, q.get("expand") == "1", all))

    def _id(self, request: web.Request) -> int:
        try:
            job_id = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not 0 < job_id < 1 << 63:
            raise web.HTTPNotFound()
        return job_id

    async def job(self, request: web.Request) -> web.Response:
        viewer, job_id = request[VIEWER], self._id(request)
        if viewer.signed_in:
            job = await self.daemon.as_user(viewer.uid, "show", job_id)
        else:
            job = (await self.daemon.call("Show", job_id))["ok"]     # as this service: the public part
        return self.page(200, pages.job_page(job, viewer))

    async def act(self, request: web.Request) -> web.Response:
        viewer, job_id = request[VIEWER], self._id(request)
        verb = request.match_info["verb"]
        if verb not in VERBS:
            raise web.HTTPNotFound()
        form = await self._form(request, viewer)
        if isinstance(form, web.Response):
            return form
        await self.daemon.as_user(viewer.uid, "act", verb, job_id)
        raise web.HTTPSeeOther(f"/jobs/{job_id}")

    async def log(self, request: web.Request) -> web.StreamResponse:
        """The job's log as server-sent events, from the start, following until the job ends ("end" event).
        Each message is a JSON string of text: the bytes decoded as UTF-8, control characters escaped."""
        viewer, job_id = request[VIEWER], self._id(request)
        if not viewer.signed_in:
            return _text(403, "the log is for the job's owner, root and admins")
        mine = self._following.get(viewer.uid, 0)
        if mine >= FOLLOW_PER_UID or sum(self._following.values()) >= FOLLOW_TOTAL:
            return _text(429, f"too many logs followed at once ({FOLLOW_PER_UID} per user, {FOLLOW_TOTAL} in all): "
                              f"close some of this dashboard's tabs")
        self._following[viewer.uid] = mine + 1
        try:
            return await self._follow(request, viewer, job_id)
        finally:
            left = self._following[viewer.uid] - 1
            if left:
                self._following[viewer.uid] = left
            else:
                del self._following[viewer.uid]

    async def _follow(self, request: web.Request, viewer: pages.Viewer, job_id: int) -> web.StreamResponse:
        first = await self.daemon.as_user(viewer.uid, "log", job_id, 0)      # refused here: before any event
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        chunk = first
        pause = LOG_POLL
        while True:
            data = base64.b64decode(chunk["data"])
            if chunk.get("reset"):
                await response.write(_event("text", "\n[gpusched: the log was cut to its cap here]\n"))
            if data:
                text = printable(decoder.decode(data).replace("\r\n", "\n").replace("\r", "\n"), keep="\n\t")
                await response.write(_event("text", text))
            ended = chunk["state"] not in pages.LIVE
            if ended and not data:
                await response.write(_event("end", chunk["state"]))
                break
            if data:
                pause = LOG_POLL
            else:                # quiet: ask less often, up to LOG_POLL_MAX (a new line resets it)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LOG_POLL_MAX)
            if request.transport is None or request.transport.is_closing():
                break            # the reader went away (aiohttp >= 3.9 no longer cancels the handler): stop asking
            try:
                chunk = await self.daemon.as_user(viewer.uid, "log", job_id, chunk["offset"])
            except DaemonError as e:
                await response.write(_event("error", str(e)))
                break
        return response

    async def submit_form(self, request: web.Request) -> web.Response:
        viewer = request[VIEWER]
        text = pages.EXAMPLE
        clone = request.query.get("clone")
        if clone and viewer.signed_in:
            try:
                job = await self.daemon.as_user(viewer.uid, "show", int(clone))
            except ValueError:
                raise web.HTTPNotFound() from None
            text = job_text(job)
        return self.page(200, pages.submit_page(viewer, text))

    async def submit(self, request: web.Request) -> web.Response:
        viewer = request[VIEWER]
        form = await self._form(request, viewer)
        if isinstance(form, web.Response):
            return form
        text = form.get("text", "").replace("\r\n", "\n")
        try:
            entry = await self.daemon.as_user(viewer.uid, "submit", text, form.get("stem", "web")[:40])
        except DaemonError as e:
            return self.page(400, pages.submit_page(viewer, text, problems=str(e)))
        deadline = time.monotonic() + 30
        while (job_id := await self.daemon.as_user(viewer.uid, "lookup", entry["name"], entry["inode"])) == 0:
            if time.monotonic() > deadline:
                return self.page(504, pages.submit_page(viewer, text, problems="gpusched has not taken the file "
                                                                                "after 30 s"))
            await asyncio.sleep(0.05)
        job = await self.daemon.as_user(viewer.uid, "show", job_id)
        if job.get("state") == "rejected":
            return self.page(400, pages.submit_page(viewer, text, problems=str(job.get("reason", "rejected"))))
        raise web.HTTPSeeOther(f"/jobs/{job_id}")

    async def login_form(self, request: web.Request) -> web.Response:
        if not request[VIEWER].far:                   # loopback: the kernel says who; nothing to sign in to
            raise web.HTTPNotFound()
        return await self.login.form(request)

    async def login_post(self, request: web.Request) -> web.Response:
        if not request[VIEWER].far:
            raise web.HTTPNotFound()
        return await self.login.sign_in(request)

    async def logout(self, request: web.Request) -> web.Response:
        if not request[VIEWER].far:
            raise web.HTTPNotFound()
        return await self.login.sign_out(request, request[VIEWER])

    async def usage(self, request: web.Request) -> web.Response:
        viewer = request[VIEWER]
        since = request.query.get("since", "1d")
        seconds = {"1d": 86400, "7d": 7 * 86400}.get(since, 86400)
        rows = []
        if viewer.signed_in:
            rows = await self.daemon.as_user(viewer.uid, "usage", "", time.time() - seconds)
        return self.page(200, pages.usage_page(rows, viewer, since if since in ("1d", "7d") else "1d"))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/", self.gpus), web.get("/queue", self.queue), web.get("/jobs/{id}", self.job),
            web.get("/jobs/{id}/log", self.log), web.post("/jobs/{id}/{verb}", self.act),
            web.get("/submit", self.submit_form), web.post("/submit", self.submit), web.get("/usage", self.usage),
            web.get("/login", self.login_form), web.post("/login", self.login_post), web.post("/logout", self.logout),
            web.static("/static", STATIC),
        ])
        return app


def job_text(job: dict[str, Any]) -> str:
    """A job's file again, for Clone: its spec (what `show` gives its owner) as the job file a person writes
    (jobfile.file_doc); the example if it can't be written (a spec from another version)."""
    import tomli_w

    from gpusched.jobfile import file_doc
    if not job.get("spec"):                  # not this viewer's job: the daemon gives its file to its owner only
        return pages.EXAMPLE
    try:
        return tomli_w.dumps(file_doc(job["spec"]))
    except (TypeError, ValueError):
        return pages.EXAMPLE


def _event(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=HEADERS)


def _status(message: str) -> int:
    if "belongs to" in message or "only " in message:
        return 403
    if message.startswith("no job"):
        return 404
    if "did not answer" in message:
        return 503
    return 400
