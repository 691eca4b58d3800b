"""bench/simulate: replay a GPU-cluster trace through gpusched's policy and three reference policies on a
virtual clock, and compare what users would have seen (docs/policy.md shows the results).

trace (the jobs and the model's declared limits) -> cluster (the discrete-event loop: GPUs, runs, preemptions)
driven by one driver per policy (drivers: FIFO, EASY, the oracle; gpusched: the real policy) -> metrics ->
report (table, JSON, PNG plot through png).
"""
