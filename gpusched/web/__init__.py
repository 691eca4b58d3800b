"""gpusched-web: the web dashboard, an unprivileged service (user gpusched-web) that shows GPUs, the queue,
jobs and their live logs, and acts on jobs, for the user the kernel says owns each loopback connection
(peer.py). It talks to the daemon only over the bus (daemon.py); docs/web.md says how and why."""
