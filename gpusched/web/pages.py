"""The dashboard's pages as HTML, from the daemon's answers: pure functions, no I/O.

Every value that came from the daemon (job names, users, reasons, tags, file contents: all written by users)
goes into the page through `e()` (html.escape, quotes included), also inside attributes; nothing is ever
inserted as markup. Control characters are written as escapes (listing.printable), as the CLI does. Pages
carry no inline script (the Content-Security-Policy forbids it): the little JavaScript is /static/app.js.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any, Iterable
from urllib.parse import urlencode

from gpusched.listing import printable
from gpusched.units import format_size

PAGE_ROWS = 100                   # queue rows per page
LIVE = ("queued", "starting", "running", "stopping")
ACTIONS = {                       # what a job's page offers, by state: (verb, label)
    "queued": (("cancel", "Cancel"), ("hold", "Hold"), ("release", "Release")),
    "starting": (("cancel", "Cancel"), ("requeue", "Requeue")),
    "running": (("cancel", "Cancel"), ("cancel-now", "Kill now"), ("requeue", "Requeue")),
    "stopping": (("cancel-now", "Kill now"),),
}


def e(value: Any) -> str:
    """A value for HTML text or a quoted attribute: control characters escaped, then &<>"' escaped."""
    return html.escape(printable(str(value), keep="\n\t"), quote=True)


class Viewer:
    """Who the page is for: an established uid (name, admin) or the public (uid None). `far`: a connection
    from beyond loopback, where a person signs in with a password (a session, which they can end)."""

    def __init__(self, uid: int | None, name: str = "", admin: bool = False, token: str = "", far: bool = False):
        self.uid, self.name, self.admin, self.token, self.far = uid, name, admin, token, far

    @property
    def signed_in(self) -> bool:
        return self.uid is not None

    def may_act(self, job: dict[str, Any]) -> bool:
        return self.signed_in and (self.admin or job.get("uid") == self.uid)


def layout(title: str, body: str, viewer: Viewer, active: str = "") -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if key == active else ""}>{label}</a>'
                  for key, href, label in (("gpus", "/", "GPUs"), ("queue", "/queue", "Queue"),
                                           ("usage", "/usage", "Usage"), ("submit", "/submit", "Submit")))
    out = (f'<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" '
           f'value="{e(viewer.token)}"><button id="logout">sign out</button></form>' if viewer.far else "")
    who = (f'<span class="who">signed in as <b>{e(viewer.name)}</b>{" (admin)" if viewer.admin else ""}'
           f'{out}</span>' if viewer.signed_in else
           '<span class="who public">not signed in</span>' if viewer.far else
           '<span class="who public">public view: who you are is not known on this connection</span>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · gpusched</title><link rel="stylesheet" href="/static/style.css">'
            f'<script src="/static/app.js" defer></script></head><body>'
            f'<header><span class="brand">gpusched</span><nav>{nav}</nav>{who}</header>'
            f'<main><h1>{e(title)}</h1>{body}</main></body></html>')


def error_page(status: int, message: str, viewer: Viewer) -> str:
    return layout(f"{status}", f'<p class="error" id="error">{e(message)}</p>', viewer)


def _time(value: Any) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(str(value)).strftime("%m-%d %H:%M:%S")
    except ValueError:
        return e(value)


def _gpus(job: dict[str, Any]) -> str:
    gpus = job.get("gpus") or []
    if gpus:
        return ",".join(str(g.get("index")) for g in gpus)
    n = job.get("gpus_requested")
    return f"({n})" if n else "-"


# --- GPUs -------------------------------------------------------------------------------------------------

def sparkline(points: list[list[Any]], now: float, width: int = 120, height: int = 24) -> str:
    """The last hour's utilisation as an inline SVG polyline (gaps where nothing was sampled)."""
    if not points:
        return '<span class="muted">no samples</span>'
    span = 3600.0
    segs: list[list[str]] = [[]]
    last_t = None
    for t, util, _mem in points:
        if util is None or (last_t is not None and t - last_t > 90):
            segs.append([])
        if util is not None:
            x = max(0.0, width * (1 - (now - t) / span))
            y = height - 1 - (height - 2) * max(0.0, min(100.0, util)) / 100.0
            segs[-1].append(f"{x:.1f},{y:.1f}")
        last_t = t
    lines = "".join(f'<polyline points="{" ".join(s)}"/>' for s in segs if s)
    latest = next((p[1] for p in reversed(points) if p[1] is not None), None)
    label = f"last hour, latest {latest:.0f}%" if latest is not None else "last hour"
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<title>{e(label)}</title>{lines}</svg>')


