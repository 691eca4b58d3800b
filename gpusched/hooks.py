"""What runs when a job has ended for good: its `on_finish`, the config's `[hooks] on_finish`, its `notify`
mail. Pure: the units' names, users, commands, environments and properties as plain data.

Each hook is a transient service of its own in gpusched.slice (never inside the job's scope, which may be
being stopped or past its RuntimeMax), started by the runner after the job's end is recorded, with the
outcome in GPUSCHED_* variables (task-spooler's TS_ONFINISH, pueue's callbacks), a run time cap
(`hook_timeout`) and its output in the journal. Only at a final end: a retry or a preemption that requeues the
job is not one. Nothing waits for a hook, and a failed hook is not retried (systemd logs how it ended).

Each user's hooks run together in a slice of their own under gpusched.slice (user_slice), bounded as a whole:
a hook is bounded by itself, but a user who ends a thousand jobs with a slow `on_finish` would otherwise
start a thousand hooks, each allowed MEMORY_MAX. Nothing is dropped or delayed: past the slice's bounds the
kernel makes that user's hooks share (memory, tasks, one CPU), and everyone else's are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpusched.cgroups import SLICE
from gpusched.launch import CLEAN_PATH, USEC
from gpusched.model import Job, State

MAX_REASON = 1024          # bytes of GPUSCHED_REASON
SENDMAIL = "/usr/sbin/sendmail"
STOP_TIMEOUT = 5.0         # seconds between a timed-out hook's SIGTERM and SIGKILL
MEMORY_MAX = 1 << 30       # bytes a hook may use (a report or a mail, not a second job)
TASKS_MAX = 256            # processes and threads a hook may have at once
PAM_SERVICE = "gpusched"   # the jobs' PAM stack (units/gpusched.pam): the account check and the loginuid
USER_MEMORY_MAX = 2 << 30  # bytes one user's hooks may use together
USER_TASKS_MAX = 512       # their processes and threads together
USER_CPU = 1.0             # CPUs' worth of time their hooks get together


@dataclass(frozen=True)
class Hook:
    unit: str
    user: str
    argv: tuple[str, ...]
    env: dict[str, str]
    what: str                                   # "on_finish", "config on_finish", "notify mail"


def wanted(job: Job, config_hook: str) -> bool:
    """Whether a job that has just reached a final state has hooks to run (a rejected file has none)."""
    if job.state == State.REJECTED or job.spec is None:
        return False
    return bool(job.spec.on_finish or job.spec.notify or config_hook)


def clean(text: str, limit: int = MAX_REASON) -> str:
    """A user's or a result's text made safe for an environment variable: no control characters, bounded."""
    out = "".join(ch if ch.isprintable() else " " for ch in text)
    data = out.encode("utf-8", "replace")
    return out if len(data) <= limit else data[:limit - 3].decode("utf-8", "ignore") + "..."


def outcome_env(job: Job) -> dict[str, str]:
    return {
        "PATH": CLEAN_PATH, "LANG": "C.UTF-8",
        "GPUSCHED_JOB_ID": str(job.id),
        "GPUSCHED_JOB_NAME": clean(job.name, 256),
        "GPUSCHED_USER": job.user,
        "GPUSCHED_STATE": str(job.state),
        "GPUSCHED_EXIT_CODE": "" if job.exit_code is None else str(job.exit_code),
        "GPUSCHED_SIGNAL": job.signal or "",
        "GPUSCHED_REASON": clean(job.reason),
        "GPUSCHED_ATTEMPT": str(job.attempt),
        "GPUSCHED_LOG": job.log,
    }


def plan(job: Job, *, config_hook: str = "", config_user: str = "", python: str = "/usr/bin/python3"
         ) -> list[Hook]:
    """The hooks of a job at its final end, in the order they are started."""
    spec = job.spec
    if spec is None:
        return []
    env = outcome_env(job)
    base = f"{job.id}-{job.attempt}"
    out = []
    if spec.on_finish:
        out.append(Hook(f"gpusched-hook-{base}.service", job.user, ("/bin/bash", "-c", spec.on_finish), env,
                        "on_finish"))
    if config_hook and config_user:
        out.append(Hook(f"gpusched-hook-{base}-admin.service", config_user, ("/bin/bash", "-c", config_hook),
                        env, "config on_finish"))
    if spec.notify == "mail":
        out.append(Hook(f"gpusched-notify-{base}.service", job.user, (python, "-m", "gpusched.notify"),
                        env | {"GPUSCHED_MAIL_TO": job.user, "GPUSCHED_SENDMAIL": SENDMAIL}, "notify mail"))
    return out


def user_slice(uid: int) -> str:
    """The slice of one user's hooks, directly under gpusched.slice: by uid (a name's dashes would nest one
    user's slice in another's; '_' does not)."""
    return f"gpusched-hooks_{int(uid)}.slice"


def slice_properties(user: str, uid: int) -> list[tuple[str, str, Any]]:
    """The transient slice's properties: the bounds of all of one user's hooks together."""
    return [
        ("Description", "s", f"gpusched hooks of {user} (uid {int(uid)})"),
        ("MemoryAccounting", "b", True),
        ("MemoryMax", "t", USER_MEMORY_MAX),
        ("TasksAccounting", "b", True),
        ("TasksMax", "t", USER_TASKS_MAX),
        ("CPUQuotaPerSecUSec", "t", int(USER_CPU * USEC)),
    ]


def properties(hook: Hook, job_id: int, workdir: str, timeout: float,
               slice_: str = SLICE) -> list[tuple[str, str, Any]]:
    """The transient service's properties (systemd.Systemd.start_service adds nothing). systemd expands
    `${VAR}` and `$VAR` in ExecStart's arguments from the unit's Environment= before bash sees them: every `$`
    is doubled, so a command gets its values only from the environment at run time, never pasted into its
    text (a job name `x"; id; "` in a config hook's `${GPUSCHED_JOB_NAME}` would run `id` as the hook's user).
    Confined as a job is, but with no GPU: no device but the standard pseudo ones, no new privileges, bounded
    memory and tasks, and the jobs' PAM stack (an expired account's hook does not run; its loginuid is its
    user's)."""
    p: list[tuple[str, str, Any]] = [
        ("Description", "s", f"gpusched {hook.what} hook of job {job_id}"),
        ("Slice", "s", slice_),                  # its user's (user_slice), in gpusched.slice
        ("Type", "s", "simple"),              # not "exec": with PAMName its (sd-pam) keeps the exec fd open
        ("ExecStart", "a(sasb)", [(hook.argv[0], [a.replace("$", "$$") for a in hook.argv], False)]),
        ("User", "s", hook.user),
        ("PAMName", "s", PAM_SERVICE),
        ("DevicePolicy", "s", "closed"),
        ("NoNewPrivileges", "b", True),
        ("MemoryAccounting", "b", True),
        ("MemoryMax", "t", MEMORY_MAX),
        ("TasksAccounting", "b", True),
        ("TasksMax", "t", TASKS_MAX),
        ("WorkingDirectory", "s", workdir),
        ("Environment", "as", [f"{k}={v}" for k, v in hook.env.items()]),
        ("StandardInput", "s", "null"),
        ("StandardOutput", "s", "journal"),
        ("StandardError", "s", "journal"),
        ("SyslogIdentifier", "s", f"hook-{job_id}"),
        ("LogExtraFields", "aay", [f"GPUSCHED_JOB_ID={job_id}".encode()]),
        ("CollectMode", "s", "inactive-or-failed"),      # unloaded when done, failed or not
        ("TimeoutStopUSec", "t", int(STOP_TIMEOUT * USEC)),
    ]
    if timeout > 0:
        p.append(("RuntimeMaxUSec", "t", int(timeout * USEC)))
    return p
