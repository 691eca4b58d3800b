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


def listen_line(address: str, port: int) -> str | None:
    """The ListenStream= line for one [web] listen address, or None for one with a scope (fe80::1%eth0):
    systemd 252 can't parse those, and a % in a unit file is one of systemd's specifiers besides (%i is the
    instance, empty here: fe80::1%ib0 would become fe80::1b0, another address, whose failure to bind fails
    the whole socket unit and so the dashboard)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.scope_id is not None:
        return None
    return f"ListenStream=[{ip}]:{port}" if ip.version == 6 else f"ListenStream={ip}:{port}"


def render(listen: tuple[str, ...], port: int) -> tuple[str, list[str]]:
    """The drop-in's text, and the addresses left out of it (gpusched-web binds those itself, saying so)."""
    lines = ["# written by gpusched-web-generator from [web] listen and port in /etc/gpusched/gpusched.toml",
             "[Socket]", "ListenStream="]
    left = []
    for address in listen:
        line = listen_line(address, port)
        if line is None:
            left.append(address)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", left


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
    try:
        text, left = render(cfg.web_listen, cfg.web_port)
        for address in left:
            print(f"gpusched-web-generator: [web] listen {address!r}: systemd can't hold an address with a "
                  f"scope; gpusched-web binds it itself", file=sys.stderr)
        if len(left) == len(cfg.web_listen):
            return 0                    # nothing systemd can hold: the unit keeps its own addresses
        path = os.path.join(argv[1], DROPIN)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except (OSError, ValueError) as e:  # never fail the boot
        print(f"gpusched-web-generator: {e}; gpusched-web.socket keeps its own addresses", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
