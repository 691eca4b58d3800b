import os
import re

import pytest

from gpusched import config
from gpusched.config import Config, ConfigError, SimulatedGpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "gpusched.toml")


def test_load_missing_file_gives_defaults(tmp_path):
    cfg = config.load(str(tmp_path / "nope.toml"))
    assert cfg == Config()
    assert cfg.spool_dir == "/var/spool/gpusched"
    assert cfg.state_dir == "/var/lib/gpusched"
    assert cfg.max_running == 0
    assert cfg.preempt_margin == 10
    assert cfg.gpu_poll_interval == 1.0
    assert cfg.admin_group == ""
    assert cfg.simulated_gpus == ()


def test_empty_text_gives_defaults():
    assert config.parse("") == Config()


def test_load_reads_the_file(tmp_path):
    p = tmp_path / "gpusched.toml"
    p.write_text('max_running = 3\npreempt_margin = 5\nstate_dir = "/srv/gs"\n')
    cfg = config.load(str(p))
    assert (cfg.max_running, cfg.preempt_margin, cfg.state_dir) == (3, 5, "/srv/gs")
    assert cfg.spool_dir == Config().spool_dir


def test_simulated_gpus():
    cfg = config.parse('[[gpus.simulated]]\nname = "Simulated A100 80GB"\nmemory = "80G"\n')
    assert cfg.simulated_gpus == (SimulatedGpu("Simulated A100 80GB", 80 << 30),)


def test_several_simulated_gpus_keep_their_order_and_defaults():
    text = ('[[gpus.simulated]]\nname = "Sim H100"\nmemory = "80G"\n\n'
            '[[gpus.simulated]]\nname = "Sim T4"\nmemory = "16G"\n\n'
            '[[gpus.simulated]]\n')
    cfg = config.parse(text)
    assert cfg.simulated_gpus == (SimulatedGpu("Sim H100", 80 << 30), SimulatedGpu("Sim T4", 16 << 30),
                                  SimulatedGpu("Simulated GPU", 80 << 30))


def test_gpu_poll_interval_is_a_duration_with_a_floor():
    assert config.parse('gpu_poll_interval = "2s"').gpu_poll_interval == 2.0
    assert config.parse("gpu_poll_interval = 5").gpu_poll_interval == 5.0
    assert config.parse("gpu_poll_interval = 0").gpu_poll_interval == 0.1


def test_unknown_top_level_key_names_key_and_line():
    with pytest.raises(ConfigError) as e:
        config.parse('max_running = 2\n\nmax_runing = 3\n', "/etc/gs.toml")
    assert "max_runing" in str(e.value)
    assert "/etc/gs.toml:3:" in str(e.value)
    assert "unknown key" in str(e.value)


def test_unknown_key_in_gpus_table_names_key_and_line():
    with pytest.raises(ConfigError) as e:
        config.parse('# comment\n[gpus]\nsimulatd = 1\n', "c.toml")
    assert "gpus.simulatd" in str(e.value)
    assert "c.toml:3:" in str(e.value)


def test_unknown_key_in_a_simulated_gpu_is_an_error():
    with pytest.raises(ConfigError, match="gpus.simulated"):
        config.parse('[[gpus.simulated]]\nname = "x"\nmem = "80G"\n')


@pytest.mark.parametrize("text, key", [
    ("max_running = -1", "max_running"),
    ("max_running = true", "max_running"),
    ('max_running = "2"', "max_running"),
    ("preempt_margin = 1.5", "preempt_margin"),
    ('spool_dir = "relative/spool"', "spool_dir"),
    ("state_dir = 5", "state_dir"),
    ("admin_group = 0", "admin_group"),
    ('gpu_poll_interval = "soon"', "gpu_poll_interval"),
    ("gpus = 3", "gpus"),
    ('[[gpus.simulated]]\nname = 3\n', "gpus.simulated"),
    ('[[gpus.simulated]]\nmemory = "lots"\n', "gpus.simulated"),
])
def test_bad_values_raise_config_error_naming_the_key(text, key):
    with pytest.raises(ConfigError) as e:
        config.parse(text, "f.toml")
    assert key in str(e.value)


def test_invalid_toml_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.parse("max_running = = 1")


def test_load_invalid_file_names_the_path(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("bogus = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}:1: bogus")):
        config.load(str(p))


def test_example_config_parses_to_the_defaults():
    assert config.load(EXAMPLE) == Config()


def test_example_config_uncommented_gives_defaults_plus_one_simulated_gpu():
    # every commented setting in the example claims to be the default: uncomment them all and check
    with open(EXAMPLE) as f:
        lines = f.read().splitlines()
    setting = re.compile(r"^#(\[\[|[a-z_]+ = )")
    uncommented = [line[1:] if setting.match(line) else line for line in lines]
    assert sum(1 for a, b in zip(lines, uncommented) if a != b) >= 8
    cfg = config.parse("\n".join(uncommented) + "\n")
    defaults = Config()
    assert cfg.spool_dir == defaults.spool_dir
    assert cfg.state_dir == defaults.state_dir
    assert cfg.max_running == defaults.max_running
    assert cfg.preempt_margin == defaults.preempt_margin
    assert cfg.gpu_poll_interval == defaults.gpu_poll_interval
    assert cfg.admin_group == defaults.admin_group
    assert cfg.simulated_gpus == (SimulatedGpu("Simulated A100 80GB", 80 << 30),)


