"""Charts for the dashboard, drawn on the server as inline SVG.

No JavaScript and nothing fetched from elsewhere: the page works offline, prints, and every
bar carries a <title> so hovering shows its exact figure. Each function takes the part of the
report (ivr/reports.py) it draws and returns an SVG string.
"""

from __future__ import annotations

from html import escape

from ivr.engine.states import CallbackStatus

# Colours chosen to stay apart for the common kinds of colour blindness.
ANSWERED = "#2b8a3e"
ABANDONED = "#c92a2a"
CALLBACK = "#1c7ed6"
OTHER = "#adb5bd"
LINE = "#364fc7"
TARGET = "#e67700"
GRID = "#dee2e6"
TEXT = "#343a40"
MUTED = "#868e96"
_S = CallbackStatus
STATUS_COLOURS = {_S.COMPLETED: ANSWERED, _S.PENDING: "#fab005", _S.DIALING: "#74c0fc",
                  _S.ANSWERED: "#4dabf7", _S.CONNECTED: "#228be6", _S.FAILED: ABANDONED,
                  _S.EXPIRED: "#e8590c", _S.CANCELLED: OTHER}
STATUS_LABELS = {_S.COMPLETED: "kept (agent reached the caller)", _S.PENDING: "waiting",
                 _S.DIALING: "dialling", _S.ANSWERED: "answered", _S.CONNECTED: "talking",
                 _S.FAILED: "failed (no answer)", _S.EXPIRED: "expired", _S.CANCELLED: "cancelled"}

FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'


def _svg(name: str, width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{name}" role="img" '
            f'aria-label="{escape(label)}" viewBox="0 0 {width} {height}" width="100%" '
            f'preserveAspectRatio="xMidYMid meet" {FONT} font-size="12">'
            f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, fill: str = TEXT,
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}">{escape(text)}</text>')


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str, cls: str = "bar") -> str:
    return (f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}"><title>{escape(tip)}</title></rect>')


