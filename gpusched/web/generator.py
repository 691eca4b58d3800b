"""gpusched-web-generator: systemd's generator that makes gpusched-web.socket listen where [web] says.

systemd runs it at boot and at every `systemctl daemon-reload` with its output directories; it writes
gpusched-web.socket.d/50-listen.conf there with [web] listen and port from /etc/gpusched/gpusched.toml, so
the config stays the one place that says where the dashboard listens while systemd holds the sockets
(listeners.py says why). A generator must never fail the boot: a config it can't read leaves the unit's own
addresses (loopback, port 8765), says why on stderr (the kernel log), and gpusched-web, reading the same
config, refuses to start with the full error.
"""

from __future__ import annotations

import ipaddress
import os
import sys

DROPIN = "gpusched-web.socket.d/50-listen.conf"


def render(listen: tuple[str, ...], port: int) -> str:
    lines = ["# written by gpusched-web-generator from [web] listen and port in /etc/gpusched/gpusched.toml",
             "[Socket]", "ListenStream="]
    for address in listen:
        ip = ipaddress.ip_address(address)
        lines.append(f"ListenStream=[{ip}]:{port}" if ip.version == 6 else f"ListenStream={ip}:{port}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: gpusched-web-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (systemd runs it)", file=sys.stderr)
        return 2
    from gpusched import config
    try:
        cfg = config.load(os.environ.get("GPUSCHED_CONFIG", config.DEFAULT_PATH))
    except (config.ConfigError, OSError, ValueError) as e:      # unreadable, not UTF-8, invalid
        print(f"gpusched-web-generator: {e}; gpusched-web.socket keeps its own addresses", file=sys.stderr)
        return 0
    path = os.path.join(argv[1], DROPIN)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(render(cfg.web_listen, cfg.web_port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
