"""gpusched-web: `python3 -m gpusched.web` (gpusched-web.service runs it as the gpusched-web user)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys

from gpusched import config as configmod


def refusal(cfg: configmod.Config) -> str:
    """Why the dashboard won't start with this config ("" if it will)."""
    if os.geteuid() == 0:
        return "gpusched-web never runs as root (gpusched-web.service runs it as its own user)"
    far = [a for a in cfg.web_listen if not ipaddress.ip_address(a).is_loopback]
    if far:
        return (f"[web] listen names {', '.join(far)}, which is not loopback: only loopback is built (the kernel "
                f"says who owns a loopback connection; a login for other addresses is not built, docs/web.md)")
    return ""


async def serve(cfg: configmod.Config) -> None:
    from aiohttp import web

    from gpusched.web.daemon import Daemon
    from gpusched.web.server import Dashboard
    dash = Dashboard(Daemon(), cfg.web_port, os.geteuid())
    runner = web.AppRunner(dash.app(), access_log=None)
    await runner.setup()
    for address in cfg.web_listen:
        await web.TCPSite(runner, address, cfg.web_port, reuse_address=True).start()
    print(f"gpusched-web: listening on {', '.join(cfg.web_listen)} port {cfg.web_port}: "
          f"http://localhost:{cfg.web_port}/", flush=True)
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
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"gpusched-web: can't listen: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
