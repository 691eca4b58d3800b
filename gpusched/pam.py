"""PAM through a small ctypes wrapper of libpam: a login session of its own for each job, as cron gives its
jobs, and the web dashboard's password check (`authenticate`).

The monitor (root, before it forks the job) runs the PAM service `gpusched` (/etc/pam.d/gpusched, shipped in
units/gpusched.pam) for the job's user: the account stack (an expired or otherwise refused account's job
does not start, and the reason names the account), pam_setcred, then the session stack: pam_loginuid sets
the audit loginuid to the user, pam_keyinit gives the monitor, and so the job, a fresh session keyring in
place of the service's one, which every job shared before; pam_limits applies /etc/security/limits.conf.
The session is closed (and its keyring revoked) after the job is reaped.

Whatever the PAM file says, the two things jobs must never share are checked afterwards and put right here:
a session keyring still equal to the service's is replaced (KEYCTL_JOIN_SESSION_KEYRING, owned by the
user), and a loginuid that is not the user's is written. Without libpam or without the service file the
same fallback is all that runs. Each job's journal has one line saying which path ran.

The web sign-in (docs/web.md): `authenticate` runs the PAM service `gpusched-web` (units/gpusched-web.pam)'s
auth and account stacks for a user name and a password, in a short-lived root process of its own
(gpusched/pamcheck.py, started by the daemon's webauth.py). Its conversation answers the one hidden prompt
(the password) once and nothing else; the password is never logged, and the buffers that held it are
overwritten once PAM is done (what Python itself copied can't be: that process ends right after).

Why ctypes: Debian's python3-pampy (PyPI python-pam) only authenticates; python3-pam (PyPAM 0.4.2, not on
PyPI) is an unmaintained C extension. libpam.so.0's API is small and stable, and this wrapper needs nothing
to be installed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import sysconfig
from collections.abc import Callable, Mapping

SERVICE = "gpusched"
WEB_SERVICE = "gpusched-web"                 # the web dashboard's sign-in (units/gpusched-web.pam)
PAM_DIRS = ("/etc/pam.d", "/usr/lib/pam.d")
LOGINUID = "/proc/self/loginuid"
NO_LOGINUID = 4294967295                     # (uid_t)-1: the loginuid was never set

# <security/_pam_types.h>
PAM_SUCCESS = 0
PAM_BUF_ERR = 5
PAM_CONV_ERR = 19
PAM_SILENT = 0x8000
PAM_DISALLOW_NULL_AUTHTOK = 0x1
PAM_USER, PAM_RHOST = 2, 4                   # pam_set_item / pam_get_item
PAM_ESTABLISH_CRED = 0x2
PAM_DELETE_CRED = 0x4
PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_ERROR_MSG, PAM_TEXT_INFO = 1, 2, 3, 4

# <linux/keyctl.h>
KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_REVOKE = 3
KEY_SPEC_SESSION_KEYRING = -3
# keyctl(2) has no libc wrapper without libkeyutils; the syscall's number by machine
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "loongarch64": 219, "ppc64le": 311,
               "s390x": 280, "i686": 288, "i386": 288, "armv7l": 311}

# The PAM environment may add variables (pam_env: LANG, proxies), never replace these: what gpusched sets
# about the job's identity and GPUs is not the PAM stack's to change.
PROTECTED = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HOME", "USER", "LOGNAME", "SHELL"})
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV = 256                                # variables taken from PAM; each at most 32 KiB
MAX_MESSAGE = 1000                           # characters kept of one PAM message

Log = Callable[[str, int], None]             # (message, syslog priority)


class SessionError(Exception):
    """The job must not start: the message says why, naming the account (it becomes the job's reason)."""


def merge_env(job_env: Mapping[str, str], pam_env: Mapping[str, str]) -> dict[str, str]:
    """The job's environment plus what the PAM session adds: the job's own values always win, and PAM never
    sets a protected name or a GPUSCHED_* one, even one the job's environment lacks."""
    env = {}
    for name, value in list(pam_env.items())[:MAX_ENV]:
        if (_ENV_NAME.fullmatch(name) and name not in PROTECTED and not name.startswith("GPUSCHED_")
                and "\0" not in value and len(value) <= 32768):
            env[name] = value
    env.update(job_env)
    return env


def service_file(service: str) -> str | None:
    """The PAM configuration of `service`, None if it has none (libpam would use `other` instead: not ours)."""
    if not _SERVICE_NAME.fullmatch(service):
        return None
    for d in PAM_DIRS:
        path = os.path.join(d, service)
        if os.path.isfile(path):
            return path
    return None


# --- libpam --------------------------------------------------------------------------------------------------

class _Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_char_p), ("resp_retcode", ctypes.c_int)]


