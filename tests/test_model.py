"""model.py: a job record's dict form, as status files hold it, round-trips; records written before job
classes existed still load."""

import tomllib

import tomli_w

from gpusched import jobfile
from gpusched.model import GpuRef, Job, State, job_from_dict, job_to_dict

OLD_STATUS = '''
id = 41
name = "resnet"
user = "alice"
uid = 1000
state = "running"
reason = ""
source = "resnet.toml"
submitted = 2026-11-20T10:00:00Z
started = 2026-11-20T10:00:05Z
gpus = [{ index = 0, uuid = "GPU-0" }]
unit = "gpusched-job-41.scope"
log = "/var/lib/gpusched/logs/41.log"
attempt = 1
preemptions = 0
priority = 100
gpus_requested = 1
preemptible = true
'''


def through_toml(job):
    return job_from_dict(tomllib.loads(tomli_w.dumps(job_to_dict(job))), job.spec)


def test_a_record_from_before_classes_loads():
    d = tomllib.loads(OLD_STATUS)
    job = job_from_dict(d, jobfile.parse(b'command = "x"\n', "resnet.toml", owner_is_root=True))
    assert job.job_class == "" and job.state == State.RUNNING and job.gpus == (GpuRef(0, "GPU-0"),)
    assert "class" not in job_to_dict(job)          # and it is written back the same way


def test_class_resumable_and_share_round_trip():
    spec = jobfile.parse(b'command = "x"\nclass = "debug"\nresumable = true\nshare = true\ngpu_memory = "8G"\n',
                         "j.toml", owner_is_root=True)
    job = Job(id=7, user="alice", uid=1000, source="j.toml", state=State.QUEUED, submitted=1_800_000_000.0,
              spec=spec, job_class="debug")
    d = job_to_dict(job)
    assert (d["class"], d["resumable"], d["share"]) == ("debug", True, True)
    back = through_toml(job)
    assert back.job_class == "debug" and back.spec.resumable and back.spec.share


def test_defaults_add_nothing_to_the_record():
    spec = jobfile.parse(b'command = "x"\n', "j.toml", owner_is_root=True)
    d = job_to_dict(Job(id=7, user="a", uid=1, source="j.toml", state=State.QUEUED, submitted=0.0, spec=spec))
    assert not {"class", "resumable", "share"} & set(d)
