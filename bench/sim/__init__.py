"""bench/simulate: replay a GPU-cluster trace through gpusched (its engine and policy) and three reference
policies on a virtual clock, and compare what users would have seen (docs/policy.md shows the results).

trace (the jobs and the model's declared limits) -> cluster (the discrete-event loop: GPUs, runs, preemptions)
driven by one driver per policy (drivers: FIFO, EASY, the oracle;
engine_driver: gpusched, the real engine on gpusched.testing's fakes; policy_driver: the policy alone) -> metrics ->
report (table, JSON, PNG plot through png).
"""