class _Reply(ctypes.Structure):
    """struct pam_response as it is written: resp a malloc'ed address (PAM frees it), not a Python bytes."""
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONV_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(_Message)),
                              ctypes.POINTER(ctypes.POINTER(_Response)), ctypes.c_void_p)


class _Conv(ctypes.Structure):
    _fields_ = [("conv", _CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


_libs: tuple[ctypes.CDLL, ctypes.CDLL] | None = None


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libpam and libc, with their prototypes; OSError if libpam is not installed."""
    global _libs
    if _libs is None:
        pam = ctypes.CDLL("libpam.so.0", use_errno=True)
        libc = ctypes.CDLL(None, use_errno=True)
        h, s, i, vp = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p
        pam.pam_start.argtypes = [s, s, ctypes.POINTER(_Conv), ctypes.POINTER(h)]
        pam.pam_end.argtypes = [h, i]
        for name in ("pam_authenticate", "pam_acct_mgmt", "pam_setcred", "pam_open_session", "pam_close_session"):
            getattr(pam, name).argtypes = [h, i]
            getattr(pam, name).restype = i
        pam.pam_strerror.argtypes = [h, i]
        pam.pam_strerror.restype = s
        pam.pam_set_item.argtypes = [h, i, vp]
        pam.pam_set_item.restype = i
        pam.pam_get_item.argtypes = [h, i, ctypes.POINTER(vp)]
        pam.pam_get_item.restype = i
        pam.pam_getenvlist.argtypes = [h]
        pam.pam_getenvlist.restype = ctypes.POINTER(vp)   # char **, each string and the array ours to free
        libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        libc.calloc.restype = vp
        libc.free.argtypes = [vp]
        libc.free.restype = None
        libc.memset.argtypes = [vp, i, ctypes.c_size_t]
        libc.memset.restype = vp
        _libs = (pam, libc)
    return _libs


_ARCH = sysconfig.get_config_var("MULTIARCH")    # x86_64-linux-gnu on Debian; None elsewhere
MODULE_DIRS = tuple(f"{lib}/{arch}security" for lib in ("/usr/lib", "/lib")
                    for arch in ((f"{_ARCH}/", "") if _ARCH else ("",))) + ("/usr/lib64/security", "/lib64/security")
_MODULE = re.compile(rb"(?<![\w/.-])(/[\w/.+-]+\.so|pam_[\w.+-]+\.so)\b")
_INCLUDE = re.compile(rb"^\s*(?:@include\s+|-?\w+\s+(?:include|substack)\s+)([\w.+-]+)", re.M)
_preloaded: list[ctypes.CDLL] = []


def modules(service: str, depth: int = 0) -> list[str]:
    """The module files `service`'s PAM stack names, its includes followed (bounded), in order, found."""
    path = service_file(service)
    if path is None or depth > 8:
        return []
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    except OSError:
        return []
    text = re.sub(rb"#[^\n]*", b"", text)
    found: list[str] = []
    for m in _MODULE.finditer(text):
        name = os.fsdecode(m.group(1))
        where = [name] if name.startswith("/") else [os.path.join(d, name) for d in MODULE_DIRS]
        found += [p for p in where if os.path.isfile(p)][:1]
    for inc in _INCLUDE.finditer(text):
        found += modules(os.fsdecode(inc.group(1)), depth + 1)
    return list(dict.fromkeys(found))


def preload(service: str = SERVICE) -> None:
    """Load libpam and the modules of `service`'s stack now (the zygote, once): libpam then finds each module
    already loaded when a forked monitor opens its session, instead of loading a dozen files every time
    (about 2 ms of CPU per job). Quiet where something is missing: the session says so when it runs."""
    try:
        _load()
    except OSError:
        return
    for path in modules(service):
        try:
            _preloaded.append(ctypes.CDLL(path, mode=os.RTLD_NOW))
        except OSError:
            pass


class Pam:
    """One PAM transaction (pam_start .. pam_end) for one user. Its conversation answers no prompt for a job
    (nobody is there to answer, so a module that asks fails: PAM_CONV_ERR); for a sign-in (`secret`, the
    password) it answers the first hidden prompt with it, once, and nothing else. What modules say is
    logged; the password never is."""

    def __init__(self, service: str, user: str, log: Log, secret: bytearray | None = None):
        self.lib, self.libc = _load()
        self.user, self.log = user, log
        self._secret, self._answered = secret, False
        self.handle = ctypes.c_void_p()
        # kept on self: libpam calls back into it until pam_end, and ctypes frees what Python doesn't hold
        self._conv_func = _CONV_FUNC(self._converse)
        self._conv = _Conv(self._conv_func, None)
        rc = self.lib.pam_start(service.encode(), user.encode(), ctypes.byref(self._conv),
                                ctypes.byref(self.handle))
        if rc != PAM_SUCCESS:
            raise SessionError(f"PAM service {service} could not start for {user}: {self._strerror(rc)}")
        self.last = PAM_SUCCESS
        self.said: list[str] = []                     # what modules said during the last call

    def _converse(self, n, messages, responses, _appdata) -> int:
        replies = None
        try:
            replies = self.libc.calloc(max(n, 1), ctypes.sizeof(_Reply))
            if not replies:
                return PAM_BUF_ERR
            answer = PAM_SUCCESS
            for k in range(n):
                m = messages[k].contents
                text = (m.msg or b"").decode("utf-8", "replace")[:MAX_MESSAGE]
                if m.msg_style in (PAM_ERROR_MSG, PAM_TEXT_INFO):
                    self.log(f"PAM for {self.user}: {text}", 4 if m.msg_style == PAM_ERROR_MSG else 6)
                    if len(self.said) < 4:
                        self.said.append(text)
                elif m.msg_style == PAM_PROMPT_ECHO_OFF and self._secret is not None and not self._answered:
                    self._answered = True                 # one password, answered once (no "new password")
                    buf = self._copy_secret()
                    if not buf:
                        answer = PAM_BUF_ERR
                        break
                    ctypes.cast(replies, ctypes.POINTER(_Reply))[k].resp = buf
                else:
                    asked = "a job answers no prompts" if self._secret is None else "a sign-in answers only " \
                                                                                   "its one password prompt"
                    self.log(f"PAM for {self.user} asked {text!r}; {asked}", 4)
                    answer = PAM_CONV_ERR
            if answer != PAM_SUCCESS:
                self._free_replies(replies, n)
                return answer
            responses[0] = ctypes.cast(replies, ctypes.POINTER(_Response))   # PAM frees them
            return PAM_SUCCESS
        except BaseException:  # noqa: BLE001 - an exception must not unwind through libpam's C frames
            if replies:
                self._free_replies(replies, n)
            return PAM_CONV_ERR

    def _copy_secret(self) -> int:
        """The password in a malloc'ed, NUL-terminated C string (PAM takes it and frees it), 0 if none."""
        assert self._secret is not None
        size = len(self._secret)
        buf = self.libc.calloc(size + 1, 1)
        if buf and size:
            ctypes.memmove(buf, (ctypes.c_char * size).from_buffer(self._secret), size)
        return buf or 0

    def _free_replies(self, replies: int, n: int) -> None:
        """Free an answer PAM won't take, the password in it overwritten first."""
        array = ctypes.cast(replies, ctypes.POINTER(_Reply))
        for k in range(n):
            if array[k].resp:
                self.libc.memset(array[k].resp, 0, len(self._secret or b"") + 1)
                self.libc.free(array[k].resp)
        self.libc.free(replies)

    def set_item(self, item: int, value: str) -> None:
        rc = self.lib.pam_set_item(self.handle, item, ctypes.c_char_p(value.encode()))
        if rc != PAM_SUCCESS:
            raise SessionError(f"PAM for {self.user}: pam_set_item: {self._strerror(rc)}")

    def get_item(self, item: int) -> str | None:
        value = ctypes.c_void_p()
        rc = self.lib.pam_get_item(self.handle, item, ctypes.byref(value))
        if rc != PAM_SUCCESS or not value.value:
            return None
        return ctypes.string_at(value.value).decode("utf-8", "replace")

    def _strerror(self, rc: int) -> str:
        text = self.lib.pam_strerror(self.handle, rc)
        return text.decode("utf-8", "replace") if text else f"PAM error {rc}"

    def call(self, step: str, flags: int = 0) -> None:
        """pam_<step>(handle, flags); SessionError with PAM's words when it fails. Only the account check
        may talk (pam_unix says why it refuses an account only then): the rest is PAM_SILENT."""
        self.said = []
        if step != "acct_mgmt":
            flags |= PAM_SILENT
        rc = getattr(self.lib, "pam_" + step)(self.handle, flags)
        self.last = rc
        if rc != PAM_SUCCESS:
            why = " ".join(self.said)
            text = f"{why} (PAM: {self._strerror(rc)})" if why else f"PAM: {self._strerror(rc)}"
            if step == "acct_mgmt":                   # the account stack said no: expired, locked out, ...
                raise SessionError(f"account of {self.user}: {text}")
            raise SessionError(f"session of {self.user}: pam_{step}: {text}")

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        array = self.lib.pam_getenvlist(self.handle)
        if not array:
            return env
        k = 0
        while array[k]:
            item = ctypes.string_at(array[k]).decode("utf-8", "replace")
            name, eq, value = item.partition("=")
            if eq:
                env[name] = value
            self.libc.free(array[k])
            k += 1
        self.libc.free(ctypes.cast(array, ctypes.c_void_p))
        return env

    def end(self) -> None:
        if self.handle:
            self.lib.pam_end(self.handle, self.last)
            self.handle = ctypes.c_void_p()


# --- keyrings and the loginuid, without PAM -----------------------------------------------------------------

def _keyctl(op: int, arg: int = 0, arg2: int = 0) -> int:
    """keyctl(2); OSError with its errno (ENOSYS on an unknown machine, EPERM where seccomp forbids it)."""
    nr = _SYS_KEYCTL.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"keyctl's syscall number on {os.uname().machine} is not known")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(nr), ctypes.c_long(op), ctypes.c_long(arg), ctypes.c_long(arg2))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def session_keyring() -> int:
    """The serial of this process's session keyring (created if it has none). OSError if keyctl can't run."""
    return _keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)


