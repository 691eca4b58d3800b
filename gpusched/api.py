"""The daemon's D-Bus API on the system bus: org.gpusched1 at /org/gpusched1.

Each method returns one JSON string: {"ok": ...} or {"error": "..."}. The caller's uid comes from the bus
(GetConnectionUnixUser of the sender), never from what the caller says. Everyone sees the queue (ids, users,
names, states, GPUs), as squeue shows it; a job's log path, source file and history only go to its owner
and root; acting on a job needs its owner, root or the admin group.

Every reply is bounded in bytes: the bus disconnects a peer that sends a message over its limit (32 MiB by
default on the system bus), and what a listing holds is written by users. ListPage cuts pages at PAGE_BYTES
(clients follow "last"), a listing entry is at most listing.MAX_ENTRY, and any reply over MAX_REPLY is
replaced by an error that says it was too large. The JSON is ASCII (non-ASCII is escaped), so its length
in characters is its size in bytes.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any, Callable

from gpusched import journal
from gpusched.errors import Refused
from gpusched.listing import PRIVATE_FIELDS, printable, to_json
from gpusched.model import job_to_dict

if TYPE_CHECKING:
    from gpusched.daemon import Daemon

BUS_NAME = "org.gpusched1"
OBJECT_PATH = "/org/gpusched1"
PAGE = 5000              # jobs per listing page at most (bounds the time one call takes)
PAGE_BYTES = 4 << 20     # bytes of jobs per listing page at most (then the client asks for the next page)
MAX_REPLY = 8 << 20      # bytes of any one reply; a quarter of dbus-daemon's default max_message_size
MAX_PIDS = 64            # foreign pids listed per GPU


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
        <method name="CancelNow"><arg type="t" name="id" direction="in"/><arg type="s" direction="out"/></method>
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

    def _answer(self, method: str, fn: Callable[[], str]) -> str:
        """Run one request: its own errors become {"error": ...}; a bug is logged and answered as one, never
        as the caller's mistake; a reply over MAX_REPLY becomes an error instead of a dropped connection."""
        try:
            text = fn()
        except Exception as e:  # noqa: BLE001 - the daemon answers every call
            if _refusal(e):
                text = to_json({"error": str(e.args[0] if e.args else e)})
            else:
                journal.send(printable(f"internal error in {method}: {traceback.format_exc()}", keep="\n"), 3,
                             SYSLOG_IDENTIFIER="gpusched")
                text = to_json({"error": f"internal error in gpusched while answering {method}; "
                                         f"its journal (journalctl -u gpusched) says more"})
        if len(text) > MAX_REPLY:
            text = to_json({"error": f"the answer to {method} is too large to send ({len(text)} bytes; the "
                                     f"limit is {MAX_REPLY})"})
        return text

    def _call(self, method: str, fn: Callable[[], Any]) -> str:
        return self._answer(method, lambda: to_json({"ok": fn()}))

    def List(self, all: bool, dbus_context: Any = None) -> str:
        """{"last": ..., "ok": [job, ...]}: queued and running jobs (all: finished ones too), each as its status
        file: ListPage's first page (a bus message has a size limit)."""
        return self.ListPage(all, 0, False, dbus_context=dbus_context)

    def ListPage(self, all: bool, after: int, table: bool, dbus_context: Any = None) -> str:
        """Jobs with ids above `after`, at most PAGE of them and PAGE_BYTES of text, as a JSON array or as
        table rows (rendered here, cached per job between changes). {"last": id of the last job given, 0 when
        no more; "ok": ...}."""
        def page() -> str:
            caller = self._caller(dbus_context)
            jobs = self._d.jobs if all else self._d.live
            ids = sorted(i for i in jobs if i > after)
            sees_all = caller == 0 or self._d.is_admin(caller)
            text, last = self._d.listing.page((jobs[i] for i in ids), sees_all, caller, table, not after,
                                              PAGE_BYTES, PAGE)
            return '{"last": %d, "ok": %s}' % (last or 0, text)
        return self._answer("ListPage", page)

    def Show(self, id: int, dbus_context: Any = None) -> str:
        def show() -> str:
            caller = self._caller(dbus_context)
            if id not in self._d.jobs:
                raise LookupError(f"no job {id}")
            d = self._view(id, caller)
            text = to_json({"ok": d})
            if len(text) > MAX_REPLY and "spec" in d:          # the rest is bounded; say why spec is missing
                del d["spec"]
                d["truncated"] = (f"the job file's contents are left out: with them the answer is {len(text)} "
                                  f"bytes, over the limit of {MAX_REPLY}")
                text = to_json({"ok": d})
            return text
        return self._answer("Show", show)

    def Cancel(self, id: int, dbus_context: Any = None) -> str:
        return self._call("Cancel", lambda: self._d.cancel(id, self._caller(dbus_context)))

    def CancelNow(self, id: int, dbus_context: Any = None) -> str:
        """Cancel without the grace: every process of the job gets SIGKILL at once (owner, root or admin)."""
        return self._call("CancelNow", lambda: self._d.cancel(id, self._caller(dbus_context), now=True))

    def Gpus(self, dbus_context: Any = None) -> str:
        def gpus() -> dict[str, Any]:
            table = self._d.gpu_table()
            for g in table:
                pids = g.get("foreign_pids") or []
                if len(pids) > MAX_PIDS:
                    g["foreign_pids"], g["foreign_pids_more"] = pids[:MAX_PIDS], len(pids) - MAX_PIDS
            return {"gpus": table, "simulated": self._d.probe.simulated, "error": self._d.gpu_error}
        return self._call("Gpus", gpus)

    def Status(self, dbus_context: Any = None) -> str:
        return self._call("Status", self._d.status_line)

    def Stats(self, dbus_context: Any = None) -> str:
        return self._call("Stats", self._d.stats_snapshot)

    def Lookup(self, source: str, inode: int, dbus_context: Any = None) -> str:
        return self._call("Lookup", lambda: self._d.lookup(self._caller(dbus_context), source, inode))


def _refusal(e: Exception) -> bool:
    """An answer for the caller: errors.Refused, or (until the daemon raises only those) exactly one of the
    builtins it raised before, never a subclass such as KeyError, which is a bug's."""
    return isinstance(e, Refused) or type(e) in (LookupError, PermissionError, ValueError)


def publish(bus: Any, daemon: Daemon) -> Any:
    """Register the API object, then take the bus name (not replaceable: only the daemon may hold it).
    Returns the publication: its __exit__ undoes both."""
    from pydbus.publication import Publication
    return Publication(bus, BUS_NAME, (OBJECT_PATH, Api(daemon, bus)), allow_replacement=False)
