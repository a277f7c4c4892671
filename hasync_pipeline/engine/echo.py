"""The echo: a run's own writes, as the destination's watcher logs them.  Each copy a run makes on the
destination is a record in that side's change log, which the opposite direction's trigger (the Dagster
sensor, `ha-sync follow`) took for a change to carry back: a second run, that finds nothing to do, launched
behind every real one (in Dagster ~5 s of pod or process start, during which the pair is busy and the next
real change waits: the Dagster path's RPO p95 was 25 s at 1M, its target 15 s).

So a run that ended clean looks at the destination's log since the opposite direction's own position: when
every path it names is, on the destination now, as the journal the run just wrote records it - by
reconcile.state, the one rule a run of that direction would apply - there is nothing there to carry away,
and that direction's position moves to the tip (the watcher then reports nothing pending; the triggers launch
nothing).  The test is reconcile's own: a path written by anyone else since moves its inode or ctime and is
not an echo.  What it cannot vouch for path by path - a rescan record (a folder made, the run's own
included), a new epoch, a gap, more than MAX_PATHS paths - leaves the position where it was: the opposite
run goes ahead, as it always did.  It never decides what to copy; at worst a change waits for the schedules'
full runs, which read no change log.
"""

from __future__ import annotations

from .changelog import Position, read_since
from .incremental import Scope, list_scope
from .journal import Journal
from .paths import ExcludeMatcher, split
from .reconcile import NONE, SAME, state
from .walk import entry_at

MAX_PATHS = 10_000  # past this many named paths the opposite run is cheaper to let go ahead than to vouch for


def echo_tip(root: str, since: Position, journal: Journal, side: int, excludes: ExcludeMatcher) -> Position | None:
    """The tip of `root`'s change log, when every record after `since` names a path as `journal` (its `side`)
    records it on `root` now; None when any does not, or cannot be told path by path (runs on the share:
    call it where a dead one can be abandoned)."""
    changes = read_since(root, since)
    if changes.full or changes.subtrees or changes.tip is None or changes.tip <= since:
        return None
    if len(changes.paths) > MAX_PATHS:
        return None
    named = [rel for rel in changes.paths if rel]  # b"": the root's own attributes, which no run syncs
    folders = {split(rel)[0] for rel in named}
    part = list_scope(root, Scope(folders=folders), excludes)
    if part.tree.unreadable:
        return None
    agreed = {rel: journal.dirs[rel][side] for rel in folders if rel in journal.dirs}
    for rel in named:
        if state(entry_at(part.tree.dirs, rel), entry_at(agreed, rel)) not in (SAME, NONE):
            return None
    return changes.tip
