"""Job classes: urgency the administrator grants (Slurm's QOS idea), never what a job file claims.

A class has a rank (lower runs first), who may use it, a per-user GPU cap, a default and a maximum time limit,
and the classes whose running jobs it may preempt. For example `debug` (rank 0, at most 1 GPU per user, at most
2 h, may preempt `low`), `normal` (rank 10), `low` (rank 20, a scavenger that runs on what is idle and yields).
Pure data and lookups: the config builds the classes, jobfile checks who may ask for one, the policy orders and
preempts by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Mapping

DEFAULT = "normal"          # the class of a job that names none, unless the config says otherwise


@dataclass(frozen=True, slots=True)
class JobClass:
    name: str
    priority: int = 0                          # lower runs first, before any higher one
    users: frozenset[str] = frozenset()        # who may use it; with groups both empty: everyone
    groups: frozenset[str] = frozenset()
    max_gpus_per_user: int = 0                 # GPUs one user's jobs of this class hold at once; 0: no cap
    max_time_limit: float = 0.0                # seconds; 0: no cap
    default_time_limit: float | None = None    # for jobs that give none
    preempts: frozenset[str] = frozenset()     # classes whose running jobs it may preempt
    boost: tuple[str, int] | None = None       # (window, priority): its priority while that window is open

    @property
    def public(self) -> bool:
        return not self.users and not self.groups


def may_use(cls: JobClass, user: str, groups: Collection[str]) -> bool:
    return cls.public or user in cls.users or bool(cls.groups.intersection(groups))


def allowed(classes: Mapping[str, JobClass], user: str, groups: Collection[str]) -> frozenset[str]:
    """The names of the classes this user may ask for."""
    return frozenset(name for name, cls in classes.items() if may_use(cls, user, groups))


def rank(classes: Mapping[str, JobClass] | None, name: str) -> int:
    """Where a job of this class stands in the order; 0 without classes. A class the config no longer has
    (removed since the job was accepted) ranks after every class: it is still run, never ahead of others."""
    if not classes:
        return 0
    cls = classes.get(name)
    return cls.priority if cls is not None else max(c.priority for c in classes.values()) + 1


def may_preempt(classes: Mapping[str, JobClass] | None, attacker: str, victim: str) -> bool:
    if not classes:
        return False
    cls = classes.get(attacker)
    return cls is not None and victim in cls.preempts


def gpu_cap(classes: Mapping[str, JobClass] | None, name: str) -> int:
    if not classes:
        return 0
    cls = classes.get(name)
    return cls.max_gpus_per_user if cls is not None else 0