def test_unknown_key_in_a_simulated_gpu_names_key_and_line():
    with pytest.raises(ConfigError) as e:
        config.parse('[[gpus.simulated]]\nname = "x"\nmem = "80G"\n', "c.toml")
    assert "'mem'" in str(e.value)
    assert "c.toml:3:" in str(e.value)


def test_log_floor_is_a_size_a_percentage_or_the_default():
    from gpusched.config import log_floor, parse
    gib = 1 << 30
    assert log_floor(parse(""), 100 * gib) == gib                 # the smaller of 1 GiB and 5%
    assert log_floor(parse(""), 2 << 20) == (2 << 20) // 20        # a small filesystem: 5%
    assert log_floor(parse('log_min_free = "10%"\n'), 100 * gib) == 10 * gib
    assert log_floor(parse('log_min_free = "2G"\n'), 100 * gib) == 2 * gib
    assert log_floor(parse("log_min_free = 0\n"), 100 * gib) == 0
    with pytest.raises(ConfigError, match="log_min_free"):
        parse('log_min_free = "150%"\n')


# --- scheduling policy keys (docs/policy.md) ----------------------------------------------------------------

POLICY = '''
backfill = false
aging = 1.5
default_class = "normal"

[fair_share]
half_life = "2d"
default_share = 2
users = { alice = 3, bob = 0.5 }
groups = { vision = 4 }

[classes.debug]
priority = 0
users = ["alice"]
groups = ["gpuusers"]
max_gpus_per_user = 1
max_time_limit = "2h"
default_time_limit = "30m"
preempts = ["low"]

[classes.normal]
priority = 10
preempts = ["low"]

[classes.low]
priority = 20
'''


def test_policy_keys():
    from gpusched.policy import JobClass
    cfg = config.parse(POLICY)
    assert (cfg.backfill, cfg.aging, cfg.default_class) == (False, 1.5, "normal")
    assert (cfg.fair_share_half_life, cfg.default_share) == (2 * 86400.0, 2.0)
    assert cfg.shares == (("alice", 3.0), ("bob", 0.5)) and cfg.share_groups == (("vision", 4.0),)
    assert cfg.classes[0] == JobClass("debug", priority=0, users=frozenset({"alice"}),
                                      groups=frozenset({"gpuusers"}), max_gpus_per_user=1, max_time_limit=7200.0,
                                      default_time_limit=1800.0, preempts=frozenset({"low"}))
    assert [c.name for c in cfg.classes] == ["debug", "normal", "low"]


def test_policy_defaults():
    cfg = Config()
    assert (cfg.backfill, cfg.aging, cfg.fair_share_half_life, cfg.default_share) == (True, 2.0, 7 * 86400.0, 1.0)
    assert (cfg.classes, cfg.shares, cfg.default_class) == ((), (), "normal")


def test_class_max_time_limit_is_the_default_when_none_is_given():
    cfg = config.parse('[classes.normal]\nmax_time_limit = "1d"\n')
    assert cfg.classes[0].default_time_limit == 86400.0


def test_job_limits_carry_the_classes_and_who_may_use_them():
    cfg = config.parse(POLICY)
    alice, bob, lab = cfg.job_limits("alice"), cfg.job_limits("bob"), cfg.job_limits("carol", ["gpuusers"])
    assert alice.classes == {"debug": 7200.0, "normal": 0.0, "low": 0.0} and alice.default_class == "normal"
    assert alice.allowed_classes == {"debug", "normal", "low"}
    assert bob.allowed_classes == {"normal", "low"}
    assert lab.allowed_classes == {"debug", "normal", "low"}
    assert cfg.job_limits().allowed_classes == {"normal", "low"}        # without the owner: public ones only
    assert Config().job_limits().classes is None


@pytest.mark.parametrize("text, key", [
    ("backfill = 1", "backfill"),
    ("aging = -1", "aging"),
    ('aging = "2"', "aging"),
    ("fair_share = 3", "fair_share"),
    ("[fair_share]\nhalflife = 3", "fair_share.halflife"),
    ('[fair_share]\nhalf_life = "soon"', "fair_share.half_life"),
    ("[fair_share]\nusers = { alice = -1 }", "fair_share.users.alice"),
    ("[fair_share]\ndefault_share = true", "fair_share.default_share"),
    ("[classes.normal]\npriority = 1.5", "classes.normal.priority"),
    ('[classes.normal]\nusers = "alice"', "classes.normal.users"),
    ("[classes.normal]\nmax_gpus_per_user = -1", "classes.normal.max_gpus_per_user"),
    ('[classes.normal]\nmax_time_limit = "1h"\ndefault_time_limit = "2h"', "classes.normal.default_time_limit"),
    ('[classes.normal]\npreempts = ["nope"]', "classes.normal.preempts"),
    ('[classes.normal]\npreempts = ["normal"]', "classes.normal.preempts"),
    ("[classes.normal]\npriorty = 1", "classes.normal.priorty"),
    ('[classes."bad name"]\npriority = 1', "classes.bad name"),
    ("[classes.debug]\npriority = 1", "classes"),                   # no "normal" and no default_class
    ('default_class = "debug"\n[classes.normal]\n', "default_class"),
    ("default_class = 3", "default_class"),
])
def test_bad_policy_values_name_the_key(text, key):
    with pytest.raises(ConfigError) as e:
        config.parse(text, "c.toml")
    assert f" {key}: " in str(e.value) or f":{key}: " in str(e.value), str(e.value)
