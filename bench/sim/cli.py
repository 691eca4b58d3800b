"""bench/simulate's command line: one run (a table, or --json), or a sweep of loads and seeds (--sweep)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

from bench.sim import cluster, drivers, metrics, report, trace
from bench.sim.engine_driver import EngineDriver
from bench.sim.policy_driver import PolicyDriver
from gpusched import config as configmod

POLICIES = ("fifo", "easy", "gpusched", "oracle")          # what a run compares unless --policies says
# gpusched-policy-only: the policy alone (policy_driver.py, its own job table), to compare with the engine's
EXTRA = ("gpusched-policy-only",)
SWEEP_LOADS = (0.5, 0.7, 0.9, 1.0)
SWEEP_SEEDS = (1, 2, 3)


def make(name: str, gpus: int, cfg: configmod.Config) -> cluster.Driver:
    makers: dict[str, Callable[[], cluster.Driver]] = {
        "fifo": drivers.Fifo, "easy": lambda: drivers.Easy(gpus), "oracle": lambda: drivers.Oracle(gpus),
        "gpusched": lambda: EngineDriver(gpus, cfg), "gpusched-policy-only": lambda: PolicyDriver(gpus, cfg)}
    return makers[name]()


def run(path: str, *, gpus: int, load: float, seed: int, resumable: float = 0.0, base_load: float = 0.9,
        cfg: configmod.Config | None = None, policies=POLICIES) -> dict[str, dict[str, float]]:
    """Every policy over the same jobs (re-read for each, so none sees another's outcome)."""
    cfg = cfg or configmod.Config()
    out = {}
    for name in policies:
        jobs = trace.load(path, seed=seed, load=load, base_load=base_load, resumable=resumable, max_gpus=gpus)
        t0 = time.process_time()
        totals = cluster.replay(jobs, gpus, make(name, gpus, cfg))
        out[name] = metrics.summarize(jobs, totals)
        out[name]["cpu_s"] = time.process_time() - t0
    return out


def _sweep_one(args: tuple) -> tuple[float, int, dict]:
    path, gpus, load, seed, resumable, base_load, cfg = args
    return load, seed, run(path, gpus=gpus, load=load, seed=seed, resumable=resumable, base_load=base_load, cfg=cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/simulate", description=(
        "Replay a GPU-cluster trace through FIFO, FIFO + EASY backfill, gpusched (the real engine and policy, "
        "with the config's settings, on a fake runner) and the shortest-remaining-time oracle, on a virtual clock."))
    ap.add_argument("--trace", required=True, help="CSV: job_id,user,submit_s,duration_s,gpus,...")
    ap.add_argument("--gpus", type=int, required=True, help="GPUs on the simulated server")
    ap.add_argument("--load", type=float, default=0.9, help="offered load to replay at (submit times x B/L)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the declared limits and resumable choice")
    ap.add_argument("--resumable", type=float, default=0.0, metavar="FRACTION",
                    help="fraction of jobs that checkpoint and resume when preempted")
    ap.add_argument("--base-load", type=float, default=0.9, metavar="B", help="the trace's own offered load")
    ap.add_argument("--json", action="store_true", help="one JSON object keyed by policy")
    ap.add_argument("--config", help="a gpusched.toml whose scheduling keys gpusched runs with "
                                     "(default: the built-in defaults)")
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help="which policies (default: all four; also gpusched-policy-only: the policy without the "
                         "engine, for comparison)")
    ap.add_argument("--sweep", action="store_true",
                    help="loads 0.5, 0.7, 0.9, 1.0 x seeds 1-3 (ignores --load and --seed)")
    ap.add_argument("--plot", metavar="PNG", help="write the JCT/wait plot here")
    ap.add_argument("--parallel", type=int, default=1, metavar="N", help="sweep runs at once (processes)")
    args = ap.parse_args(argv)
    cfg = configmod.load(args.config) if args.config else configmod.Config()
    policies = tuple(p for p in args.policies.split(",") if p)
    unknown = set(policies) - set(POLICIES) - set(EXTRA)
    if unknown:
        ap.error(f"unknown policy: {', '.join(sorted(unknown))}")
    if not os.path.exists(args.trace):
        ap.error(f"no such trace: {args.trace}")

    if not args.sweep:
        t0 = time.monotonic()
        r = run(args.trace, gpus=args.gpus, load=args.load, seed=args.seed, resumable=args.resumable,
                base_load=args.base_load, cfg=cfg, policies=policies)
        if args.plot:
            report.plot(args.plot, f"{os.path.basename(args.trace)} load {args.load:g} seed {args.seed}",
                        {args.load: [r]})
        if args.json:
            print(json.dumps(r, sort_keys=True))
            return 0
        print(f"{os.path.basename(args.trace)}: {args.gpus} GPUs, load {args.load:g}, seed {args.seed}, "
              f"resumable {args.resumable:g} ({time.monotonic() - t0:.1f} s)\n")
        print(report.table(r))
        _print_targets(r, args.load, args.resumable)
        return 0

    todo = [(args.trace, args.gpus, load, seed, args.resumable, args.base_load, cfg)
            for load in SWEEP_LOADS for seed in SWEEP_SEEDS]
    if args.parallel > 1:
        import multiprocessing
        with multiprocessing.Pool(args.parallel) as pool:
            done = pool.map(_sweep_one, todo)
    else:
        done = [_sweep_one(t) for t in todo]
    by_load: dict[float, list] = {}
    for load, seed, r in done:
        by_load.setdefault(load, []).append(r)
    if args.plot:
        report.plot(args.plot, f"{os.path.basename(args.trace)}, {args.gpus} GPUs, resumable {args.resumable:g}: "
                               f"mean of seeds 1-3, whiskers min-max", by_load)
    if args.json:
        print(json.dumps({"runs": [{"load": load, "seed": seed, "results": r} for load, seed, r in done]},
                         sort_keys=True))
        return 0
    for load in SWEEP_LOADS:
        print(f"\n### load {load:g}, mean of seeds {', '.join(map(str, SWEEP_SEEDS))}\n")
        print(report.table(report.mean_over(by_load[load])))
        for (load_, seed, r) in done:
            if load_ == load:
                print(f"\nseed {seed}:")
                _print_targets(r, load, args.resumable)
    return 0


def _print_targets(r: dict, load: float, resumable: float) -> None:
    checks = report.targets(r, load)
    if not resumable:
        checks = [c for c in checks if not c[0].startswith("(with resumable")]
    for what, ok, numbers in checks:
        print(f"  {'met   ' if ok else 'MISSED'} {what}: {numbers}")


if __name__ == "__main__":
    sys.exit(main())