def gpus_page(info: dict[str, Any], history: dict[str, Any], now: float, viewer: Viewer) -> str:
    rows = []
    for g in info.get("gpus") or []:
        total = g.get("memory_total") or 0
        used = total - (g.get("memory_free") or 0)
        job = g.get("job")
        holder = f'<a href="/jobs/{int(job)}">job {int(job)}</a>' if job else ""
        state = e(g.get("state", ""))
        foreign = ", ".join(f'{e(p.get("user", "?"))} (pid {e(p.get("pid", "?"))}, {e(p.get("command", ""))})'
                            for p in (g.get("foreign") or [])[:8])
        rows.append(f'<tr><td>{e(g.get("index"))}</td><td>{e(g.get("name", ""))}</td>'
                    f'<td>{e(format_size(used))} / {e(format_size(total))}</td>'
                    f'<td>{sparkline(history.get(str(g.get("index")), []), now)}</td>'
                    f'<td>{state} {holder}</td><td>{foreign}</td></tr>')
    note = " (simulated)" if info.get("simulated") else ""
    err = f'<p class="error">{e(info["error"])}</p>' if info.get("error") else ""
    body = (f'{err}<p>{len(rows)} GPU(s){note}. Utilisation is sampled while jobs hold a GPU.</p>'
            f'<table id="gpus"><tr><th>#</th><th>model</th><th>memory used / total</th><th>utilisation</th>'
            f'<th>held by</th><th>foreign processes</th></tr>{"".join(rows)}</table>')
    return layout("GPUs", body, viewer, "gpus")


# --- the queue --------------------------------------------------------------------------------------------

def filter_jobs(jobs: Iterable[dict[str, Any]], user: str = "", state: str = "", tag: str = "") -> list[dict]:
    out = []
    for j in jobs:
        if user and j.get("user") != user:
            continue
        if state and (j.get("state") != state and not (state == "held" and j.get("held"))):
            continue
        if tag and tag not in (j.get("tags") or ()):
            continue
        out.append(j)
    return out