def new_session_keyring(uid: int, gid: int) -> int:
    """Join a new anonymous session keyring owned by uid/gid (the kernel gives it the real ids, so switch
    those for the call, as pam_keyinit does; the effective ids stay root's). Returns its serial."""
    ruid, _, _ = os.getresuid()
    rgid, _, _ = os.getresgid()
    os.setresgid(gid, -1, -1)
    os.setresuid(uid, -1, -1)
    try:
        return _keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0)
    finally:
        os.setresuid(ruid, -1, -1)
        os.setresgid(rgid, -1, -1)


def revoke_session_keyring() -> None:
    _keyctl(KEYCTL_REVOKE, KEY_SPEC_SESSION_KEYRING)


def loginuid() -> int | None:
    try:
        with open(LOGINUID) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def set_loginuid(uid: int) -> None:
    fd = os.open(LOGINUID, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, str(uid).encode())
    finally:
        os.close(fd)


# --- the job's session ----------------------------------------------------------------------------------------

def _own_limits() -> tuple[dict[int, tuple[int, int]], int]:
    limits = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            res = getattr(resource, name)
            try:
                limits[res] = resource.getrlimit(res)
            except (ValueError, OSError):
                pass
    return limits, os.getpriority(os.PRIO_PROCESS, 0)


