"""A pair's activity as a small server-rendered SVG: files changed and bytes copied per real run over the
last days, one bar per run at its time (dell->hp above the axis, hp->dell below), so a quiet pair, a busy one
and a failing one look different at a glance.  No JavaScript, no library, nothing from a CDN."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from html import escape

from ..progress import human_bytes

WIDTH, HEIGHT, PAD = 640, 150, 28
_SMALL = 'font-size="10" fill="#656d76"'
COLOURS = {"success": "#1a7f37", "partial_failure": "#cf222e", "failed": "#cf222e", "running": "#9a6700"}


def activity_svg(runs: list[dict], since: datetime, until: datetime, title: str) -> str:
    """`runs` as queries.activity gives them.  Bar height: files changed (log scale: one file and 100k files
    both stay visible); hover shows the run's time, direction, files and bytes."""
    span = max((until - since).total_seconds(), 1.0)
    half = (HEIGHT - 2 * PAD) / 2
    mid = PAD + half
    top = max((r["files"] for r in runs), default=0)
    scale = _log(top) or 1.0
    bars = []
    for r in runs:
        x = PAD + (WIDTH - 2 * PAD) * (r["started_at"] - since).total_seconds() / span
        h = max(1.5, half * _log(r["files"]) / scale) if r["files"] else 1.5
        y = mid - h if r["direction"] == "dell_to_hp" else mid
        direction, status = r["direction"].replace("_", " "), r["status"].replace("_", " ")
        tip = (
            f"{r['started_at']:%Y-%m-%d %H:%M} UTC {direction}: {status}, "
            f"{r['files']} files changed, {human_bytes(r['bytes'])} copied"
        )
        colour = COLOURS.get(r["status"], "#656d76")
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="3" height="{h:.1f}" fill="{colour}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    days = []
    day = since.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while day < until:
        x = PAD + (WIDTH - 2 * PAD) * (day - since).total_seconds() / span
        days.append(
            f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{HEIGHT - PAD}" stroke="#d0d7de"/>'
            f'<text x="{x + 2:.1f}" y="{HEIGHT - 8}" font-size="10" fill="#656d76">{day:%m-%d}</text>'
        )
        day += timedelta(days=1)
    total_files, total_bytes = sum(r["files"] for r in runs), sum(r["bytes"] for r in runs)
    caption = f"{len(runs)} real runs, {total_files} files changed, {human_bytes(total_bytes)} copied"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}: {escape(caption)}" class="chart">'
        f'<text x="{PAD}" y="16" font-size="12" fill="#1f2328">{escape(title)}: {escape(caption)}</text>'
        f'<text x="{WIDTH - PAD}" y="{PAD + 10}" {_SMALL} text-anchor="end">dell → hp</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD - 4}" {_SMALL} text-anchor="end">hp → dell</text>'
        f'<line x1="{PAD}" y1="{mid}" x2="{WIDTH - PAD}" y2="{mid}" stroke="#8c959f"/>'
        + "".join(days)
        + "".join(bars)
        + "</svg>"
    )


def _log(n: int) -> float:
    return math.log10(n + 1)
