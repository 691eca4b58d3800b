"""The simulator's output: a table for people, one JSON object for tools, the target check, and the plot."""

from __future__ import annotations

import statistics
from typing import Mapping, Sequence

from bench.sim import png

Results = Mapping[str, Mapping[str, float]]            # policy -> metric -> value

COLUMNS = [("mean_jct_s", "mean JCT", "h"), ("median_jct_s", "median", "h"), ("p99_jct_s", "p99 JCT", "h"),
           ("mean_wait_s", "mean wait", "h"), ("p99_wait_s", "p99 wait", "h"), ("max_wait_s", "max wait", "h"),
           ("bsld", "bsld", ""), ("util_backlogged", "util busy", ""), ("jain_daily", "Jain/day", ""),
           ("user_bsld_max_over_min", "user sld max/min", ""), ("mean_jct_1gpu_s", "JCT 1-GPU", "h"),
           ("mean_jct_multi_gpu_s", "JCT multi", "h"), ("preemptions", "preempts", ""),
           ("lost_gpu_hours", "lost GPU-h", ""), ("useful_gpu_hours", "useful GPU-h", "")]


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "h":
        return f"{value / 3600:.2f}"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3f}"


def table(results: Results) -> str:
    """Markdown: one row per policy; times in hours."""
    head = ["policy"] + [f"{label} ({unit})" if unit else label for _, label, unit in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for policy, m in results.items():
        lines.append("| " + " | ".join([policy] + [_cell(m.get(k), unit) for k, _, unit in COLUMNS]) + " |")
    return "\n".join(lines)


def mean_over(runs: Sequence[Results]) -> dict[str, dict[str, float]]:
    """The mean of each metric over runs (seeds)."""
    out: dict[str, dict[str, float]] = {}
    for policy in runs[0]:
        out[policy] = {k: statistics.fmean(r[policy][k] for r in runs) for k in runs[0][policy]
                       if all(k in r[policy] for r in runs)}
    return out


def targets(r: Results, load: float) -> list[tuple[str, bool, str]]:
    """Issue 8's targets for gpusched's default against FIFO + EASY in the same run: (what, met, numbers)."""
    g, e = r.get("gpusched"), r.get("easy")
    if not g or not e:
        return []
    out = []
    if load == 0.9:
        out.append(("mean JCT <= 1/3 of EASY's", g["mean_jct_s"] <= e["mean_jct_s"] / 3,
                    f"{g['mean_jct_s'] / 3600:.2f} h vs {e['mean_jct_s'] / 3 / 3600:.2f} h"))
        out.append(("max wait <= 1.25x EASY's", g["max_wait_s"] <= 1.25 * e["max_wait_s"],
                    f"{g['max_wait_s'] / 3600:.0f} h vs {1.25 * e['max_wait_s'] / 3600:.0f} h"))
        out.append(("GPU-hours lost <= 5% of useful", g["lost_gpu_hours"] <= 0.05 * g["useful_gpu_hours"],
                    f"{g['lost_gpu_hours']:.0f} vs {0.05 * g['useful_gpu_hours']:.0f}"))
        out.append(("utilisation while jobs wait >= EASY's - 0.02",
                    g["util_backlogged"] >= e["util_backlogged"] - 0.02,
                    f"{g['util_backlogged']:.3f} vs {e['util_backlogged'] - 0.02:.3f}"))
        out.append(("per-day Jain >= EASY's", g["jain_daily"] >= e["jain_daily"],
                    f"{g['jain_daily']:.3f} vs {e['jain_daily']:.3f}"))
    else:
        out.append(("mean JCT <= EASY's", g["mean_jct_s"] <= e["mean_jct_s"],
                    f"{g['mean_jct_s'] / 3600:.2f} h vs {e['mean_jct_s'] / 3600:.2f} h"))
        out.append(("max wait <= EASY's", g["max_wait_s"] <= e["max_wait_s"],
                    f"{g['max_wait_s'] / 3600:.0f} h vs {e['max_wait_s'] / 3600:.0f} h"))
    if "oracle" in r:
        o = r["oracle"]
        out.append(("(with resumable jobs) mean JCT <= 4x the oracle's", g["mean_jct_s"] <= 4 * o["mean_jct_s"],
                    f"{g['mean_jct_s'] / 3600:.2f} h vs {4 * o['mean_jct_s'] / 3600:.2f} h"))
    return out


def plot(path: str, title: str, by_load: Mapping[float, Sequence[Results]]) -> None:
    """Mean JCT, mean wait and max wait by policy and load: bars are the mean over seeds, whiskers the range."""
    loads = sorted(by_load)
    policies = list(by_load[loads[0]][0])
    panels = []
    for key, name in (("mean_jct_s", "mean JCT (h)"), ("mean_wait_s", "mean wait (h)"), ("max_wait_s", "max wait (h)")):
        values = []
        for load in loads:
            row = []
            for p in policies:
                v = [r[p][key] / 3600 for r in by_load[load]]
                row.append((statistics.fmean(v), min(v), max(v)))
            values.append(row)
        panels.append((name, values))
    png.bar_panels(path, title, [f"load {x:g}" for x in loads], policies, panels)
