"""A timeline of a history: acknowledged publishes and deliveries per time bin, the faults
(shaded from start to end), the unavailability windows (one band per client) and, when the
topology's facts were merged (``f: "node"`` records), one lane per node with its events
(lock acquired, recovered, listening, role) and the supervisor's (a node's endpoints open),
so a reader sees where a takeover's time went; below the picture, each fault's phases.

The default is a self-contained HTML page with an inline SVG, written with the standard
library; ``.png`` draws the same with matplotlib, the optional extra ``plot``
(``pip install mqemu[plot]``), imported only then.
"""

from __future__ import annotations

import html
import os
from typing import Any

from .checker import Verdict, describe_fact

WIDTH, HEIGHT, LEFT, TOP, PLOT_H = 960, 360, 60, 30, 220
SERIES = (("enqueue", "#1f77b4", "acknowledged publishes/s"), ("dequeue", "#2ca02c", "deliveries/s"))
# node events: colour, legend label (``node_mark``)
MARKS = {"lock-acquired": ("#9467bd", "lock acquired"), "store-loaded": ("#bcbd22", "store loaded"),
         "recovered": ("#8c564b", "recovered"),
         "listening": ("#17becf", "listening"), "role": ("#7f7f7f", "role"),
         "endpoints": ("#2ca02c", "endpoints open"), "lock-lost": ("#d62728", "lock lost")}


class TimelineError(Exception):
    """The picture cannot be drawn (an unknown file type, or matplotlib missing for PNG)."""


def write_timeline(records: list[dict[str, Any]], verdict: Verdict, path: str) -> None:
    """Draw the timeline to ``path`` (``.html``/``.htm`` or ``.png``). Raises TimelineError."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".html", ".htm"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(render_html(records, verdict))
    elif ext == ".png":
        _write_png(records, verdict, path)
    else:
        raise TimelineError(f"a timeline is .html or .png, not {path!r}")


def rates(records: list[dict[str, Any]], start: float, end: float, bins: int = 200) -> tuple[float, dict]:
    """(bin width in s, {"enqueue": [per-second rate per bin], "dequeue": [...]}) of ok records."""
    width = max((end - start) / bins, 0.01)
    n = int((end - start) / width) + 1
    out = {f: [0.0] * n for f, _, _ in SERIES}
    for rec in records:
        series = out.get(rec["f"])
        if series is not None and rec["type"] == "ok":
            series[min(int((rec["time"] - start) / width), n - 1)] += 1 / width
    return width, out


def node_mark(rec: dict[str, Any]) -> str:
    """Which ``MARKS`` entry a node record is drawn with."""
    if rec["process"] == "topology":
        return "endpoints" if rec.get("role") == "active" else "role"
    value = rec.get("value")
    return value if isinstance(value, str) and value in MARKS else "role"


def _node_text(rec: dict[str, Any], start: float) -> str:
    detail = describe_fact(rec)
    return f"{rec['time'] - start:.3f} s {rec['process']} {rec.get('value')}" + (f" ({detail})" if detail else "")


def render_html(records: list[dict[str, Any]], verdict: Verdict) -> str:
    start, end = verdict.start, max(verdict.end, verdict.start + 0.01)
    width, series = rates(records, start, end)
    top = max([max(v, default=0) for v in series.values()] + [1.0])
    x = lambda t: LEFT + (t - start) / (end - start) * (WIDTH - LEFT - 20)
    y = lambda v: TOP + PLOT_H - v / top * PLOT_H
    facts = [r for r in records if r["f"] == "node"]
    node_lanes = sorted({r["process"] for r in facts})
    lanes = sorted({(u.process, u.kind) for u in verdict.unavailable})
    node_top = TOP + PLOT_H + 24 + min(len(lanes), 8) * 12 + 8
    height = max(HEIGHT, node_top + 16 * len(node_lanes) + 30)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="{WIDTH}" height="{height}" fill="white"/>']
    for w in verdict.windows[1:]:
        w_end = w.fault_end if w.fault_end is not None else w.until
        label = html.escape(f"{w.fault['action']} {w.fault['target']}" if w.fault else "")
        parts.append(f'<rect x="{x(w.start):.1f}" y="{TOP}" width="{max(x(w_end) - x(w.start), 1):.1f}" '
                     f'height="{PLOT_H}" fill="#d62728" fill-opacity="0.15"><title>{label}</title></rect>'
                     f'<text x="{x(w.start) + 2:.1f}" y="{TOP - 4}" fill="#d62728">{label}</text>')
    for f, color, _ in SERIES:
        points = " ".join(f"{x(start + (i + 0.5) * width):.1f},{y(v):.1f}" for i, v in enumerate(series[f]))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    for u in verdict.unavailable:
        lane = lanes.index((u.process, u.kind))
        ly = TOP + PLOT_H + 24 + lane * 12 % 96
        u_end = u.end if u.end is not None else end
        span = "to the end" if u.seconds is None else f"{u.seconds:.3f} s"
        tip = html.escape(f"{u.process} {u.kind} unavailable {span} {u.error or ''}")
        parts.append(f'<rect x="{x(u.start):.1f}" y="{ly}" width="{max(x(u_end) - x(u.start), 1):.1f}" height="9" '
                     f'fill="#ff7f0e"><title>{tip}</title></rect>')
    for lane, (process, kind) in enumerate(lanes):
        parts.append(f'<text x="{WIDTH - 18}" y="{TOP + PLOT_H + 32 + lane * 12 % 96}" font-size="9" fill="#888888" '
                     f'text-anchor="end">{html.escape(f"{process} {kind}")}</text>')
    for lane, name in enumerate(node_lanes):
        ly = node_top + lane * 16
        parts.append(f'<line x1="{LEFT}" y1="{ly + 6}" x2="{WIDTH - 20}" y2="{ly + 6}" stroke="#dddddd"/>'
                     f'<text x="{LEFT - 4}" y="{ly + 10}" font-size="9" text-anchor="end">{html.escape(name)}</text>')
    for rec in facts:
        if not start <= rec["time"] <= end:
            continue
        ly = node_top + node_lanes.index(rec["process"]) * 16
        color = MARKS[node_mark(rec)][0]
        parts.append(f'<rect x="{x(rec["time"]) - 1:.1f}" y="{ly}" width="3" height="12" fill="{color}">'
                     f'<title>{html.escape(_node_text(rec, start))}</title></rect>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{WIDTH - 20}" y2="{TOP + PLOT_H}" stroke="black"/>'
                 f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + PLOT_H}" stroke="black"/>'
                 f'<text x="4" y="{TOP + 8}">{top:.0f}/s</text><text x="4" y="{TOP + PLOT_H}">0</text>'
                 f'<text x="{LEFT}" y="{height - 6}">0 s</text>'
                 f'<text x="{WIDTH - 80}" y="{height - 6}">{end - start:.2f} s</text>')
    for i, (_, color, label) in enumerate(SERIES):
        parts.append(f'<text x="{LEFT + 200 * i + 120}" y="{height - 6}" fill="{color}">{label}</text>')
    parts.append(f'<text x="{LEFT + 520}" y="{height - 6}" fill="#ff7f0e">unavailable</text>')
    if facts:
        used = sorted({node_mark(r) for r in facts}, key=list(MARKS).index)
        parts.extend(f'<text x="{LEFT + 90 * i}" y="{height - 20}" font-size="9" fill="{MARKS[k][0]}">{MARKS[k][1]}'
                     f'</text>' for i, k in enumerate(used))
    parts.append("</svg>")
    c = verdict.counts
    title = (f"lost {c.lost}, duplicated {c.duplicated}, recovered {c.recovered}, unexpected {c.unexpected}, "
             f"reordered {c.reordered}, attempted {c.attempted}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mqemu timeline</title></head>"
            f"<body><h1>mqemu timeline</h1><p>{html.escape(title)}</p>\n{''.join(parts)}\n"
            f"{_phases_html(verdict)}</body></html>\n")


def _phases_html(verdict: Verdict) -> str:
    """Per fault, the time to the first delivery and the takeover's steps, as a list."""
    if not verdict.faults:
        return ""
    items = []
    for f in verdict.faults:
        after = "no delivery after it" if f.seconds is None else f"first delivery after {f.seconds:.3f} s"
        steps = "".join(f"<li>+{p.at:.3f} s {html.escape(p.process)} {html.escape(p.event)}"
                        + (f" ({html.escape(p.detail)})" if p.detail else "") + "</li>" for p in f.phases)
        items.append(f"<li>{html.escape(f'{f.action} {f.target}')} at {f.start - verdict.start:.3f} s: {after}"
                     + (f"<ul>{steps}</ul>" if steps else "") + "</li>")
    return f"<h2>Faults and takeovers</h2><ul>{''.join(items)}</ul>\n"


