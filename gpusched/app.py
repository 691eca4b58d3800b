"""gpuschedd: reads the config, connects to the system bus, builds the parts and runs the loop.

The parts, each one thing: the engine (engine.py: the job table and its one door) with its recorder
(recorder.py: durable records over store.py), runner (runner.py: scopes and monitors over systemd.py and
spawner.py) and GPU inventory (inventory.py over gpus.py); the intake (intake.py: spool.py to the engine);
the access rule (access.py); the bus API (api.py); and the main loop (daemon.py) that drives them. `build`
wires them the same way for the daemon and for tests.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from gpusched import config as configmod
from gpusched import fds, listfiles
from gpusched.access import Access
from gpusched.api import Manager
from gpusched.clock import Clock, SystemClock
from gpusched.daemon import Loop
from gpusched.engine import Engine
from gpusched.gpus import Probe, make_probe
from gpusched.intake import Intake
from gpusched.listpublish import Publisher
from gpusched.log import log
from gpusched.recorder import StoreRecorder
from gpusched.runner import ScopeRunner
from gpusched.scopes import Units
from gpusched.spawner import Spawner
from gpusched.spool import Spool, SpoolWatcher
from gpusched.store import Store


@dataclass
class Gpusched:
    cfg: configmod.Config
    loop: Loop
    engine: Engine
    intake: Intake
    runner: ScopeRunner
    recorder: StoreRecorder
    access: Access
    manager: Manager
    publisher: Publisher | None = None

    def recover(self) -> None:
        """Before READY=1: the recorded jobs, the spool entries taken when the daemon died, each active job
        reconciled with its scope; then what waits in the spool is offered (in batches, after READY=1)."""
        self.engine.load()
        self.intake.recover()
        self.engine.recover()
        self.intake.resume()


def build(cfg: configmod.Config, store: Store, spool: Spool, units: Units, probe: Probe,
          spawner: Spawner | None = None, clock: Clock | None = None, listing_dir: str | None = None) -> Gpusched:
    clock = clock or SystemClock()
    loop = Loop(clock)
    access = Access(cfg.admin_group)
    recorder = StoreRecorder(store, log, loop.idle)
    runner = ScopeRunner(cfg, store, units, spawner or Spawner(), loop.watch_exit, log)
    engine = Engine(cfg, clock, recorder, runner, probe, loop.request_pass, log, soon=loop.idle,
                    expire_rejected=spool.expire_rejected)
    intake = Intake(cfg, spool, store, engine, access, clock, log, loop.idle)
    loop.attach(engine, intake, runner)
    if listing_dir is None:                              # no listing files (listpublish.py): the bus only
        return Gpusched(cfg, loop, engine, intake, runner, recorder, access, Manager(engine, access))
    publisher = Publisher(engine, loop.later, log, directory=listing_dir, admin_group=cfg.admin_group)
    return Gpusched(cfg, loop, engine, intake, runner, recorder, access,
                    Manager(engine, access, publisher.publish_now), publisher)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpuschedd", description="gpusched daemon (run by gpusched.service)")
    ap.add_argument("--config", default=os.environ.get("GPUSCHED_CONFIG", configmod.DEFAULT_PATH))
    args = ap.parse_args(argv)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"gpuschedd: {e}", file=sys.stderr)
        return 2
    from gpusched.api import publish
    from gpusched.bus import BusLink, BusUnavailable
    from gpusched.systemd import Systemd

    # The bus connection is private and reconnects (bus.py): losing dbus-daemon, or being disconnected by
    # it, costs the API a few seconds, never the daemon. Meanwhile systemd calls fail with
    # SystemdUnavailable and the loop (scheduling, job ends, the watchdog) goes on.
    link = BusLink(lambda message, priority: log(message, priority))
    units = Systemd(None)
    link.on_up(units.rebind)
    link.on_down(lambda: units.rebind(None))
    try:
        link.start()
    except BusUnavailable as e:
        print(f"gpuschedd: {e}", file=sys.stderr)
        return 1
    probe, what = make_probe(cfg.simulated_gpus)
    log(f"gpusched starting: spool {cfg.spool_dir}, state {cfg.state_dir}, {what}")
    g = build(cfg, Store(cfg.state_dir), Spool(cfg.spool_dir), units, probe, listing_dir=listfiles.DIRECTORY)
    if g.publisher is not None:                        # before recovery: its jobs are the first render
        g.publisher.start()
    # watch before the first scan when the spool exists, so nothing dropped meanwhile is missed
    watcher = SpoolWatcher(cfg.spool_dir, g.intake.on_spool_entry) if os.path.isdir(cfg.spool_dir) else None
    g.recover()
    if watcher is None:
        watcher = SpoolWatcher(cfg.spool_dir, g.intake.on_spool_entry)
    watcher.start()
    fds.cloexec_all()
    link.on_up(lambda bus: publish(bus, g.manager))     # now, and again on every new connection
    g.loop.request_pass()
    g.loop.run()
    if g.publisher is not None:
        g.publisher.close()
    g.recorder.snapshot()
    link.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