def _empty(name: str, width: int, height: int, label: str, message: str) -> str:
    return _svg(name, width, height, label, [
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f9fa"/>',
        _text(width / 2, height / 2, message, "middle", 14, MUTED)])


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value`."""
    if value <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000,
                 50000, 100000, 200000, 500000, 1000000):
        if value <= step * 5:
            return step * -(-value // step)
    return value


def _legend(items: list[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for label, colour in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{colour}"/>')
        out.append(_text(x + 14, y, label, size=11))
        x += 22 + 6.5 * len(label)
    return out


def wait_histogram(buckets: list[dict], threshold_s: int) -> str:
    """Stacked bars: how many queue callers waited how long, and how their wait ended."""
    label = "Wait-time distribution of callers who reached a queue"
    width, height, left, top, bottom = 640, 300, 48, 34, 52
    totals = [b["answered"] + b["abandoned"] + b["callback"] + b["other"] for b in buckets]
    if not sum(totals):
        return _empty("wait-histogram", width, height, label, "No caller reached a queue in this period")
    top_value = _nice_max(max(totals))
    plot_w, plot_h = width - left - 12, height - top - bottom
    slot = plot_w / len(buckets)
    body = _legend([("answered", ANSWERED), ("hung up", ABANDONED), ("took a callback", CALLBACK),
                    ("left unanswered", OTHER)], left, 16)
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{width - 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 6, y + 4, f"{value:g}", "end", 11, MUTED))
    for i, b in enumerate(buckets):
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        y = top + plot_h
        for key, colour, what in (("answered", ANSWERED, "answered"), ("abandoned", ABANDONED, "hung up"),
                                  ("callback", CALLBACK, "took a callback"),
                                  ("other", OTHER, "left unanswered")):
            n = b[key]
            if not n:
                continue
            h = plot_h * n / top_value
            y -= h
            body.append(_rect(x, y, w, h, colour, f"waited {b['label']}: {n} {what}"))
        body.append(_text(x + w / 2, top + plot_h + 16, b["label"], "middle", 11))
        if b["to_s"] is not None and b["from_s"] < threshold_s <= b["to_s"]:
            tx = left + i * slot + slot * (threshold_s - b["from_s"]) / (b["to_s"] - b["from_s"])
            body.append(f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" '
                        f'y2="{top + plot_h}" stroke="{TARGET}" stroke-dasharray="4 3" stroke-width="2"/>')
            body.append(_text(tx + 4, top + 8, f"service level threshold {threshold_s} s", size=11,
                              fill=TARGET))
    body.append(_text(left + plot_w / 2, height - 12, "time in queue", "middle", 11, MUTED))
    return _svg("wait-histogram", width, height, label, body)


def service_level_line(series: dict, target: float = 0.8, threshold_s: int = 20) -> str:
    """Service level per day (or hour) as a line over bars of the calls offered to agents."""
    label = f"Service level over time: share of callers answered within {threshold_s} s"
    width, height, left, right, top, bottom = 640, 300, 44, 44, 34, 56
    points = series.get("points", [])
    if not points:
        return _empty("service-level", width, height, label, "No calls in this period")
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / len(points)
    max_offered = _nice_max(max(p["offered"] for p in points) or 1)
    body = _legend([("service level", LINE), (f"target {target:.0%}", TARGET),
                    ("callers offered to agents", "#d0ebff")], left, 16)
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 6, y + 4, f"{25 * i}%", "end", 11, MUTED))
        body.append(_text(width - right + 6, y + 4, f"{max_offered * i / 4:g}", "start", 11, MUTED))
    coords = []
    every = max(1, round(len(points) / 10))
    for i, p in enumerate(points):
        cx = left + slot * (i + 0.5)
        h = plot_h * p["offered"] / max_offered
        body.append(_rect(cx - slot * 0.35, top + plot_h - h, slot * 0.7, h, "#d0ebff",
                          f"{p['at']}: {p['offered']} callers offered to agents", "volume"))
        if p["service_level"] is not None:
            cy = top + plot_h - plot_h * p["service_level"]
            coords.append((cx, cy, p))
        if i % every == 0:
            text = p["at"][5:] if series.get("step") == "day" else p["at"][11:16]
            body.append(_text(cx, top + plot_h + 16, text, "middle", 10))
    ty = top + plot_h - plot_h * target
    body.append(f'<line class="target" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" '
                f'stroke="{TARGET}" stroke-dasharray="6 4" stroke-width="2"/>')
    if coords:
        path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y, _) in enumerate(coords))
        body.append(f'<path class="line" d="{path}" fill="none" stroke="{LINE}" stroke-width="2.5"/>')
        for x, y, p in coords:
            body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{LINE}">'
                        f'<title>{escape(p["at"])}: {p["service_level"]:.0%} answered within {threshold_s} s '
                        f'({p["answered_within_threshold"]} of {p["offered"]})</title></circle>')
    step = "day" if series.get("step") == "day" else "hour"
    body.append(_text(left + plot_w / 2, height - 10, f"by {step} (display time zone)", "middle", 11, MUTED))
    return _svg("service-level", width, height, label, body)


def funnel(stages: list[dict]) -> str:
    """Calls narrowing from answer to served, with the nodes where callers hung up."""
    label = "Where callers are lost: abandonment by node as a funnel"
    width, row_h, gap, top = 640, 46, 34, 12
    total = stages[0]["calls"] if stages else 0
    if not total:
        return _empty("funnel", width, 200, label, "No calls in this period")
    lost_lines = sum(min(len(s["lost"]), 4) for s in stages[1:])
    height = top + len(stages) * row_h + (len(stages) - 1) * gap + lost_lines * 14 + 20
    bar_w = 360
    body: list[str] = []
    y = top
    colours = ("#4263eb", "#5c7cfa", "#91a7ff")
    for i, stage in enumerate(stages):
        if i:
            lost = stage["lost"]
            dropped = stages[i - 1]["calls"] - stage["calls"]
            body.append(_text(bar_w / 2 + 20, y + 14, f"▼ {dropped} fewer", "middle", 11, MUTED))
            ly = y + 14
            for entry in lost[:4]:
                ly += 14
                body.append(_text(bar_w + 40, ly - 14, f"{entry['abandoned']} hung up at {entry['node']}"
                                  + (f" ({entry['kind']})" if entry.get("kind") else ""), size=11,
                                  fill=ABANDONED))
            if len(lost) > 4:
                body.append(_text(bar_w + 40, ly, f"… and {len(lost) - 4} more nodes", size=11, fill=MUTED))
            y += gap + max(0, min(len(lost), 4) - 1) * 14
        w = bar_w * stage["calls"] / total
        x = 20 + (bar_w - w) / 2
        share = stage["calls"] / total
        body.append(_rect(x, y, w, row_h - 8, colours[min(i, 2)], f"{stage['stage']}: {stage['calls']} "
                          f"({share:.0%})", "stage"))
        body.append(_text(20 + bar_w / 2, y + row_h / 2, f"{stage['calls']} ({share:.0%})", "middle", 13,
                          "#ffffff" if w > 90 else TEXT, "bold"))
        body.append(_text(bar_w + 40, y + row_h / 2 - 2, stage["stage"], size=12))
        y += row_h
    return _svg("funnel", width, int(max(height, y + 10)), label, body)


def heatmap(data: dict) -> str:
    """Calls per hour of the day and day of the week, darker is busier."""
    label = "Calls per hour of day and day of week (display time zone)"
    cell_w, cell_h, left, top = 22, 22, 40, 26
    width, height = left + 24 * cell_w + 10, top + 7 * cell_h + 40
    values = data["calls"]
    peak = max((max(r) for r in values), default=0)
    if not peak:
        return _empty("heatmap", width, height, label, "No calls in this period")
    body: list[str] = []
    for h in range(0, 24, 3):
        body.append(_text(left + h * cell_w + cell_w / 2, top - 8, f"{h:02d}", "middle", 10, MUTED))
    for d, day in enumerate(data["weekdays"]):
        y = top + d * cell_h
        body.append(_text(left - 6, y + cell_h / 2 + 4, day, "end", 11))
        for h in range(24):
            n = values[d][h]
            share = n / peak
            colour = _blend("#f1f3f5", "#1864ab", share ** 0.7) if n else "#f8f9fa"
            body.append(_rect(left + h * cell_w + 1, y + 1, cell_w - 2, cell_h - 2, colour,
                              f"{day} {h:02d}:00–{h:02d}:59: {n} calls", "cell"))
    ly = top + 7 * cell_h + 22
    body.append(_text(left, ly, "fewer", size=10, fill=MUTED))
    for i in range(6):
        body.append(f'<rect x="{left + 40 + i * 18}" y="{ly - 10}" width="16" height="12" '
                    f'fill="{_blend("#f1f3f5", "#1864ab", (i / 5) ** 0.7)}"/>')
    body.append(_text(left + 40 + 6 * 18 + 4, ly, f"more (busiest hour: {peak} calls)", size=10, fill=MUTED))
    return _svg("heatmap", width, height, label, body)


def callback_outcomes(stats: dict) -> str:
    """One bar split by what became of the callbacks requested in the period."""
    label = "Callback outcomes"
    width, height = 1200, 150
    by_status = stats.get("by_status") or {}
    total = sum(by_status.values())
    if not total:
        return _empty("callbacks", width, height, label, "No callbacks were requested in this period")
    body: list[str] = []
    x, bar_w = 20.0, width - 40
    order = ["completed", "connected", "answered", "dialing", "pending", "failed", "expired", "cancelled"]
    statuses = sorted(by_status, key=lambda s: order.index(s) if s in order else len(order))
    legend = []
    for status in statuses:
        n = by_status[status]
        w = bar_w * n / total
        colour = STATUS_COLOURS.get(status, OTHER)
        body.append(_rect(x, 20, w, 40, colour, f"{STATUS_LABELS.get(status, status)}: {n} ({n / total:.0%})",
                          "segment"))
        if w > 40:
            body.append(_text(x + w / 2, 45, f"{n / total:.0%}", "middle", 12, "#ffffff", "bold"))
        x += w
        legend.append((f"{STATUS_LABELS.get(status, status)} {n}", colour))
    body += _legend(legend[:4], 20, 86)
    if len(legend) > 4:
        body += _legend(legend[4:], 20, 106)
    kept_rate = stats.get("kept_rate")
    median = (stats.get("wait_s") or {}).get("median")
    summary = f"{total} requested"
    if kept_rate is not None:
        summary += f" · {kept_rate:.0%} of finished callbacks kept"
    if median is not None:
        summary += f" · median wait for the agent {median / 60:.1f} min"
    body.append(_text(20, 138, summary, size=12, weight="bold"))
    return _svg("callbacks", width, height, label, body)


def _blend(a: str, b: str, t: float) -> str:
    t = max(0.0, min(1.0, t))
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))