def _lower(a: int, b: int) -> int:
    """The lower of two rlimit values, RLIM_INFINITY being the highest."""
    if a == resource.RLIM_INFINITY:
        return b
    if b == resource.RLIM_INFINITY:
        return a
    return min(a, b)


class Session:
    """An open session: `env` is what PAM adds to the job's environment (merge it with merge_env);
    `describe` says which path ran, for the journal; restore_monitor() in the monitor once the job is forked;
    close() ends the session after the job has been reaped."""

    def __init__(self, pam: Pam | None, env: dict[str, str], keyring: int | None, revoke: bool,
                 describe: str, log: Log, monitor_limits: tuple[dict[int, tuple[int, int]], int]):
        self.pam, self.env, self.keyring, self.revoke = pam, env, keyring, revoke
        self.describe, self.log, self.monitor_limits = describe, log, monitor_limits

    def restore_monitor(self) -> None:
        """pam_limits set the user's limits on this process so that the job inherits them; they are not the
        root monitor's own (a user's `cpu` or `fsize` limit would kill or silence the monitor, not the job)."""
        limits, nice = self.monitor_limits
        kept = []
        for res, old in limits.items():
            now = resource.getrlimit(res)
            if now == old:
                continue
            try:
                resource.setrlimit(res, old)
            except (ValueError, OSError):             # raising a hard limit needs CAP_SYS_RESOURCE
                kept.append(str(res))
                try:
                    resource.setrlimit(res, (_lower(old[0], now[1]), now[1]))
                except (ValueError, OSError):
                    pass
        if kept:
            self.log(f"the monitor keeps the user's hard limits {', '.join(kept)} (no CAP_SYS_RESOURCE)", 7)
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) != nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            self.log(f"could not restore the monitor's priority: {e.strerror}", 4)

    def close(self) -> None:
        """Never raises: the job has ended and its result is what matters; failures are logged."""
        if self.revoke:
            try:
                revoke_session_keyring()
            except OSError as e:
                self.log(f"could not revoke the job's session keyring: {e.strerror}", 4)
        pam, self.pam = self.pam, None
        if pam is None:
            return
        for step, flags in (("close_session", 0), ("setcred", PAM_DELETE_CRED)):
            try:
                pam.call(step, flags)
            except SessionError as e:
                self.log(f"closing the session: {e}", 4)
        pam.end()


