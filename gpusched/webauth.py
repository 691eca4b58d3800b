"""The daemon's side of the web sign-in: passwords checked by PAM for gpusched-web.service, off the main loop.

The web service runs as an unprivileged user and can't check anyone's password (pam_unix's helper checks
only the caller's own), so the daemon, root, does it for it: the `authenticate` web call (webcalls.py) starts
an attempt and answers at once with a ticket; `auth_result` tells later how it ended. Each attempt runs in a
worker thread that waits on a short-lived root process (pamcheck.py) running the PAM service `gpusched-web`:
a failed password takes pam_unix about 2 s by design, and the daemon's one thread schedules jobs and answers
everyone's calls, so it never waits for PAM.

Against guessing (loginguard.py): failures are counted per user name and per source address, and an
attempt for a name or from an address that has failed too often is refused at once, saying how long to
wait. At most MAX_RUNNING attempts run at once (one per name, two per address): the rest are refused with
"try again", so no flood of attempts costs more than that many processes. Root and system accounts (outside
login.defs' UID_MIN..UID_MAX, people.py) are never checked: PAM is not even asked, so their passwords can't
be guessed through us. Every refusal, whatever its cause (no such user, a system account, a wrong password,
an expired account), takes at least MIN_FAIL seconds and says the same words, so neither the answer nor its
time tells which accounts exist.

Only when the config listens beyond loopback (webcalls.py checks): with loopback alone there is no sign-in,
and a taken-over web service must not be a password oracle.
"""

from __future__ import annotations

import ipaddress
import json
import pwd
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from gpusched import people
from gpusched.errors import Invalid, NotAllowed
from gpusched.launch import CLEAN_PATH
from gpusched.log import log as journal_log
from gpusched.loginguard import Limiter, source_key

MAX_USER = 32                 # characters of a user name (useradd's limit)
MAX_PASSWORD = 1024           # bytes of a password
MAX_RUNNING = 4               # attempts checked at once, in all
PER_NAME, PER_SOURCE = 1, 2   # attempts at once for one user name, from one source
MIN_FAIL = 2.0                # seconds every refusal takes at least (pam_unix's own fail delay)
HELPER_TIMEOUT = 30.0         # seconds a PAM check may take before its process is killed
KEEP_RESULT = 60.0            # seconds an ended attempt's answer waits to be fetched
MAX_TICKETS = 64              # attempts remembered at once (running, or ended and not yet fetched)
REFUSED = "wrong user name or password"
_NAME = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.I)

Check = Callable[[str, bytearray, str], "str | None"]     # (user, password, rhost) -> None or why not


