"""What starting a job means, as plain data: the scope's properties and the monitor's launch spec. Pure.

The daemon hands the properties to systemd (StartTransientUnit) and the spec to the job's monitor.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from gpusched.cgroups import SLICE
from gpusched.jobfile import JobSpec
from gpusched.model import Gpu

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USEC = 1_000_000

# Tried in order; the first that exists is sourced, so `conda activate` works in a non-interactive bash.
_CONDA_PRELUDE = """__gpusched_conda() {
  for d in "$HOME/miniconda3" "$HOME/anaconda3" "$HOME/miniforge3" "$HOME/mambaforge" "$HOME/.conda" \\
           /opt/conda /opt/miniconda3 /opt/anaconda3 /opt/miniforge3 /usr/local/miniconda3; do
    [ -f "$d/etc/profile.d/conda.sh" ] && { . "$d/etc/profile.d/conda.sh"; return 0; }
  done
  command -v conda >/dev/null 2>&1 && eval "$(conda shell.bash hook)"
}
__gpusched_conda && conda activate %(env)s || { echo "gpusched: cannot activate conda environment %(env)s" >&2; exit 127; }
"""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class LaunchPlan:
    unit: str
    properties: list[tuple[str, str, Any]]     # (name, D-Bus signature, value); PIDs is added at launch
    monitor: dict[str, Any]


def unit_name(job_id: int) -> str:
    return f"gpusched-job-{job_id}.scope"


# An interactive job's (`attach`, gpuschedctl run) command runs under its relay, as the job's user in its scope.
# -I: the job's PYTHON* variables and its workdir can't put other code in the relay's place
RELAY = (sys.executable or "/usr/bin/python3", "-I", "-m", "gpusched.ptyrelay")
SETUP_FD = 3               # the relay's fd for why it could not attach; the monitor's "could not start"


def argv_for(spec: JobSpec) -> list[str]:
    argv = _command_argv(spec)
    if spec.attach:
        forward = ["--forward", str(spec.warn_signal)] if spec.warn_signal else []
        return [*RELAY, "--setup-fd", str(SETUP_FD), *forward, spec.attach, "--", *argv]
    return argv


def _command_argv(spec: JobSpec) -> list[str]:
    if spec.conda:
        prelude = _CONDA_PRELUDE % {"env": shlex.quote(spec.conda)}
        if isinstance(spec.command, str):
            return ["/bin/bash", "-c", prelude + spec.command]
        return ["/bin/bash", "-c", prelude + 'exec "$@"', "gpusched-job", *spec.command]
    if isinstance(spec.command, str):
        return ["/bin/bash", "-c", spec.command]
    return list(spec.command)


def workdir_for(spec: JobSpec, home: str) -> str:
    w = spec.workdir
    if not w or w == "~":
        return home
    if w.startswith("~/"):
        return home.rstrip("/") + w[1:]
    return w


def environment(job_id: int, attempt: int, spec: JobSpec, account: Account, gpus: Sequence[Gpu],
                log_path: str) -> dict[str, str]:
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
    env.update(spec.env)
    env.update({
        "HOME": account.home, "USER": account.name, "LOGNAME": account.name, "SHELL": account.shell,
        # by UUID, so CUDA and NVML can never disagree on numbering; empty means no GPU at all
        "CUDA_VISIBLE_DEVICES": ",".join(g.uuid for g in gpus),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "GPUSCHED_JOB_ID": str(job_id),
        "GPUSCHED_JOB_NAME": spec.name,
        "GPUSCHED_ATTEMPT": str(attempt),
        "GPUSCHED_GPUS": ",".join(str(g.index) for g in gpus),
        "GPUSCHED_LOG": log_path,
    })
    return env


def scope_properties(job_id: int, spec: JobSpec, account: Account, device_nodes: Sequence[str]
                     ) -> list[tuple[str, str, Any]]:
    p: list[tuple[str, str, Any]] = [
        ("Description", "s", f"gpusched job {job_id} ({spec.name}) of {account.name}"),
        ("Slice", "s", SLICE),
        ("CollectMode", "s", "inactive-or-failed"),      # unload when done, even after a timeout
        ("KillSignal", "i", spec.stop_signal),
        ("SendSIGKILL", "b", True),
        ("TimeoutStopUSec", "t", int(spec.grace * USEC)),
        # no device but the standard pseudo-devices, plus exactly this job's GPUs
        ("DevicePolicy", "s", "closed"),
        ("DeviceAllow", "a(ss)", [(node, "rw") for node in device_nodes]),
        # the monitor runs the job in a child cgroup of the scope, so that it can kill all of the job at once
        # (cgroup.kill) without killing itself: systemd must leave that child alone (jobcgroup.py)
        ("Delegate", "b", True),
    ]
    if spec.limits.memory is not None:
        p += [("MemoryAccounting", "b", True), ("MemoryMax", "t", spec.limits.memory)]
    if spec.limits.cpus is not None:
        p += [("CPUAccounting", "b", True), ("CPUQuotaPerSecUSec", "t", int(spec.limits.cpus * USEC))]
    if spec.limits.tasks is not None:
        p += [("TasksAccounting", "b", True), ("TasksMax", "t", spec.limits.tasks)]
    if spec.time_limit is not None:
        p.append(("RuntimeMaxUSec", "t", int(spec.time_limit * USEC)))
    return p


def plan(job_id: int, attempt: int, spec: JobSpec, account: Account, gpus: Sequence[Gpu],
         device_nodes: Sequence[str], log_path: str, result_path: str, *, max_log_size: int = 0,
         log_min_free: int = 0, pam_service: str = "gpusched") -> LaunchPlan:
    """max_log_size: the log's cap in bytes (0: none); log_min_free: free bytes under which the log's
    filesystem gets no more log (0: no floor); pam_service: the PAM service the job's session is opened with."""
    unit = unit_name(job_id)
    monitor = {
        "id": job_id, "attempt": attempt, "name": spec.name, "unit": unit,
        "user": account.name, "uid": account.uid, "gid": account.gid,
        "workdir": workdir_for(spec, account.home), "argv": argv_for(spec),
        "env": environment(job_id, attempt, spec, account, gpus, log_path),
        "log": log_path, "result": result_path, "stop_signal": spec.stop_signal,
        "ident": f"job-{job_id}",
        "max_log_size": max_log_size, "log_min_free": log_min_free, "pam_service": pam_service,
    }
    if spec.attach:
        monitor["setup_fd"] = SETUP_FD
    return LaunchPlan(unit, scope_properties(job_id, spec, account, device_nodes), monitor)
