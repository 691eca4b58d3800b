"""gpusched-web: `python3 -m gpusched.web` (gpusched-web.service runs it as the gpusched-web user).

Loopback listeners serve plain HTTP (the kernel says who connects; ssh -L brings people there). A listener
beyond loopback serves HTTPS only, and only if [web] tls_cert and tls_key are set: there people sign in with
their password, which must never cross the network in clear (docs/web.md)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import ssl
import sys

from gpusched import config as configmod


def refusal(cfg: configmod.Config) -> str:
    """Why the dashboard won't start with this config ("" if it will)."""
    if os.geteuid() == 0:
        return "gpusched-web never runs as root (gpusched-web.service runs it as its own user)"
    far = cfg.web_far()
    if far and not (cfg.web_tls_cert and cfg.web_tls_key):
        return (f"[web] listen names {', '.join(far)}, beyond loopback: there people sign in with their password, "
                f"which must never cross the network in clear, so that needs TLS: set [web] tls_cert and tls_key "
                f"(a certificate and its key; docs/web.md), or listen on loopback only and use ssh -L")
    return ""


def tls_context(cfg: configmod.Config) -> ssl.SSLContext | None:
    """The TLS server context of the listeners beyond loopback (None without any); ssl.SSLError or OSError
    when the certificate or key can't be loaded."""
    if not cfg.web_far():
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.web_tls_cert, cfg.web_tls_key)
    return ctx


def far_names(cfg: configmod.Config) -> tuple[str, ...]:
    """The names the dashboard answers to beyond loopback: [web] names, or this machine's host names."""
    from gpusched.web import csrf
    if not cfg.web_far():
        return ()
    names = cfg.web_names or tuple(dict.fromkeys(
        n.lower() for n in (socket.gethostname(), socket.getfqdn())
        if n and n.lower().split(".")[0] != "localhost"))    # getfqdn() says localhost where DNS knows no better
    return csrf.far_names(names, cfg.web_listen)


def owner(transport) -> tuple:
    """Whom a connection counts against at the gate: on loopback the uid that made it (None if unknown: those
    share one count), beyond loopback its remote address (gate.far_owner: an IPv6 one by its /64)."""
    from gpusched.web.gate import LOOPBACK, far_owner
    from gpusched.web.peer import is_loopback, owner_uid
    peer, sock = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
    if not peer or not sock:
        return ("unknown",)
    if is_loopback(str(sock[0])):
        return (LOOPBACK, owner_uid(peer, sock))
    return far_owner(str(peer[0]))


def open_listeners(cfg: configmod.Config, held: list[socket.socket]) -> list[socket.socket]:
    """The sockets to serve: systemd's where it holds [web]'s addresses, our own for the rest (with a
    warning: then the port is free whenever this service is down)."""
    from gpusched.web import listeners
    wanted = [(a, cfg.web_port) for a in cfg.web_listen]
    use, bind, stray = listeners.plan(wanted, held)
    for s in stray:
        host, port = listeners.address_of(s)
        print(f"gpusched-web: warning: systemd passed a socket on {host} port {port}, which [web] does not name: "
              f"not served (run `systemctl daemon-reload && systemctl restart gpusched-web.socket`)", flush=True)
        s.close()
    if bind and held:
        print(f"gpusched-web: warning: [web] names {', '.join(h for h, _ in bind)} port {cfg.web_port}, which "
              f"gpusched-web.socket does not hold: bound here, so that port is free whenever this service is down "
              f"(run `systemctl daemon-reload && systemctl restart gpusched-web.socket` to let systemd hold it)",
              flush=True)
    return use + [listeners.bind(h, p) for h, p in bind]


async def serve(cfg: configmod.Config, tls: ssl.SSLContext | None, socks: list[socket.socket],
                held: int = 0) -> None:
    from aiohttp import web

    from gpusched.web import gate, listeners
    from gpusched.web.daemon import Daemon
    from gpusched.web.server import Dashboard
    # a wildcard listener (0.0.0.0, ::) serves loopback connections too, over its TLS
    wildcard = any(ipaddress.ip_address(a).is_unspecified for a in cfg.web_listen)
    names = far_names(cfg)
    door = gate.Gate(owner)
    dash = Dashboard(Daemon(), cfg.web_port, os.geteuid(), far_names=names,
                     loopback_schemes=("http", "https") if wildcard else ("http",), gate=door)
    # an unread body (a refused form) is drained for at most 2 s before the connection closes
    runner = web.AppRunner(dash.app(), access_log=None, keepalive_timeout=gate.IDLE, lingering_time=2.0)
    await runner.setup()
    for sock in socks:
        await listeners.GatedSite(runner, sock, door, ssl_context=tls if listeners.is_far(sock) else None).start()
    urls = [f"http://localhost:{cfg.web_port}/"] + [f"https://{n}:{cfg.web_port}/ (sign in)" for n in names]
    print(f"gpusched-web: listening on {', '.join(cfg.web_listen)} port {cfg.web_port} ({held} of {len(socks)} "
          f"sockets held by systemd): {', '.join(urls)}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpusched-web", description="gpusched's web dashboard")
    ap.add_argument("--config", default=os.environ.get("GPUSCHED_CONFIG", configmod.DEFAULT_PATH))
    args = ap.parse_args(argv)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"gpusched-web: {e}", file=sys.stderr)
        return 2
    why = refusal(cfg)
    if why:
        print(f"gpusched-web: {why}", file=sys.stderr)
        return 2
    try:
        tls = tls_context(cfg)
    except (ssl.SSLError, OSError) as e:
        print(f"gpusched-web: can't load [web] tls_cert {cfg.web_tls_cert} and tls_key {cfg.web_tls_key}: {e}",
              file=sys.stderr)
        return 2
    from gpusched.web import listeners
    held = listeners.inherited()
    try:
        socks = open_listeners(cfg, held)
    except OSError as e:
        print(f"gpusched-web: can't listen on [web] listen {', '.join(cfg.web_listen)} port {cfg.web_port}: {e}",
              file=sys.stderr)
        return 1
    try:
        asyncio.run(serve(cfg, tls, socks, held=sum(1 for sock in socks if sock in held)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