def open_session(service: str, user: str, uid: int, gid: int, log: Log) -> Session:
    """Open the job's session in this (root) process, before it forks the job, which inherits the session
    keyring, loginuid and limits. SessionError: the job must not start (PAM refused the account or failed)."""
    try:
        before, keyctl_error = session_keyring(), None
    except OSError as e:
        before, keyctl_error = None, e
    limits = _own_limits()
    notes: list[str] = []
    pam = _pam_session(service, user, log, notes)
    # What jobs must never share, whatever the PAM stack did: the session keyring and the loginuid.
    try:
        env = pam.env() if pam is not None else {}
        keyring, revoke = _fresh_keyring(before, keyctl_error, uid, gid, notes)
        _own_loginuid(uid, notes, log)
    except OSError as e:                              # the job must not start without its own session
        _abandon(pam, ["setcred", "open_session"])
        raise SessionError(f"session of {user}: {e.strerror or e}") from None
    return Session(pam, env, keyring, revoke, "; ".join(notes), log, limits)


def _pam_session(service: str, user: str, log: Log, notes: list[str]) -> Pam | None:
    """The PAM part: account, credentials, session. None where there is no service file or no libpam."""
    path = service_file(service)
    if path is None:
        notes.append(f"no PAM service {service!r} in {' or '.join(PAM_DIRS)}: gpusched's own session")
        return None
    try:
        pam = Pam(service, user, log)
    except OSError as e:                              # libpam.so.0 is not installed
        notes.append(f"libpam not loadable ({e}): gpusched's own session")
        return None
    done: list[str] = []
    try:
        for step, flags in (("acct_mgmt", 0), ("setcred", PAM_ESTABLISH_CRED), ("open_session", 0)):
            pam.call(step, flags)
            done.append(step)
    except SessionError:
        _abandon(pam, done)
        raise
    notes.append(f"PAM session opened ({path})")
    return pam


