"""expiry.keep and expiry.interval: how long finished and rejected jobs are kept, and how often a sweep runs.
(The sweeps themselves are driven through the engine in test_lifecycle_features.py and test_daemon.py.)"""

from gpusched import expiry
from gpusched.config import Config


def test_keep_rejected_follows_keep_finished_and_never_outlives_it():
    assert expiry.keep(Config(keep_finished=0.0, keep_rejected=0.0)) == (0.0, 0.0)
    assert expiry.keep(Config(keep_finished=3600.0, keep_rejected=0.0)) == (3600.0, 3600.0)
    assert expiry.keep(Config(keep_finished=3600.0, keep_rejected=60.0)) == (3600.0, 60.0)
    assert expiry.keep(Config(keep_finished=60.0, keep_rejected=3600.0)) == (60.0, 60.0)
    assert expiry.keep(Config(keep_finished=0.0, keep_rejected=60.0)) == (0.0, 60.0)


def test_a_sweep_every_hour_or_a_quarter_of_the_shortest_keep():
    assert expiry.interval(Config(keep_finished=0.0, keep_rejected=0.0)) == expiry.EXPIRE_EVERY
    assert expiry.interval(Config(keep_finished=7 * 86400.0)) == expiry.EXPIRE_EVERY
    assert expiry.interval(Config(keep_finished=400.0)) == 100.0
    assert expiry.interval(Config(keep_finished=86400.0, keep_rejected=2.0)) == 1.0
