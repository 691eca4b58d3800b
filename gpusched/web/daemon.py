"""The dashboard's bus client: the daemon's answers as Python values, called from asyncio in a small thread
pool (pydbus is synchronous). `public` calls are made as the web service's own user (what everyone sees);
`as_user` calls go through org.gpusched1.Web's WebCall for an established uid (webcalls.py in the daemon).

Nothing here runs unless a request needs it: an idle dashboard makes no call (docs/web.md)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CALL_TIMEOUT = 30.0


class DaemonError(Exception):
    """The daemon refused (its message, for the person) or can't be reached."""


class Daemon:
    def __init__(self, bus_factory: Any = None):
        self._factory = bus_factory or _system_bus
        self._api: Any = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bus")

    def _proxy(self) -> Any:
        if self._api is None:
            self._api = self._factory()
        return self._api

    def _call_sync(self, method: str, *args: Any) -> Any:
        try:
            raw = getattr(self._proxy(), method)(*args, timeout=CALL_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - a bus error: the daemon is down or restarting
            self._api = None                              # a fresh proxy next time (the daemon may be back)
            raise DaemonError(f"gpusched did not answer ({type(e).__name__}: {str(e)[:300]})") from None
        reply = json.loads(raw)
        if "error" in reply:
            raise DaemonError(reply["error"])
        return reply

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call_sync, method, *args)

    async def public_page(self, all: bool = False) -> list[dict[str, Any]]:
        """Every job as everyone sees it (ListPage as this service's own, unprivileged user), all pages."""
        return await self._pages(lambda after: self.call("ListPage", all, after, False))

    async def user_page(self, uid: int, all: bool = False) -> list[dict[str, Any]]:
        """Every job as `uid` sees it (its own in full)."""
        return await self._pages(lambda after: self.as_user(uid, "page", all, after))

    async def _pages(self, get: Any) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        after = 0
        while True:
            reply = await get(after)
            jobs.extend(reply["ok"])
            after = reply.get("last") or 0
            if not after:
                return jobs

    async def as_user(self, uid: int, verb: str, *args: Any) -> Any:
        """`verb` for `uid` (webcalls.py); the daemon's refusal raises DaemonError with its words."""
        return (await self.call("WebCall", uid, verb, json.dumps(list(args))))["ok"]

    async def gpus(self) -> dict[str, Any]:
        return (await self.call("Gpus"))["ok"]


def _system_bus() -> Any:
    from pydbus import SystemBus
    return SystemBus().get("org.gpusched1", "/org/gpusched1")
