import dataclasses
import signal
import subprocess

import pytest

from gpusched import jobfile, launch
from gpusched.launch import Account
from gpusched.model import Gpu

ALICE = Account(name="alice", uid=1000, gid=1000, home="/home/alice", shell="/bin/zsh")


def spec(text: str, filename: str = "train.toml"):
    return jobfile.parse(text.encode(), filename, owner_is_root=False)


def gpu(i):
    return Gpu(index=i, uuid=f"GPU-{i:08x}-1111-2222", name="Sim", memory_total=1 << 34, memory_free=1 << 34,
               minor=i + 10)


def props(s, nodes=()):
    p = launch.scope_properties(42, s, ALICE, list(nodes))
    names = [name for name, _, _ in p]
    assert len(names) == len(set(names)), names
    return {name: (sig, value) for name, sig, value in p}


# --- argv -----------------------------------------------------------------------------------------------------

def test_string_command_runs_under_bash_c():
    assert launch.argv_for(spec('command = "python train.py --lr 3e-4 && echo done"')) == \
        ["/bin/bash", "-c", "python train.py --lr 3e-4 && echo done"]


def test_array_command_is_exec_as_is():
    assert launch.argv_for(spec('command = ["python", "train.py", "--name", "a b; rm -rf /"]')) == \
        ["python", "train.py", "--name", "a b; rm -rf /"]


def test_conda_with_string_command():
    argv = launch.argv_for(spec('command = "python train.py"\nconda = "torch-2.3"'))
    assert argv[:2] == ["/bin/bash", "-c"]
    assert len(argv) == 3
    script = argv[2]
    assert "conda activate torch-2.3 ||" in script
    assert script.endswith("\npython train.py")


def test_conda_with_array_command_passes_args_positionally():
    argv = launch.argv_for(spec('command = ["python", "-c", "print(1)"]\nconda = "/opt/envs/myenv"'))
    assert argv[:2] == ["/bin/bash", "-c"]
    assert argv[2].endswith('exec "$@"')
    assert "conda activate /opt/envs/myenv ||" in argv[2]
    assert argv[3:] == ["gpusched-job", "python", "-c", "print(1)"]


def test_conda_prelude_fails_cleanly_without_conda(tmp_path):
    # real bash, a HOME without conda and a PATH without it: the job must not run, exit 127
    argv = launch.argv_for(spec('command = ["touch", "%s"]\nconda = "nope"' % (tmp_path / "ran")))
    r = subprocess.run(argv, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    if r.returncode != 127 and "conda" in r.stderr and not (tmp_path / "ran").exists():
        pytest.skip("a system-wide conda is installed")
    assert r.returncode == 127
    assert "cannot activate conda environment nope" in r.stderr
    assert not (tmp_path / "ran").exists()


def test_conda_array_command_args_reach_the_program(tmp_path):
    # a fake conda.sh under $HOME: the prelude sources it, `conda activate` succeeds, then exec "$@"
    conda = tmp_path / "miniconda3" / "etc" / "profile.d"
    conda.mkdir(parents=True)
    (conda / "conda.sh").write_text('conda() { export ACTIVATED="$2"; }\n')
    out = tmp_path / "out"
    argv = launch.argv_for(spec('command = ["/bin/sh", "-c", "echo \\"$ACTIVATED|$1|$2\\" > %s", "sh", "a b", "$HOME"]\n'
                                'conda = "ml"' % out))
    r = subprocess.run(argv, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "ml|a b|$HOME\n"


# --- workdir -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('command = "x"', "/home/alice"),
    ('command = "x"\nworkdir = "~"', "/home/alice"),
    ('command = "x"\nworkdir = "~/runs/a"', "/home/alice/runs/a"),
    ('command = "x"\nworkdir = "/scratch/alice"', "/scratch/alice"),
])
def test_workdir(text, expected):
    assert launch.workdir_for(spec(text), "/home/alice") == expected


def test_workdir_home_with_trailing_slash():
    assert launch.workdir_for(spec('command = "x"\nworkdir = "~/w"'), "/home/alice/") == "/home/alice/w"


# --- environment -------------------------------------------------------------------------------------------------

def test_environment_for_gpu_job():
    s = spec('command = "x"\nname = "exp-1"\n[env]\nWANDB_MODE = "offline"\n')
    env = launch.environment(42, 3, s, ALICE, [gpu(2), gpu(5)], "/var/lib/gpusched/logs/42.log")
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-00000002-1111-2222,GPU-00000005-1111-2222"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["GPUSCHED_JOB_ID"] == "42"
    assert env["GPUSCHED_JOB_NAME"] == "exp-1"
    assert env["GPUSCHED_ATTEMPT"] == "3"
    assert env["GPUSCHED_GPUS"] == "2,5"
    assert env["GPUSCHED_LOG"] == "/var/lib/gpusched/logs/42.log"
    assert env["WANDB_MODE"] == "offline"
    assert (env["HOME"], env["USER"], env["LOGNAME"], env["SHELL"]) == ("/home/alice", "alice", "alice", "/bin/zsh")
    assert env["PATH"] == launch.CLEAN_PATH
    assert env["LANG"] == "C.UTF-8"


def test_cpu_only_job_sees_no_gpu():
    env = launch.environment(1, 1, spec('command = "x"\ngpus = 0'), ALICE, [], "/l")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["GPUSCHED_GPUS"] == ""


def test_user_env_may_set_path_and_lang():
    s = spec('command = "x"\n[env]\nPATH = "/opt/bin:/usr/bin"\nLANG = "de_DE.UTF-8"\n')
    env = launch.environment(1, 1, s, ALICE, [], "/l")
    assert env["PATH"] == "/opt/bin:/usr/bin"
    assert env["LANG"] == "de_DE.UTF-8"


