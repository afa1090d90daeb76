"""Public statistics as JSON, CSV and an HTML page with a growth plot (server-rendered SVG).

Input: weekly cells ``(window, table, fields) -> count``, where ``fields`` is a sorted tuple of
``(name, value)`` pairs. Every (window, table) is suppressed on its own with
:func:`wire.countme.suppress` (k = 5): a cell below k is never shown, and the hidden rest is one
``other`` count that is 0 or at least k. The output depends on the counts only — never on
when, from where or in which order they arrived — so it is byte-for-byte reproducible.
Shared by the collector (meshota/telemetry) and the fleet's public stats (``_fleet_stats``).
"""

from __future__ import annotations

import csv
import datetime
import html
import io
import json
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from wire.countme import K_MIN, suppress, window_start

__all__ = ["Cells", "publish", "render_csv", "render_json", "render_page", "render_svg"]

Fields = tuple[tuple[str, str], ...]
Cells = Mapping[tuple[int, str, Fields], int]


def _week(window: int) -> str:
    return datetime.datetime.fromtimestamp(window_start(window), datetime.UTC).date().isoformat()


def publish(cells: Cells, k: int = K_MIN) -> dict[str, Any]:
    """The public document: per window and table, shown cells, ``other`` and ``total``."""
    grouped: dict[tuple[int, str], dict[Fields, int]] = defaultdict(dict)
    for (window, table, fields), n in cells.items():
        grouped[(window, table)][fields] = grouped[(window, table)].get(fields, 0) + n
    weeks: list[dict[str, Any]] = []
    for (window, table), table_cells in sorted(grouped.items()):
        result = suppress(table_cells, k)
        if result.total == 0:
            continue  # the whole table is below k: not even its existence is published
        weeks.append(
            {
                "window": window,
                "week_start": _week(window),
                "table": table,
                "total": result.total,
                "other": result.other,
                "cells": [
                    {**dict(fields), "count": n}
                    for fields, n in sorted(result.shown.items(), key=lambda c: (-c[1], c[0]))
                ],
            }
        )
    return {"k": k, "weeks": weeks}


def render_json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def render_csv(doc: dict[str, Any]) -> bytes:
    """One row per shown cell: week_start, window, table, fields (``a=1;b=2``), count; plus a
    ``(other)`` row per table when something was hidden and a ``(total)`` row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["week_start", "window", "table", "cell", "count"])
    for week in doc["weeks"]:
        base = [week["week_start"], week["window"], week["table"]]
        for cell in week["cells"]:
            label = ";".join(f"{k}={v}" for k, v in sorted(cell.items()) if k != "count")
            writer.writerow([*base, label, cell["count"]])
        if week["other"]:
            writer.writerow([*base, "(other)", week["other"]])
        writer.writerow([*base, "(total)", week["total"]])
    return out.getvalue().encode()


def render_svg(series: Mapping[str, Mapping[int, int]], width: int = 640, height: int = 240) -> str:
    """Growth over time: one polyline per series (window -> total), axes labelled with weeks."""
    points = [(w, n) for s in series.values() for w, n in s.items()]
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                '<text x="10" y="20">no week has k or more yet</text></svg>')  # fmt: skip
    lo, hi = min(w for w, _ in points), max(w for w, _ in points)
    top = max(n for _, n in points)
    pad = 40

    def xy(w: int, n: int) -> str:
        x = pad + (w - lo) * (width - 2 * pad) / max(1, hi - lo)
        y = height - pad - n * (height - 2 * pad) / max(1, top)
        return f"{x:.1f},{y:.1f}"

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{pad}" y="{height - pad + 15}">{_week(lo)}</text>',
        f'<text x="{width - pad}" y="{height - pad + 15}" text-anchor="end">{_week(hi)}</text>',
        f'<text x="{pad - 4}" y="{pad}" text-anchor="end">{top}</text>',
    ]
    for i, (name, values) in enumerate(sorted(series.items())):
        colour = colours[i % len(colours)]
        pts = " ".join(xy(w, n) for w, n in sorted(values.items()))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{width - pad}" y="{pad + 14 * i}" text-anchor="end" fill="{colour}">'
                     f"{html.escape(name)}</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def render_page(doc: dict[str, Any], title: str, links: Mapping[str, str]) -> bytes:
    """An HTML page: the growth plot (totals per table and week) and the latest week's cells."""
    series: dict[str, dict[int, int]] = defaultdict(dict)
    for week in doc["weeks"]:
        series[week["table"]][week["window"]] = week["total"]
    rows = []
    latest: dict[str, dict[str, Any]] = {}
    for week in doc["weeks"]:
        latest[week["table"]] = week  # sorted by window: the last one wins
    for table, week in sorted(latest.items()):
        for cell in week["cells"]:
            label = ", ".join(f"{k}={v}" for k, v in sorted(cell.items()) if k != "count")
            rows.append(f"<tr><td>{html.escape(table)}</td><td>{week['week_start']}</td>"
                        f"<td>{html.escape(label)}</td><td>{cell['count']}</td></tr>")  # fmt: skip
        if week["other"]:
            rows.append(f"<tr><td>{html.escape(table)}</td><td>{week['week_start']}</td>"
                        f"<td>(other, cells below k)</td><td>{week['other']}</td></tr>")  # fmt: skip
    link_html = " | ".join(f'<a href="{html.escape(h)}">{html.escape(n)}</a>' for n, h in links.items())
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1><p>Weekly totals (weeks start on Monday, UTC). Cells "
        f"below k = {doc['k']} are never shown. {link_html}</p>"
        f'{render_svg(series)}<h2>Latest week</h2><table border="1">'
        "<tr><th>table</th><th>week</th><th>cell</th><th>count</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )
    return page.encode()
