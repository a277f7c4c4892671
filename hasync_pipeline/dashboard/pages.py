"""The dashboard's server-rendered pages: one iteration with its operations, and one pair (activity chart,
conflicts, what its trash holds).  Plain HTML from the audit rows, every value escaped; times in UTC with the
reader's local time on hover (the same small script as the main page).  Read-only: a restore is a command
the page shows, to copy and run where the folders are."""

from __future__ import annotations

import shlex
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from ..progress import human_bytes

LEGEND = (
    "<b>+</b> created &nbsp; <b>~</b> updated &nbsp; <b>−</b> deleted &nbsp; <b>✗</b> failed &nbsp; "
    "<b>DRY</b> a dry run (nothing changed) &nbsp; all times UTC (hover for yours)"
)
LOCAL_TIMES = """<script>
for (const t of document.querySelectorAll("time[datetime]"))
  t.title = new Date(t.getAttribute("datetime")).toLocaleString() + " (your time)";
</script>"""


def layout(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)} · HA Sync</title><link rel="stylesheet" href="../static/style.css"></head><body>'
        f'<nav><a href="../">← all pairs</a></nav><h1>{escape(title)}</h1>{body}{LOCAL_TIMES}</body></html>'
    )


def utc(value: str | datetime | None) -> str:
    """A <time> in UTC (ISO strings from queries.py, or datetimes); the script adds the local time on hover."""
    if value is None:
        return "—"
    iso = value if isinstance(value, str) else value.isoformat(timespec="milliseconds") + "Z"
    shown = iso.replace("T", " ").split(".")[0].rstrip("Z")
    return f'<time datetime="{escape(iso)}">{escape(shown)} UTC</time>'


def size(n: int | None) -> str:
    return "—" if n is None else escape(human_bytes(n))


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _status(it: dict) -> str:
    dry = '<span class="badge dry">DRY</span> ' if it["dry_run"] else ""
    conflicts = it.get("files_conflicted") or 0
    conflict = f' <span class="badge conflict">{conflicts} conflict{"s" * (conflicts > 1)}</span>' if conflicts else ""
    return f'{dry}<span class="st-{escape(it["status"])}">{escape(it["status"].replace("_", " "))}</span>{conflict}'


def iteration_page(it: dict, page: dict, filters: dict[str, str], dagster_url: str) -> str:
    """One iteration: what it was, then its operations (filtered, one keyset page at a time)."""
    run = it.get("dagster_run_id")
    run_link = (
        f'<a href="{escape(dagster_url)}/runs/{escape(run)}">{escape(run[:8])}</a>'
        if run and dagster_url
        else escape((run or it.get("run_id") or "")[:8])
    )
    facts = (
        f"<p>{_status(it)} · {escape(it['direction'].replace('_', ' → '))} · {escape(it['src'])} → "
        f"{escape(it['dest'])}<br>started {utc(it['started_at'])}, ended {utc(it['ended_at'])} · run {run_link}<br>"
        f"+{it['files_created']} ~{it['files_updated']} −{it['files_deleted']} ✗{it['files_failed']} "
        f"· {it['files_skipped']} skipped · {size(it['total_bytes_transferred'])} copied</p>"
    )
    if it.get("error_message"):
        facts += f'<p class="alert">{escape(it["error_message"])}</p>'
    form = _filters_form(it["id"], filters)
    rows = [
        f'<tr class="{"bad" if o["status"] == "fail" else ""}"><td class="path">{escape(o["filepath"])}</td>'
        f"<td>{escape(o['operation'])}</td><td>{size(o['size_before'])}</td><td>{size(o['size_after'])}</td>"
        f'<td>{escape(o["status"])}</td><td class="err">{escape(o.get("error_message") or "")}</td>'
        f'<td class="err">{escape(o.get("reason") or "")}</td></tr>'
        for o in page["operations"]
    ]
    table = _table(
        ["Path", "Operation", "Size before", "Size after", "Status", "Error", "Why"],
        rows,
        "No operations" + (" match these filters." if any(filters.values()) else "."),
    )
    more = ""
    if page["next_after"] is not None:
        query = urlencode({**{k: v for k, v in filters.items() if v}, "after": page["next_after"]})
        more = f'<p><a class="next" href="../iterations/{it["id"]}?{escape(query)}">next page →</a></p>'
    title = f"{it['sync_pair']} · iteration {it['id']}"
    return layout(title, facts + f'<p class="legend">{LEGEND}</p>' + form + table + more)