def test_reserved_variables_are_applied_after_the_users():
    # the job file parser refuses these keys; the launcher must not depend on that
    s = dataclasses.replace(spec('command = "x"'), env={
        "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/evil",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3", "CUDA_DEVICE_ORDER": "FASTEST_FIRST", "GPUSCHED_JOB_ID": "1",
        "GPUSCHED_GPUS": "0,1,2,3", "OTHER": "kept"})
    env = launch.environment(42, 1, s, ALICE, [gpu(1)], "/l")
    assert env["HOME"] == "/home/alice"
    assert env["USER"] == env["LOGNAME"] == "alice"
    assert env["SHELL"] == "/bin/zsh"
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-00000001-1111-2222"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["GPUSCHED_JOB_ID"] == "42"
    assert env["GPUSCHED_GPUS"] == "1"
    assert env["OTHER"] == "kept"


# --- scope properties -------------------------------------------------------------------------------------------

def test_default_scope_properties():
    p = props(spec('command = "x"'), ["/dev/nvidia10", "/dev/nvidiactl"])
    assert p["Slice"] == ("s", "gpusched.slice")
    assert p["TimeoutStopUSec"] == ("t", 180 * 1_000_000)
    assert p["KillSignal"] == ("i", int(signal.SIGTERM))
    assert p["SendSIGKILL"] == ("b", True)
    assert p["CollectMode"] == ("s", "inactive-or-failed")
    assert p["DevicePolicy"] == ("s", "closed")
    assert p["DeviceAllow"] == ("a(ss)", [("/dev/nvidia10", "rw"), ("/dev/nvidiactl", "rw")])
    assert p["Description"] == ("s", "gpusched job 42 (train) of alice")
    assert p["Delegate"] == ("b", True)             # the monitor runs the job in a child cgroup (jobcgroup.py)
    for key in ("MemoryMax", "MemoryAccounting", "CPUQuotaPerSecUSec", "CPUAccounting", "TasksMax",
                "TasksAccounting", "RuntimeMaxUSec"):
        assert key not in p


def test_grace_and_stop_signal():
    p = props(spec('command = "x"\ngrace = "90s"\nstop_signal = "SIGINT"'))
    assert p["TimeoutStopUSec"] == ("t", 90_000_000)
    assert p["KillSignal"] == ("i", int(signal.SIGINT))


def test_fractional_grace():
    p = props(spec('command = "x"\ngrace = 2.5'))
    assert p["TimeoutStopUSec"] == ("t", 2_500_000)


def test_limits_and_time_limit_when_asked():
    p = props(spec('command = "x"\ntime_limit = "1d12h"\n[limits]\nmemory = "64G"\ncpus = 8.5\ntasks = 512\n'))
    assert p["MemoryAccounting"] == ("b", True)
    assert p["MemoryMax"] == ("t", 64 << 30)
    assert p["CPUAccounting"] == ("b", True)
    assert p["CPUQuotaPerSecUSec"] == ("t", 8_500_000)
    assert p["TasksAccounting"] == ("b", True)
    assert p["TasksMax"] == ("t", 512)
    assert p["RuntimeMaxUSec"] == ("t", 129600 * 1_000_000)


def test_only_the_limits_asked_for():
    p = props(spec('command = "x"\n[limits]\ncpus = 2\n'))
    assert p["CPUQuotaPerSecUSec"] == ("t", 2_000_000)
    assert "MemoryMax" not in p and "TasksMax" not in p and "RuntimeMaxUSec" not in p


def test_cpu_only_job_gets_no_device_at_all():
    p = props(spec('command = "x"\ngpus = 0'), [])
    assert p["DevicePolicy"] == ("s", "closed")
    assert p["DeviceAllow"] == ("a(ss)", [])


# --- the whole plan ---------------------------------------------------------------------------------------------------

def test_plan_ties_it_together():
    s = spec('command = ["python", "t.py"]\nworkdir = "~/exp"\nstop_signal = "USR1"')
    plan = launch.plan(42, 2, s, ALICE, [gpu(0)], ["/dev/nvidia10"], "/logs/42.log", "/results/42.2.json")
    assert plan.unit == "gpusched-job-42.scope" == launch.unit_name(42)
    m = plan.monitor
    assert m["argv"] == ["python", "t.py"]
    assert m["workdir"] == "/home/alice/exp"
    assert (m["id"], m["attempt"], m["name"], m["unit"]) == (42, 2, "train", "gpusched-job-42.scope")
    assert (m["user"], m["uid"], m["gid"]) == ("alice", 1000, 1000)
    assert (m["log"], m["result"]) == ("/logs/42.log", "/results/42.2.json")
    assert m["stop_signal"] == int(signal.SIGUSR1)
    assert m["env"]["CUDA_VISIBLE_DEVICES"] == gpu(0).uuid
    assert m["env"]["GPUSCHED_ATTEMPT"] == "2"
    assert ("DeviceAllow", "a(ss)", [("/dev/nvidia10", "rw")]) in plan.properties
    assert ("KillSignal", "i", int(signal.SIGUSR1)) in plan.properties
    # no log cap, no floor, unless the daemon passes its config's
    assert (m["max_log_size"], m["log_min_free"], m["pam_service"]) == (0, 0, "gpusched")


def test_plan_carries_the_log_limits_and_the_pam_service():
    s = spec('command = "x"')
    m = launch.plan(1, 1, s, ALICE, [], [], "/l", "/r", max_log_size=1 << 20, log_min_free=5 << 30,
                    pam_service="gpusched-test").monitor
    assert (m["max_log_size"], m["log_min_free"], m["pam_service"]) == (1 << 20, 5 << 30, "gpusched-test")