def _fresh_keyring(before: int | None, keyctl_error: OSError | None, uid: int, gid: int,
                   notes: list[str]) -> tuple[int | None, bool]:
    """The session keyring is a new one (pam_keyinit's, or one made here); (serial, made here)."""
    if keyctl_error is not None:
        notes.append(f"no session keyring (keyctl: {keyctl_error.strerror}; the job can't use keyrings either)")
        return None, False
    keyring = session_keyring()
    if keyring != before:
        notes.append(f"session keyring {keyring} (new, from PAM)")
        return keyring, False
    keyring = new_session_keyring(uid, gid)           # no pam_keyinit, or it failed: still the service's
    notes.append(f"session keyring {keyring} (new, joined by gpusched)")
    return keyring, True


def _own_loginuid(uid: int, notes: list[str], log: Log) -> None:
    current = loginuid()
    if current is None:
        notes.append("no audit loginuid on this kernel")
    elif current == uid:
        notes.append(f"loginuid {uid}")
    else:
        try:
            set_loginuid(uid)
            notes.append(f"loginuid {uid} (set by gpusched)")
        except OSError as e:                          # e.g. in a container without CAP_AUDIT_CONTROL
            notes.append(f"loginuid stays {current}")
            log(f"could not set the loginuid to {uid}: {e.strerror}", 4)


def _abandon(pam: Pam | None, done: list[str]) -> None:
    """Undo what was done of the opening, quietly: the job won't start, and that error is the one to report."""
    if pam is None:
        return
    undo = {"open_session": ("close_session", 0), "setcred": ("setcred", PAM_DELETE_CRED)}
    for step in ("open_session", "setcred"):
        if step in done:
            try:
                pam.call(*undo[step])
            except SessionError:
                pass
    pam.end()


# --- the web sign-in ------------------------------------------------------------------------------------------

def authenticate(service: str, user: str, password: bytearray, rhost: str, log: Log) -> str | None:
    """Whether `service`'s auth and account stacks accept `user` with `password` (from `rhost`): None if they
    do, else why not, for the daemon's journal only (never shown to the person: it would tell whether the
    account exists). A null password is never accepted, whatever the stack says (Debian's common-auth has
    `nullok`), and neither is a user name a module changed: the caller acts for the name it asked about.
    The caller overwrites `password` afterwards; the copy PAM was given is PAM's to overwrite (pam_unix does)."""
    if not password:
        return "no password"
    if service_file(service) is None:
        return f"no PAM service {service!r} in {' or '.join(PAM_DIRS)}"
    try:
        pam = Pam(service, user, log, secret=password)
    except OSError as e:                              # libpam.so.0 is not installed
        return f"libpam not loadable ({e})"
    except SessionError as e:
        return str(e)
    try:
        pam.set_item(PAM_RHOST, rhost)
        pam.call("authenticate", PAM_DISALLOW_NULL_AUTHTOK)
        pam.call("acct_mgmt", PAM_DISALLOW_NULL_AUTHTOK)
        now = pam.get_item(PAM_USER)
        if now != user:
            return f"the PAM stack changed the user name to {str(now)[:64]!r}"
        return None
    except SessionError as e:
        return str(e).replace("session of ", "sign-in of ", 1)
    finally:
        pam.end()