def _filters_form(iteration_id: int, filters: dict[str, str]) -> str:
    def select(name: str, options: tuple[str, ...]) -> str:
        opts = "".join(
            f'<option value="{o}"{" selected" if filters.get(name) == o else ""}>{o or "any"}</option>'
            for o in ("", *options)
        )
        return f'<label>{name}<select name="{name}">{opts}</select></label>'

    prefix = escape(filters.get("prefix") or "")
    return (
        f'<form class="filters" method="get" action="../iterations/{iteration_id}">'
        + select("operation", ("create", "update", "delete"))
        + select("status", ("success", "fail"))
        + f'<label>path starts with<input name="prefix" value="{prefix}" placeholder="movies/"></label>'
        + "<button>Filter</button></form>"
    )


def pair_page(pair: str, chart: str, conflicts: list[dict], trashed: list[dict], days: int, trash_days: float) -> str:
    """One pair: its activity, its recent conflicts (where each version is), and what its trash keeps with
    the command that puts a version back."""
    conflict_rows = [
        f'<tr><td>{utc(o["ended_at"])}</td><td class="path">{escape(o["filepath"])}</td>'
        f"<td>{size(o['size_before'])} → {size(o['size_after'])}</td>"
        f'<td class="err">{escape((o.get("reason") or "").removeprefix("conflict: "))}</td>'
        f'<td><a href="../iterations/{o["iteration"]["id"]}">{o["iteration"]["id"]}</a></td></tr>'
        for o in conflicts
    ]
    trash_rows = [
        f'<tr><td>{utc(o["ended_at"])}</td><td class="path">{escape(o["filepath"])}</td>'
        f"<td>{'replaced' if o['operation'] == 'update' else 'deleted'}</td><td>{size(o['size_before'])}</td>"
        f"<td>{escape(_side_of(o['iteration']))}</td>"
        f'<td><a href="../iterations/{o["iteration"]["id"]}">{o["iteration"]["id"]}</a></td>'
        f'<td><code class="cmd">{escape(restore_command(pair, o))}</code></td></tr>'
        for o in trashed
    ]
    body = (
        f'<section>{chart}<p class="legend">one bar per real run (height: files changed, log scale); red: it '
        "failed or some files did; hover a bar for its numbers</p></section>"
        f"<section><h2>Conflicts in the last {days} days</h2>"
        '<p class="legend">A file changed on both sides: both versions were kept. The newer keeps the name; '
        "the other is renamed <code>name.sync-conflict-&lt;time&gt;-&lt;side&gt;.ext</code> and synced too. "
        "Resolve by keeping the one you want and deleting the other: the next runs propagate that.</p>"
        + _table(["When", "Path", "Sizes", "Where each version is", "Iteration"], conflict_rows, "No conflicts.")
        + f"</section><section><h2>In the trash (the last {trash_days:g} days)</h2>"
        '<p class="legend">Every version a run replaced or deleted is kept in the destination\'s '
        "<code>.hasync-trash</code> for <code>trash_retain_days</code>. Run the command where the folders are "
        "mounted to put a version back (recorded like any sync; the current file goes to the trash).</p>"
        + _table(
            ["When", "Path", "What happened", "Size", "Side", "Iteration", "Put it back"],
            trash_rows,
            "Nothing replaced or deleted.",
        )
        + "</section>"
    )
    return layout(pair, body)


def _side_of(iteration: dict[str, Any]) -> str:
    """The side whose trash holds a version: the destination of the run that replaced or deleted it."""
    direction = iteration["direction"]
    if "_to_" in direction:
        return direction.split("_to_")[1]
    if direction.startswith("restore-"):
        return direction.removeprefix("restore-")
    return "<dell or hp>"  # a CLI run given no --direction: the page cannot tell which server it wrote to


def restore_command(pair: str, o: dict) -> str:
    at = (o["ended_at"] or o["started_at"]).replace("T", " ").split(".")[0]
    return shlex.join(
        ["ha-sync", "restore", "--pair", pair, "--side", _side_of(o["iteration"]), o["filepath"], "--at", at]
    )