def _write_png(records: list[dict[str, Any]], verdict: Verdict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TimelineError("a PNG timeline needs matplotlib: pip install 'mqemu[plot]' "
                            "(or ask for an .html timeline, which needs nothing)") from None
    start, end = verdict.start, max(verdict.end, verdict.start + 0.01)
    width, series = rates(records, start, end)
    facts = [r for r in records if r["f"] == "node"]
    node_lanes = sorted({r["process"] for r in facts})
    if facts:
        fig, (ax, nodes_ax) = plt.subplots(2, 1, figsize=(12, 5), sharex=True,
                                           gridspec_kw={"height_ratios": [4, 1 + len(node_lanes) // 2]})
        for key in sorted({node_mark(r) for r in facts}, key=list(MARKS).index):
            mine = [r for r in facts if node_mark(r) == key]
            nodes_ax.scatter([r["time"] - start for r in mine], [node_lanes.index(r["process"]) for r in mine],
                             marker="|", s=200, color=MARKS[key][0], label=MARKS[key][1])
        nodes_ax.set_yticks(range(len(node_lanes)), node_lanes)
        nodes_ax.set_ylim(-0.5, len(node_lanes) + 0.5)  # room above the lanes for the legend
        nodes_ax.legend(loc="upper left", fontsize="small", ncol=len(MARKS))
    else:
        fig, ax = plt.subplots(figsize=(12, 4))
    for f, color, label in SERIES:
        ax.plot([(i + 0.5) * width for i in range(len(series[f]))], series[f], color=color, label=label)
    for w in verdict.windows[1:]:
        w_end = w.fault_end if w.fault_end is not None else w.until
        ax.axvspan(w.start - start, max(w_end - start, w.start - start + width), color="#d62728", alpha=0.15)
    for u in verdict.unavailable:
        ax.axvspan(u.start - start, (u.end if u.end is not None else end) - start, ymax=0.04, color="#ff7f0e")
    (nodes_ax if facts else ax).set_xlabel("s")
    ax.set_ylabel("per s")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)
