"""Who may act on a job and who sees what of it: the one rule, used by the bus API, the listing, the intake
and gpuschedctl's local checks.

- Root and members of the config's `admin_group` are admins: they act on every job and see all of it.
- A user acts on their own jobs and sees all of them, but for nothing more.
- Everyone sees the queue (ids, users, names, states, GPUs), as squeue shows it; a job's log path, source
  file, history and stop details (listing.PRIVATE_FIELDS) only go to those who may act on it, and its
  environment (it may hold secrets) only to its owner and root.

The caller's uid always comes from the kernel or the bus, never from what the caller says.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any

from gpusched.errors import NotAllowed
from gpusched.listing import PRIVATE_FIELDS
from gpusched.model import Job, job_to_dict


def in_group(uid: int, group: str) -> bool:
    """Is the account of `uid` a member of `group` (primary or supplementary, as the group database says)?"""
    if not group:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    return gid in os.getgrouplist(pw.pw_name, pw.pw_gid)


def group_names(user: str, gid: int) -> list[str]:
    """The names of a user's groups (primary and supplementary), for `[classes.X] groups` and share groups."""
    out = []
    for g in os.getgrouplist(user, gid):
        try:
            out.append(grp.getgrgid(g).gr_name)
        except KeyError:
            pass
    return out


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True)
class Caller:
    """Someone asking: their uid and whether they are an admin, looked up once per request (a listing
    page asks about thousands of jobs)."""
    uid: int
    admin: bool

    @property
    def name(self) -> str:
        return user_name(self.uid)

    def may_act(self, job: Job) -> bool:
        return self.admin or self.uid == job.uid

    def sees_private(self, job: Job) -> bool:
        return self.may_act(job)

    def sees_env(self, job: Job) -> bool:
        return self.uid in (0, job.uid)

    def require_act(self, job: Job, verb: str = "cancel") -> None:
        if not self.may_act(job):
            what = verb.removesuffix("-now").removesuffix("-hold")
            raise NotAllowed(f"job {job.id} belongs to {job.user}; only its owner, root or an admin may {what} it")

    def view(self, job: Job) -> dict[str, Any]:
        """The job as this caller may see it (gpuschedctl show)."""
        d = job_to_dict(job)
        if not self.sees_private(job):
            for key in PRIVATE_FIELDS:
                d.pop(key, None)
        elif job.spec is not None:
            spec = job.spec.to_dict()
            if not self.sees_env(job):
                spec.pop("env", None)
            d["spec"] = spec
        return d


class Access:
    def __init__(self, admin_group: str = ""):
        self.admin_group = admin_group

    def is_admin(self, uid: int) -> bool:
        return uid == 0 or in_group(uid, self.admin_group)

    def caller(self, uid: int) -> Caller:
        return Caller(uid, self.is_admin(uid))
