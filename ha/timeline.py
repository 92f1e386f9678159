"""A timeline of a history: acknowledged publishes and deliveries per time bin, the faults
(shaded from start to end) and the unavailability windows (one band per client).

The default is a self-contained HTML page with an inline SVG, written with the standard
library; ``.png`` draws the same with matplotlib, the optional extra ``plot``
(``pip install mqemu[plot]``), imported only then.
"""

from __future__ import annotations

import html
import os
from typing import Any

from .checker import Verdict

WIDTH, HEIGHT, LEFT, TOP, PLOT_H = 960, 360, 60, 30, 220
SERIES = (("enqueue", "#1f77b4", "acknowledged publishes/s"), ("dequeue", "#2ca02c", "deliveries/s"))


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


def render_html(records: list[dict[str, Any]], verdict: Verdict) -> str:
    start, end = verdict.start, max(verdict.end, verdict.start + 0.01)
    width, series = rates(records, start, end)
    top = max([max(v, default=0) for v in series.values()] + [1.0])
    x = lambda t: LEFT + (t - start) / (end - start) * (WIDTH - LEFT - 20)
    y = lambda v: TOP + PLOT_H - v / top * PLOT_H
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
             f'font-size="11"><rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>']
    for w in verdict.windows[1:]:
        w_end = w.fault_end if w.fault_end is not None else w.until
        label = html.escape(f"{w.fault['action']} {w.fault['target']}" if w.fault else "")
        parts.append(f'<rect x="{x(w.start):.1f}" y="{TOP}" width="{max(x(w_end) - x(w.start), 1):.1f}" '
                     f'height="{PLOT_H}" fill="#d62728" fill-opacity="0.15"><title>{label}</title></rect>'
                     f'<text x="{x(w.start) + 2:.1f}" y="{TOP - 4}" fill="#d62728">{label}</text>')
    for f, color, _ in SERIES:
        points = " ".join(f"{x(start + (i + 0.5) * width):.1f},{y(v):.1f}" for i, v in enumerate(series[f]))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    lanes = sorted({(u.process, u.kind) for u in verdict.unavailable})
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
    parts.append(f'<line x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{WIDTH - 20}" y2="{TOP + PLOT_H}" stroke="black"/>'
                 f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + PLOT_H}" stroke="black"/>'
                 f'<text x="4" y="{TOP + 8}">{top:.0f}/s</text><text x="4" y="{TOP + PLOT_H}">0</text>'
                 f'<text x="{LEFT}" y="{HEIGHT - 6}">0 s</text>'
                 f'<text x="{WIDTH - 80}" y="{HEIGHT - 6}">{end - start:.2f} s</text>')
    for i, (_, color, label) in enumerate(SERIES):
        parts.append(f'<text x="{LEFT + 200 * i + 120}" y="{HEIGHT - 6}" fill="{color}">{label}</text>')
    parts.append(f'<text x="{LEFT + 520}" y="{HEIGHT - 6}" fill="#ff7f0e">unavailable</text></svg>')
    c = verdict.counts
    title = (f"lost {c.lost}, duplicated {c.duplicated}, recovered {c.recovered}, unexpected {c.unexpected}, "
             f"reordered {c.reordered}, attempted {c.attempted}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mqemu timeline</title></head>"
            f"<body><h1>mqemu timeline</h1><p>{html.escape(title)}</p>\n{''.join(parts)}\n</body></html>\n")


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
    fig, ax = plt.subplots(figsize=(12, 4))
    for f, color, label in SERIES:
        ax.plot([(i + 0.5) * width for i in range(len(series[f]))], series[f], color=color, label=label)
    for w in verdict.windows[1:]:
        w_end = w.fault_end if w.fault_end is not None else w.until
        ax.axvspan(w.start - start, max(w_end - start, w.start - start + width), color="#d62728", alpha=0.15)
    for u in verdict.unavailable:
        ax.axvspan(u.start - start, (u.end if u.end is not None else end) - start, ymax=0.04, color="#ff7f0e")
    ax.set_xlabel("s")
    ax.set_ylabel("per s")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)
