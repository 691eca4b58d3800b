"""Fair share as the engine keeps it: the ledger charged with the GPU time active jobs hold, and each user's standing.

policy/fairshare.py is the pure arithmetic (a decaying ledger, standings from usage and shares); this is the
bookkeeping around it that needs the job table: which active jobs hold GPUs and up to when they were charged,
the ledger rebuilt from the jobs' histories at recovery, and the share group each user is in (looked up in
the system's groups once). It changes no job: the engine tells it of every change (`track`) and asks it for
standings at each pass and for `show`/`why`. Split out of engine.py so that the job table's door and the
fair-share accounting can be read apart.
"""

from __future__ import annotations

import pwd
from typing import Iterable, Mapping

from gpusched import config as configmod
from gpusched.access import group_names
from gpusched.clock import Clock
from gpusched.model import ACTIVE, Job
from gpusched.policy import fairshare, inputs


class Shares:
    """The fair-share ledger and what is charged to it: active job id -> (charged up to (wall time), GPUs)."""

    def __init__(self, cfg: configmod.Config, clock: Clock):
        self.cfg = cfg
        self.clock = clock
        self.ledger = fairshare.Ledger(cfg.fair_share_half_life, at=clock.time())
        self.charged: dict[int, tuple[float, int]] = {}
        self._group_of: dict[str, str | None] = {}

    def track(self, job: Job) -> None:
        """After any change of `job`: its account starts when it gets GPUs, and the rest is charged when it
        leaves them."""
        if job.state in ACTIVE and job.gpus and job.id not in self.charged:
            self.charged[job.id] = (job.started if job.started is not None else self.clock.time(), len(job.gpus))
        elif job.id in self.charged and job.state not in ACTIVE:
            self._charge_job(job, self.clock.time())     # it held its GPUs until now
            del self.charged[job.id]

    def forget(self, job_id: int) -> None:
        self.charged.pop(job_id, None)

    def rebuild(self, jobs: Iterable[Job], live: Iterable[Job], now: float) -> None:
        """At recovery: the ledger from the jobs' histories (the finished jobs still kept, the active ones up to
        now), and the active ones charged from now on."""
        self.ledger = fairshare.Ledger.rebuild((r for j in jobs for r in inputs.runs(j, now)),
                                               self.cfg.fair_share_half_life, now)
        self.charged = {j.id: (now, len(j.gpus)) for j in live if j.state in ACTIVE and j.gpus}

    def _charge_job(self, job: Job, now: float) -> None:
        since, gpus = self.charged[job.id]
        if now > since:
            self.ledger.charge(job.user, float(gpus), since, now)
            self.charged[job.id] = (now, gpus)

    def charge(self, jobs: Mapping[int, Job], now: float) -> None:
        """Charge the ledger with the GPU time active jobs held since they were last charged (each pass and
        tick)."""
        for job_id in self.charged:
            self._charge_job(jobs[job_id], now)
        self.ledger.advance(now)

    def standing(self, users: dict[str, int], now: float) -> dict[int, fairshare.Standing]:
        """Each uid's fair-share standing among `users` (name -> uid: those with jobs waiting or running)."""
        usage = {u: self.ledger.value(u, now) for u in users}
        group_shares = dict(self.cfg.share_groups)
        group_of = {u: g for u in users if (g := self._group(u, group_shares)) is not None} if group_shares else None
        standing = fairshare.standings(usage, users, shares=dict(self.cfg.shares),
                                       default_share=self.cfg.default_share, group_of=group_of,
                                       group_shares=group_shares or None)
        return {users[u]: s for u, s in standing.items()}

    def _group(self, user: str, group_shares: dict[str, float]) -> str | None:
        """The share group (fair_share.groups) a user belongs to, the first configured one; looked up once."""
        if user not in self._group_of:
            try:
                pw = pwd.getpwnam(user)
                mine = set(group_names(pw.pw_name, pw.pw_gid))
            except KeyError:
                mine = set()
            self._group_of[user] = next((g for g in group_shares if g in mine), None)
        return self._group_of[user]
