"""The daemon's side of the web dashboard: the calls gpusched-web.service makes on behalf of a user whose uid
it established from the kernel (the owner of a loopback connection: gpusched/web/peer.py).

Only the dashboard's own system user (config `[web] user`, default gpusched-web) may make these calls: the bus
policy (units/org.gpusched1.conf) lets no one else send to the org.gpusched1.Web interface, and `WebCalls`
checks the bus caller's uid again, so a policy file edited by mistake opens nothing. Every call then runs the
same Manager verb with the same access.py rule as `gpuschedctl` run by that uid: the dashboard can never do
for a person more than they could do themselves. And only for people (people.py: login.defs' UID_MIN to
UID_MAX): never root nor a system account, whose loopback connections are services that someone steered (a
taken-over web service can't run jobs as postgres or www-data, nor act as root).

Two things the CLI does by itself, the web service (a different, unprivileged user) can't, so the daemon does
them here for that uid, with the same rules:
- reading a job's log (`log`): its owner, root and admins, as `gpuschedctl logs`; bounded chunks from an
  offset, opened without following links;
- submitting a job file (`submit`): checked with that user's limits exactly as `gpuschedctl submit` checks it,
  then written into the spool and handed to that user (fchown before it is closed), so the spool stays the
  one way in and the intake judges the file as that user's, as for any other (never root's: not a person).

And one thing it can't do at all: check a password. Where the config listens beyond loopback, a connection
from elsewhere signs in (docs/web.md), and `authenticate` / `auth_result` have the daemon check the password
with PAM, off its main loop and bounded against guessing (webauth.py). They act for no uid: the `uid`
argument of those two is ignored.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import stat
from typing import Any

from gpusched import jobfile, people
from gpusched.access import group_names
from gpusched.errors import Invalid, NotAllowed
from gpusched.webauth import Authenticator

LOG_CHUNK = 256 << 10        # bytes of log in one answer at most (the answer is base64: a third more)
# characters of JSON arguments: a submitted job file may be as large as one dropped with gpuschedctl, and JSON
# writes a character as up to 6 (\u0001); jobfile.parse then refuses what is over its own MAX_BYTES
MAX_ARGS = 6 * jobfile.MAX_BYTES + 4096
VERBS = ("gpu_history", "show", "page", "act", "element_act", "usage", "history", "log", "submit", "lookup", "whoami",
         "authenticate", "auth_result")
PUBLIC = ("gpu_history",)    # what the dashboard asks for the public view too, as its own (system) user
SIGN_IN = ("authenticate", "auth_result")     # for no uid: the web sign-in (webauth.py)


class WebCalls:
    def __init__(self, manager: Any, web_user: str | None = None, person: Any = people.is_person,
                 auth: Authenticator | None = None):
        self.m = manager
        self._web_user = web_user
        self.person = person
        self.auth = auth or Authenticator()

    @property
    def web_user(self) -> str:
        return self._web_user or self.m.engine.cfg.web_user

    def check_caller(self, bus_uid: int) -> None:
        """Refuse anyone but the web service's own user (looked up now: the account may come after the
        daemon, from sysusers.d at package install)."""
        try:
            web_uid = pwd.getpwnam(self.web_user).pw_uid
        except KeyError:
            raise NotAllowed(f"no user {self.web_user!r} on this machine: the web calls are off") from None
        if bus_uid != web_uid or web_uid == 0:
            raise NotAllowed(f"only the web dashboard's user ({self.web_user}) may act on behalf of others")

    def call(self, bus_uid: int, uid: int, verb: str, args_json: str) -> Any:
        """One verb for `uid`; the arguments as a JSON array. The answer is what the Manager answers."""
        self.check_caller(bus_uid)
        if verb not in VERBS:
            raise Invalid(f"no such web verb {verb[:32]!r}")
        if len(args_json) > MAX_ARGS:
            raise Invalid("the arguments are too long")
        try:
            args = json.loads(args_json or "[]")
        except ValueError:
            raise Invalid("the arguments are not JSON") from None
        if not isinstance(args, list):
            raise Invalid("the arguments are not a JSON array")
        if verb in SIGN_IN:
            return self._sign_in(verb, args)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            raise NotAllowed(f"uid {uid} has no account on this machine") from None
        if verb not in PUBLIC and not self.person(uid):
            raise NotAllowed(f"uid {uid} is not a person's account (login.defs UID_MIN to UID_MAX; root neither): "
                             f"the web dashboard acts for people only")
        try:
            return getattr(self, "_" + verb)(uid, *args)
        except TypeError:
            raise Invalid(f"wrong arguments for {verb}") from None

    def _sign_in(self, verb: str, args: list[Any]) -> Any:
        """authenticate(user, password, source address) -> {"ticket"}; auth_result(ticket) -> webauth's."""
        if not self.m.engine.cfg.web_far():
            raise NotAllowed("the web sign-in is off: [web] listen names loopback addresses only (docs/web.md)")
        if verb == "authenticate":
            if len(args) != 3:
                raise Invalid("wrong arguments for authenticate")
            return {"ticket": self.auth.start(*args)}
        if len(args) != 1:
            raise Invalid("wrong arguments for auth_result")
        return self.auth.result(args[0])

    # --- the verbs: each as the Manager does it for `uid` ---------------------------------------------------

    def _whoami(self, uid: int) -> dict[str, Any]:
        who = self.m.access.caller(uid)
        return {"uid": uid, "name": who.name, "admin": who.admin}

    def _gpu_history(self, uid: int) -> Any:
        """The last hour of each GPU (gpuhistory.py), {index: [[minute, util %, memory used], ...]}: public,
        as the GPU table is."""
        engine = self.m.engine
        return {str(i): p for i, p in engine.gpu_history.table(engine.clock.time()).items()}

    def _show(self, uid: int, job_id: int) -> Any:
        return json.loads(self.m.show(uid, _int(job_id)))["ok"]

    def _page(self, uid: int, all: bool, after: int) -> Any:
        return json.loads(self.m.page(uid, bool(all), _int(after), False))

    def _act(self, uid: int, verb: str, job_id: int) -> str:
        if verb not in ("cancel", "cancel-now", "hold", "release", "requeue", "requeue-hold"):
            raise Invalid(f"no such action {str(verb)[:32]!r}")
        return self.m.act(verb, _int(job_id), uid)

    def _element_act(self, uid: int, verb: str, job_id: int, index: int) -> str:
        if verb not in ("cancel", "cancel-now", "hold", "release", "requeue", "requeue-hold"):
            raise Invalid(f"no such action {str(verb)[:32]!r}")
        return self.m.element_act(verb, _int(job_id), _int(index), uid)

    def _usage(self, uid: int, user: str, since: float) -> Any:
        return self.m.usage(uid, str(user)[:256], float(since))

    def _history(self, uid: int, user: str, since: float, limit: int) -> Any:
        return json.loads(self.m.history(uid, str(user)[:256], "", "", float(since), _int(limit)))["ok"]

    def _lookup(self, uid: int, name: str, inode: int) -> int:
        return self.m.lookup(uid, str(name)[:255], _int(inode))

    def _log(self, uid: int, job_id: int, offset: int) -> dict[str, Any]:
        """Up to LOG_CHUNK bytes of a job's log from `offset`: {"data": base64, "offset": where the next read
        starts, "size": the file's size, "state": the job's}. A log that was compacted under its cap (joblog.py)
        can be shorter than `offset`: the read then starts again at 0, and "reset" says so."""
        job = self.m.engine.get(_int(job_id))
        who = self.m.access.caller(uid)
        if not who.sees_private(job):
            raise NotAllowed(f"job {job.id} belongs to {job.user}; its log is for its owner, root and admins")
        out: dict[str, Any] = {"state": str(job.state), "data": "", "offset": 0, "size": 0}
        if not job.log:
            return out
        try:
            fd = os.open(job.log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return out
        except OSError as e:
            raise Invalid(f"job {job.id}: can't read its log: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Invalid(f"job {job.id}: its log is not a regular file")
            start = _int(offset)
            if start > st.st_size:
                out["reset"] = True
                start = 0
            data = os.pread(fd, LOG_CHUNK, start)
        finally:
            os.close(fd)
        out.update(data=base64.b64encode(data).decode(), offset=start + len(data), size=st.st_size)
        return out

    def _submit(self, uid: int, text: str, stem: str) -> dict[str, Any]:
        """A job file from the dashboard's form, as `gpuschedctl submit` run by `uid` would drop it:
        {"name", "inode"} of the spool entry (`lookup` then gives its job id), or the parser's problems."""
        pw = pwd.getpwuid(uid)
        data = str(text).encode("utf-8", "surrogatepass")
        name = f"web-{''.join(c for c in str(stem) if c.isascii() and (c.isalnum() or c in '-_'))[:40] or 'job'}-" \
               f"{secrets.token_hex(4)}.toml"
        cfg = self.m.engine.cfg
        try:
            jobfile.parse(data, name, owner_is_root=False,
                          limits=cfg.job_limits(pw.pw_name, group_names(pw.pw_name, pw.pw_gid)),
                          privileged=self.m.access.is_admin(uid))
        except jobfile.JobFileError as e:
            raise Invalid(str(e)) from None
        # root writes into the sticky spool: O_EXCL and O_NOFOLLOW (nothing of a user's is followed or
        # replaced), then the file is given to the user before it is closed, so the intake (which runs on this
        # same thread, after this call) only ever sees it as theirs
        fd = os.open(os.path.join(cfg.spool_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            os.fchown(fd, uid, pw.pw_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            ino = os.fstat(fd).st_ino
        except BaseException:
            os.unlink(os.path.join(cfg.spool_dir, name))
            raise
        finally:
            os.close(fd)
        return {"name": name, "inode": ino}


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
        raise Invalid(f"expected a non-negative integer, got {str(v)[:32]!r}")
    return v