def pam_helper(user: str, password: bytearray, rhost: str) -> str | None:
    """Run pamcheck.py for one attempt: None if PAM accepts, else why not (for the journal)."""
    data = bytearray(user.encode()) + b"\0" + rhost.encode() + b"\0" + password
    try:
        proc = subprocess.Popen([sys.executable, "-m", "gpusched.pamcheck"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/",
                                env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}, close_fds=True)
        try:
            out, _ = proc.communicate(data, timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return f"the PAM check took over {HELPER_TIMEOUT:.0f} s and was killed"
    except OSError as e:
        return f"can't start the PAM check: {e}"
    finally:
        data[:] = b"\0" * len(data)
    try:
        answer = json.loads(out.decode("utf-8", "replace").strip() or "{}")
        return None if answer.get("ok") is True else str(answer.get("why") or f"exit status {proc.returncode}")
    except (ValueError, AttributeError):
        return f"the PAM check answered nonsense (exit status {proc.returncode})"


@dataclass
class Attempt:
    user: str
    source: str               # its loginguard key
    started: float
    done: bool = False
    uid: int | None = None
    ended: float = 0.0
    why: str = ""


class Authenticator:
    def __init__(self, check: Check = pam_helper, clock: Callable[[], float] = time.monotonic,
                 person: Callable[[int], bool] = people.is_person, log: Callable[..., Any] = journal_log,
                 min_fail: float = MIN_FAIL, sleep: Callable[[float], None] = time.sleep):
        self.check, self.clock, self.person, self.log = check, clock, person, log
        self.min_fail, self.sleep = min_fail, sleep
        self.names = Limiter(free=3)
        self.sources = Limiter(free=10)
        self._attempts: dict[str, Attempt] = {}
        self._lock = threading.Lock()          # the attempts and the counts: the main loop and the workers

    # --- on the main loop -----------------------------------------------------------------------------------

    def start(self, user: Any, password: Any, source: Any) -> str:
        """Start checking `password` for `user` (from `source`, an IP address): a ticket for `result`.
        NotAllowed (with how long to wait) while the name or the address has failed too often, or while too
        many attempts run; Invalid for what no form sends."""
        if not isinstance(user, str) or not isinstance(password, str) or not isinstance(source, str):
            raise Invalid("expected a user name, a password and an address")
        if not password:
            raise Invalid("no password given")
        secret = bytearray(password.encode("utf-8", "surrogatepass"))
        if len(secret) > MAX_PASSWORD:
            secret[:] = b"\0" * len(secret)
            raise Invalid(f"the password is too long (at most {MAX_PASSWORD} bytes)")
        try:
            source = str(ipaddress.ip_address(source.split("%")[0]))     # for PAM_RHOST and the journal: no scope
            key = source_key(source)
        except ValueError:
            secret[:] = b"\0" * len(secret)
            raise Invalid("the source is not an IP address") from None
        name = user[:MAX_USER + 1]              # a longer name exists nowhere: counted as itself, refused
        now = self.clock()
        with self._lock:
            self._prune(now)
            wait = max(self.names.wait(name, now), self.sources.wait(key, now))
            if wait > 0:
                secret[:] = b"\0" * len(secret)
                raise NotAllowed(f"too many failed sign-ins for this name or from this address: try again in "
                                 f"{int(wait) + 1} s")
            running = [a for a in self._attempts.values() if not a.done]
            if (len(running) >= MAX_RUNNING or sum(a.user == name for a in running) >= PER_NAME
                    or sum(a.source == key for a in running) >= PER_SOURCE or len(self._attempts) >= MAX_TICKETS):
                secret[:] = b"\0" * len(secret)
                raise NotAllowed("other sign-ins are being checked: try again in a few seconds")
            ticket = secrets.token_urlsafe(16)
            attempt = self._attempts[ticket] = Attempt(name, key, now)
        try:
            threading.Thread(target=self._run, args=(attempt, secret, source), name="web sign-in",
                             daemon=True).start()
        except RuntimeError:                    # no thread to be had: the attempt never ran
            secret[:] = b"\0" * len(secret)
            with self._lock:
                del self._attempts[ticket]
            raise NotAllowed("other sign-ins are being checked: try again in a few seconds") from None
        return ticket

    def result(self, ticket: Any) -> dict[str, Any]:
        """{"done": false} while the attempt runs; then, once: {"done": true, "uid": N, "name": user} or
        {"done": true, "uid": null, "message": why, for the person}."""
        if not isinstance(ticket, str):
            raise Invalid("expected a ticket")
        with self._lock:
            self._prune(self.clock())
            attempt = self._attempts.get(ticket)
            if attempt is None:
                return {"done": True, "uid": None, "message": "this sign-in is not known (it took too long): "
                                                              "try again"}
            if not attempt.done:
                return {"done": False}
            del self._attempts[ticket]
        if attempt.uid is None:
            return {"done": True, "uid": None, "message": REFUSED}
        return {"done": True, "uid": attempt.uid, "name": attempt.user}

    def _prune(self, now: float) -> None:
        for ticket, a in list(self._attempts.items()):
            if a.done and now - a.ended > KEEP_RESULT:
                del self._attempts[ticket]

    # --- in the worker thread ----------------------------------------------------------------------------------

    def _run(self, attempt: Attempt, secret: bytearray, source: str) -> None:
        uid, why = None, ""
        try:
            uid, why = self._verify(attempt.user, secret, source)
        except Exception as e:  # noqa: BLE001 - a bug must end as a refusal, never as a worker left hanging
            uid, why = None, f"internal error: {type(e).__name__}: {e}"
        finally:
            secret[:] = b"\0" * len(secret)
        if uid is None:                         # every refusal takes as long: its time tells nothing
            left = attempt.started + self.min_fail - self.clock()
            if left > 0:
                self.sleep(left)
        now = self.clock()
        with self._lock:
            if uid is None:
                self.names.failed(attempt.user, now)
                self.sources.failed(attempt.source, now)
            else:
                self.names.succeeded(attempt.user)
            attempt.uid, attempt.why, attempt.ended, attempt.done = uid, why, now, True
        self.log(f"web sign-in of {attempt.user[:MAX_USER + 1]!r} from {source}: "
                 + (f"accepted (uid {uid})" if uid is not None else f"refused: {why}"), 5 if uid is None else 6)

    def _verify(self, user: str, secret: bytearray, source: str) -> tuple[int | None, str]:
        """(uid, "") when `user` is a person whose password this is, else (None, why)."""
        if len(user) > MAX_USER or not _NAME.fullmatch(user):
            return None, "not a user name"
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            return None, "no such user"
        if not self.person(uid):
            return None, f"uid {uid} is not a person's account (root and system accounts never sign in here)"
        why = self.check(user, secret, source)
        if why is not None:
            return None, why
        try:
            if pwd.getpwnam(user).pw_uid != uid:          # the account changed while PAM ran
                return None, "the account changed during the check"
        except KeyError:
            return None, "the account went away during the check"
        return uid, ""