def fold(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An array's jobs as one row (as `gpuschedctl list` folds them): the first element's, with "count"
    and "states" ({state: n}); jobs alone as they are."""
    out: list[dict[str, Any]] = []
    arrays: dict[int, dict[str, Any]] = {}
    for j in jobs:
        aid = j.get("array_id")
        if not aid:
            out.append(j)
            continue
        row = arrays.get(aid)
        if row is None:
            row = arrays[aid] = dict(j, id=aid, count=0, states={}, name=str(j.get("name", "")).split("[")[0])
            out.append(row)
        row["count"] += 1
        st = "held" if j.get("held") else j.get("state", "")
        row["states"][st] = row["states"].get(st, 0) + 1
    return out


def queue_page(jobs: list[dict[str, Any]], viewer: Viewer, user: str = "", state: str = "", tag: str = "",
               page: int = 1, expand: bool = False, all: bool = False) -> str:
    shown = filter_jobs(jobs, user, state, tag)
    rows_all = shown if expand else fold(shown)
    pages = max(1, math.ceil(len(rows_all) / PAGE_ROWS))
    page = min(max(1, page), pages)
    rows = []
    for j in rows_all[(page - 1) * PAGE_ROWS:page * PAGE_ROWS]:
        jid = int(j["id"])
        if "count" in j:
            st = ", ".join(f"{n} {e(s)}" for s, n in j["states"].items())
            link, state_cell = f'{jid}[{j["count"]}]', st
        else:
            link, state_cell = str(jid), e(j.get("state", "")) + (" (held)" if j.get("held") else "")
        mine = ' class="mine"' if viewer.signed_in and j.get("uid") == viewer.uid else ""
        rows.append(f'<tr{mine}><td><a href="/jobs/{jid}">{link}</a></td><td>{state_cell}</td>'
                    f'<td>{e(j.get("user", ""))}</td><td>{e(j.get("name", ""))}</td>'
                    f'<td>{e(j.get("class", ""))}</td><td>{e(_gpus(j))}</td>'
                    f'<td>{_time(j.get("submitted"))}</td><td>{_time(j.get("started"))}</td>'
                    f'<td class="reason">{e(str(j.get("reason") or "")[:300])}</td></tr>')
    keep = {"user": user, "state": state, "tag": tag, "expand": "1" if expand else "", "all": "1" if all else ""}
    keep = {k: v for k, v in keep.items() if v}

    def link(n: int, label: str) -> str:
        return f'<a href="/queue?{e(urlencode(dict(keep, page=n)))}">{label}</a>'

    nav = (f'<p class="pager">page {page} of {pages} ({len(rows_all)} rows, {len(shown)} jobs) '
           f'{link(page - 1, "&larr; previous") if page > 1 else ""} '
           f'{link(page + 1, "next &rarr;") if page < pages else ""}</p>')
    states = ("", "queued", "held", "running", "stopping", "succeeded", "failed", "cancelled")
    options = "".join(f'<option value="{s}"{" selected" if s == state else ""}>{s or "any state"}</option>'
                      for s in states)
    form = (f'<form class="filters" method="get" action="/queue">'
            f'<label>user <input name="user" value="{e(user)}" size="10"></label> '
            f'<label>state <select name="state">{options}</select></label> '
            f'<label>tag <input name="tag" value="{e(tag)}" size="10"></label> '
            f'<label><input type="checkbox" name="expand" value="1"{" checked" if expand else ""}> arrays '
            f'expanded</label> <label><input type="checkbox" name="all" value="1"{" checked" if all else ""}> '
            f'finished too</label> <button>filter</button></form>')
    body = (f'{form}{nav}<table id="queue"><tr><th>id</th><th>state</th><th>user</th><th>name</th>'
            f'<th>class</th><th>GPUs</th><th>submitted</th><th>started</th><th>reason</th></tr>'
            f'{"".join(rows)}</table>')
    return layout("Queue", body, viewer, "queue")


# --- a job ------------------------------------------------------------------------------------------------

def bars(items: list[tuple[str, float]], unit: str, width: int = 360) -> str:
    """A small horizontal bar chart as inline SVG (values >= 0)."""
    top = max([v for _, v in items] + [1e-9])
    rows = []
    for i, (label, v) in enumerate(items):
        w = (width - 150) * v / top
        y = i * 22
        rows.append(f'<text x="0" y="{y + 15}">{e(label)}</text><rect x="110" y="{y + 3}" width="{w:.1f}" '
                    f'height="15"/><text x="{115 + w:.1f}" y="{y + 15}">{v:.3g} {e(unit)}</text>')
    return (f'<svg class="bars" width="{width}" height="{22 * len(items) + 4}" role="img">'
            f'{"".join(rows)}</svg>')


def job_page(job: dict[str, Any], viewer: Viewer) -> str:
    jid = int(job["id"])
    fields = [("state", job.get("state")), ("user", job.get("user")), ("name", job.get("name")),
              ("class", job.get("class")), ("GPUs", _gpus(job)), ("priority", job.get("priority")),
              ("tags", ", ".join(job.get("tags") or []) or None), ("submitted", _time(job.get("submitted"))),
              ("started", _time(job.get("started"))), ("ended", _time(job.get("ended"))),
              ("exit code", job.get("exit_code")), ("signal", job.get("signal")), ("outcome", job.get("outcome")),
              ("attempt", job.get("attempt")), ("preemptions", job.get("preemptions")),
              ("reason", job.get("reason")), ("held", "yes" if job.get("held") else None),
              ("array", f'{job["array_id"]}[{job.get("array_index")}]' if job.get("array_id") else None),
              ("job file", job.get("source"))]
    dl = "".join(f"<dt>{k}</dt><dd>{e(v)}</dd>" for k, v in fields if v not in (None, "", []))
    parts = [f'<dl class="job" id="status">{dl}</dl>']
    if job.get("truncated"):
        parts.append(f'<p class="muted">{e(job["truncated"])}</p>')
    if viewer.may_act(job):
        buttons = "".join(
            f'<form method="post" action="/jobs/{jid}/{verb}" class="act"><input type="hidden" name="csrf" '
            f'value="{e(viewer.token)}"><button name="do" value="{verb}" id="do-{verb}">{label}</button></form>'
            for verb, label in ACTIONS.get(str(job.get("state")), ()))
        parts.append(f'<div class="actions">{buttons}<a class="button" href="/submit?clone={jid}" id="clone">'
                     f'Clone</a></div>')
    history = job.get("history")
    if history:
        rows = "".join(f'<tr><td>{i + 1}</td><td>{_time(h.get("started"))}</td><td>{_time(h.get("ended"))}</td>'
                       f'<td>{e(",".join(str(g) for g in h.get("gpus", [])) if isinstance(h.get("gpus"), list) else h.get("gpus", ""))}</td>'
                       f'<td>{e(h.get("outcome") or h.get("end") or "")}</td><td>{e(h.get("reason") or "")}</td></tr>'
                       for i, h in enumerate(history))
        parts.append(f'<h2>Attempts</h2><table id="history"><tr><th>#</th><th>started</th><th>ended</th>'
                     f'<th>GPUs</th><th>end</th><th>reason</th></tr>{rows}</table>')
    usage = job.get("usage")
    if usage:
        items = [("reserved", float(usage.get("gpu_hours_reserved", 0))),
                 ("used", float(usage.get("gpu_hours_used", 0)))]
        extra = []
        if "energy_joules" in usage:
            extra.append(f'energy {float(usage["energy_joules"]) / 3.6e6:.3f} kWh'
                         f'{" (estimated)" if usage.get("energy_estimated") else ""}')
        if usage.get("gpu_memory_peak"):
            extra.append(f'peak GPU memory {e(format_size(int(usage["gpu_memory_peak"])))}')
        if job.get("memory_peak"):
            extra.append(f'peak RAM {e(format_size(int(job["memory_peak"])))}')
        parts.append(f'<h2>Accounting</h2><div id="usage">{bars(items, "GPU-h")}<p>{"; ".join(extra)}</p></div>')
    if viewer.may_act(job) and job.get("state") != "rejected":
        live = job.get("state") in LIVE
        parts.append(f'<h2>Log</h2><p class="muted" id="log-state">{"following" if live else "ended"}</p>'
                     f'<pre id="log" data-src="/jobs/{jid}/log"></pre>')
    elif not viewer.may_act(job):
        parts.append('<p class="muted" id="no-log">The log, the job file and the accounting are shown to the '
                     'job\'s owner, root and admins only.</p>')
    return layout(f"Job {jid}: {job.get('name', '')}", "".join(parts), viewer, "queue")


# --- submit -------------------------------------------------------------------------------------------------

EXAMPLE = '''command = """
nvidia-smi
python train.py --epochs 10
"""
gpus = 1
time_limit = "1h"
'''


def submit_page(viewer: Viewer, text: str = EXAMPLE, problems: str = "", done: str = "") -> str:
    if not viewer.signed_in:
        return layout("Submit", '<p class="error" id="error">Submitting needs to know who you are: open the '
                      'dashboard through a loopback connection of your own (ssh -L, docs/web.md).</p>', viewer,
                      "submit")
    err = f'<pre class="error" id="problems">{e(problems)}</pre>' if problems else ""
    ok = f'<p class="ok" id="submitted">{done}</p>' if done else ""
    body = (f'{ok}{err}<p>A job file (the format of docs/jobfile.md, with the same checks as '
            f'<code>gpuschedctl submit</code>), run as <b>{e(viewer.name)}</b>.</p>'
            f'<form method="post" action="/submit"><input type="hidden" name="csrf" value="{e(viewer.token)}">'
            f'<label>name for the file <input name="stem" value="web" size="20"></label><br>'
            f'<textarea name="text" id="jobfile" rows="18" cols="90" spellcheck="false">{e(text)}</textarea><br>'
            f'<button id="do-submit">Submit</button></form>')
    return layout("Submit", body, viewer, "submit")


# --- signing in (beyond loopback) -------------------------------------------------------------------------------

def login_page(token: str, user: str = "", problem: str = "", after: str = "/") -> str:
    """The sign-in form: a user name and a password, checked by the server's PAM (docs/web.md); `after`: the
    page to go back to (login.landing has checked it is one of ours)."""
    err = f'<p class="error" id="error">{e(problem)}</p>' if problem else ""
    body = (f'{err}<p>Sign in with your account on this server (your login password).</p>'
            f'<form method="post" action="/login" class="login"><input type="hidden" name="csrf" '
            f'value="{e(token)}"><input type="hidden" name="next" value="{e(after)}">'
            f'<label>user <input name="user" id="user" value="{e(user)}" size="20" '
            f'maxlength="32" autocomplete="username" autocapitalize="none" required></label><br>'
            f'<label>password <input type="password" name="password" id="password" size="20" '
            f'autocomplete="current-password" required></label><br><button id="do-login">Sign in</button></form>'
            f'<p class="muted">From the server itself, or through <code>ssh -L</code>, no password is needed: '
            f'see docs/web.md.</p>')
    return layout("Sign in", body, Viewer(None, far=True))


# --- usage ----------------------------------------------------------------------------------------------------

def usage_page(rows: list[dict[str, Any]], viewer: Viewer, since: str) -> str:
    links = " ".join(f'<a href="/usage?since={s}"{" class=on" if s == since else ""}>{label}</a>'
                     for s, label in (("1d", "last day"), ("7d", "last week")))
    if not viewer.signed_in:
        return layout("Usage", f'<p>{links}</p><p class="muted">Accounting is private (as `gpuschedctl stats`): '
                      f'shown to each user for their own jobs, to admins for all.</p>', viewer, "usage")
    if not rows:
        chart = '<p class="muted" id="usage-empty">no jobs in this period</p>'
    else:
        items = []
        for r in rows[:50]:
            items += [(f'{r["user"]} reserved', float(r.get("gpu_hours_reserved", 0))),
                      (f'{r["user"]} used', float(r.get("gpu_hours_used", 0)))]
        chart = bars(items, "GPU-h", 520)
        chart += "".join(f'<p>{e(r["user"])}: {e(r.get("jobs", 0))} finished, {e(r.get("running", 0))} running'
                         f'</p>' for r in rows[:50])
    return layout("Usage", f'<p>{links}</p><div id="usage-chart">{chart}</div>', viewer, "usage")
