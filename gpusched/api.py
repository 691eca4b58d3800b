"""The daemon's D-Bus API on the system bus: org.gpusched1 at /org/gpusched1.

Each method returns one JSON string: {"ok": ...} or {"error": "..."}. The caller's uid comes from the bus
(GetConnectionUnixUser of the sender), never from what the caller says. Everyone sees the queue (ids, users,
names, states, GPUs), as squeue shows it; a job's log path, source file and history only go to its owner
and root; acting on a job needs its owner, root or the admin group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpusched.listing import PRIVATE_FIELDS, to_json
from gpusched.model import job_to_dict

if TYPE_CHECKING:
    from gpusched.daemon import Daemon

BUS_NAME = "org.gpusched1"
PAGE = 5000              # jobs per listing message: well under the bus's message size limit
OBJECT_PATH = "/org/gpusched1"


class Api:
    """
    <node>
      <interface name="org.gpusched1.Manager">
        <method name="List"><arg type="b" name="all" direction="in"/><arg type="s" direction="out"/></method>
        <method name="ListPage">
          <arg type="b" name="all" direction="in"/><arg type="t" name="after" direction="in"/>
          <arg type="b" name="table" direction="in"/><arg type="s" direction="out"/>
        </method>
        <method name="Show"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Cancel"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
        <method name="Gpus"><arg type="s" direction="out"/></method>
        <method name="Status"><arg type="s" direction="out"/></method>
        <method name="Stats"><arg type="s" direction="out"/></method>
        <method name="Lookup">
          <arg type="s" name="source" direction="in"/><arg type="t" name="inode" direction="in"/>
          <arg type="s" direction="out"/>
        </method>
      </interface>
    </node>
    """

    def __init__(self, daemon: Daemon, bus: Any):
        self._d = daemon
        self._dbus = bus.get("org.freedesktop.DBus", "/org/freedesktop/DBus")

    def _caller(self, ctx: Any) -> int:
        return int(self._dbus.GetConnectionUnixUser(ctx.sender))

    def _view(self, job_id: int, caller: int) -> dict[str, Any]:
        job = self._d.jobs[job_id]
        d = job_to_dict(job)
        if caller not in (0, job.uid) and not self._d.may_act(caller, job):
            for key in PRIVATE_FIELDS:
                d.pop(key, None)
        elif job.spec is not None:
            spec = job.spec.to_dict()
            spec.pop("env", None) if caller not in (0, job.uid) else None
            d["spec"] = spec
        return d

    def _call(self, fn: Any) -> str:
        try:
            return to_json({"ok": fn()})
        except (LookupError, PermissionError, ValueError) as e:
            return to_json({"error": str(e.args[0] if e.args else e)})

    def _jobs(self, all: bool, after: int = 0, limit: int | None = None) -> list[Any]:
        jobs = self._d.jobs if all else self._d.live
        ids = sorted(i for i in jobs if i > after) if after else sorted(jobs)
        return [jobs[i] for i in (ids if limit is None else ids[:limit])]

    def List(self, all: bool, dbus_context: Any = None) -> str:
        """{"last": ..., "ok": [job, ...]}: queued and running jobs (all: finished ones too), each as its status
        file. At most PAGE jobs, as ListPage's first page: a bus message has a size limit."""
        return self.ListPage(all, 0, False, dbus_context=dbus_context)

    def ListPage(self, all: bool, after: int, table: bool, dbus_context: Any = None) -> str:
        """Up to PAGE jobs with ids above `after`, as a JSON array or as table rows (rendered here, cached
        per job between changes). {"ok": ..., "last": id of the last job given, 0 when no more}."""
        caller = self._caller(dbus_context)
        page = self._jobs(all, after, PAGE + 1)
        more = len(page) > PAGE
        page = page[:PAGE]
        last = page[-1].id if more else 0
        if table:
            return to_json({"ok": self._d.listing.table(page, header=not after), "last": last})
        sees_all = caller == 0 or self._d.is_admin(caller)
        return '{"last": %d, "ok": %s}' % (last, self._d.listing.json(page, sees_all, caller))

    def Show(self, id: int, dbus_context: Any = None) -> str:
        caller = self._caller(dbus_context)

        def show() -> dict[str, Any]:
            if id not in self._d.jobs:
                raise LookupError(f"no job {id}")
            return self._view(id, caller)
        return self._call(show)

    def Cancel(self, id: int, dbus_context: Any = None) -> str:
        caller = self._caller(dbus_context)
        return self._call(lambda: self._d.cancel(id, caller))

    def Gpus(self, dbus_context: Any = None) -> str:
        return self._call(lambda: {"gpus": self._d.gpu_table(), "simulated": self._d.probe.simulated,
                                   "error": self._d.gpu_error})

    def Status(self, dbus_context: Any = None) -> str:
        return self._call(self._d.status_line)

    def Stats(self, dbus_context: Any = None) -> str:
        return self._call(self._d.stats_snapshot)

    def Lookup(self, source: str, inode: int, dbus_context: Any = None) -> str:
        caller = self._caller(dbus_context)
        return self._call(lambda: self._d.lookup(caller, source, inode))


def publish(bus: Any, daemon: Daemon) -> Any:
    return bus.publish(BUS_NAME, (OBJECT_PATH, Api(daemon, bus)))
