"""What the policy reads and what it answers: plain, frozen records with no behaviour.

Every field added since the first policy has a default that reproduces the first policy's behaviour, so a
caller that knows only the old fields (id, priority, gpus, ...) gets the old decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Backfill(StrEnum):
    """How jobs further down the order may start while an earlier one waits for GPUs."""
    GREEDY = "greedy"   # any job that fits starts (the first policy): cheap, but big jobs can wait for ever
    EASY = "easy"       # the first job that can't start gets a reservation; later jobs start only if they can't
                        # delay it (EASY backfill, Lifka 1995)
    OFF = "off"         # strict order: nothing starts past the first job that can't


@dataclass(frozen=True, slots=True)
class Request:
    """A queued job, as the policy sees it."""
    id: int
    priority: int                      # lower = more urgent; with `now`, orders only its user's own jobs
    gpus: int
    gpu_memory: int | None = None      # bytes per GPU
    gpu_type: str | None = None
    gpu_ids: tuple[int | str, ...] = ()
    uid: int = -1
    job_class: str = ""                # "" = no class (every job alike, as before classes existed)
    submitted: float = 0.0             # epoch seconds; ages the job
    time_limit: float | None = None    # seconds; None = none known
    limit_estimated: bool = False      # time_limit is a guess from the user's history, not enforced
    resumable: bool = False            # checkpoints on its stop signal: preempting it loses only its grace
    share: bool = False                # may share a GPU with other sharing jobs while gpu_memory fits
    grace: float = 0.0                 # seconds between its stop signal and SIGKILL


@dataclass(frozen=True, slots=True)
class Holder:
    """A job that holds GPUs now (starting, running or stopping)."""
    id: int
    priority: int
    gpus: tuple[int, ...]
    preemptible: bool = True
    stopping: bool = False
    uid: int = -1
    cpu_only: bool = False
    job_class: str = ""
    submitted: float = 0.0             # epoch seconds
    started: float | None = None       # epoch seconds this attempt started; None = unknown
    time_limit: float | None = None    # of this attempt; None = none known
    limit_estimated: bool = False
    resumable: bool = False
    share: bool = False
    gpu_memory: int | None = None      # bytes reserved on each of its GPUs (sharing jobs)
    grace: float = 0.0


@dataclass
class Decision:
    starts: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    preempts: list[tuple[int, int]] = field(default_factory=list)       # (victim, for job)
    waiting: dict[int, str] = field(default_factory=dict)               # job id -> reason
    expected_start: dict[int, float] = field(default_factory=dict)      # job id -> epoch seconds (the plan)
