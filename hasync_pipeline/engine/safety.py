"""Checks made before any change.  A refusal stops the whole run, loudly, with nothing touched.

The classic ways a mirror destroys data: a root that is an unmounted (empty) mount point, roots that are the
same folder or nested, a delete storm, and a disk that fills half-way.  A root that has synced before carries
a marker (journal.py); one that lost it, or that is empty while the journal lists entries, is refused by both
directions, before any change.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import fsutil
from .journal import Baseline, RootState
from .latency import on_network
from .paths import display
from .plan import DELETE, Plan
from .walk import TreeListing


class SafetyRefusal(Exception):
    """The run was refused before any change; the message says why and what to check."""


@dataclass(frozen=True)
class SafetyLimits:
    max_delete_percent: float = 50.0
    free_space_reserve_bytes: int = 64 << 20


@dataclass(frozen=True)
class RootFacts:
    """What a root is, looked at once per run in a child (liveness.py: the first call a run makes on it, and
    its liveness probe): the checks below and the choice of threads and workers are made from this."""

    path: str
    problem: str | None = None  # "does not exist (is the volume mounted?)", "is not a directory", ...
    identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino)
    real: str = ""
    network: bool = False  # every call a round trip (latency.on_network)


def look_at_root(path: str, writing: bool) -> RootFacts:
    """The facts of one root; `writing` (a real run): whether it can be written (a two-way sync writes its
    journal, and a conflict's rename, on both sides) - else one line now, not one EROFS failure per file."""
    try:
        st = os.stat(path)
        flags = os.statvfs(path).f_flag  # NFS asks the server every time: the liveness probe too
    except FileNotFoundError:
        return RootFacts(path, "does not exist (is the volume mounted?)")
    except OSError as exc:
        return RootFacts(path, f"cannot be reached: {exc.strerror}")
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif writing and flags & os.ST_RDONLY:
        problem = "is on a read-only filesystem (mounted ro?); a sync writes both sides"
    elif writing and not os.access(path, os.W_OK | os.X_OK) and st.st_uid != os.geteuid():  # its owner may chmod
        problem = f"is not writable by this user (uid {os.geteuid()})"
    return RootFacts(path, problem, (st.st_dev, st.st_ino), os.path.realpath(path), on_network(path))


def check_roots(src: RootFacts, dest: RootFacts) -> None:
    """Both roots exist, are folders (writable for a real run), are not the same or nested."""
    for label, facts in (("source", src), ("destination", dest)):
        if facts.problem is not None:
            raise SafetyRefusal(f"{label} {facts.path} {facts.problem}")
    if src.identity == dest.identity:
        raise SafetyRefusal(f"source {src.path} and destination {dest.path} are the same folder")
    for inner, outer in ((src.real, dest.real), (dest.real, src.real)):
        if inner.startswith(outer.rstrip("/") + "/"):
            raise SafetyRefusal(f"{inner} lies inside {outer}: source and destination must not be nested")


def check_markers(
    src: RootState, dest: RootState, src_tree: TreeListing, dest_tree: TreeListing, base: Baseline
) -> None:
    """Both roots carry their marker, or neither does (a first sync); neither is empty while the journal
    lists entries; and before any journal exists an empty source is not taken for a deletion of everything."""
    for root, other in ((src, dest), (dest, src)):
        if root.root_id is None and other.root_id is not None:
            raise SafetyRefusal(
                f"{root.root} has no .hasync marker although {other.root} has one: is the share mounted? If "
                f"this is a new, empty copy on purpose, remove {other.root}/.hasync to start over with a first "
                "sync (a first sync deletes nothing)"
            )
    journal = base.journal
    if journal is not None and journal.entries:
        for tree in (src_tree, dest_tree):
            if tree.is_empty():
                raise SafetyRefusal(
                    f"{tree.root} is empty but the journal lists {journal.entries} entries synced there: an "
                    "unmounted share? Nothing was changed on either side"
                )
    elif src_tree.is_empty() and dest_tree.entries > 0:
        raise SafetyRefusal(
            f"source {src_tree.root} is empty but destination {dest_tree.root} holds {dest_tree.entries} "
            "entries and they have never synced; refusing (an empty source is usually an unmounted volume)"
        )


def check_mounts(
    base: Baseline, trees: tuple[TreeListing, TreeListing], labels: tuple[str, str], allowed: Iterable[str] = ()
) -> None:
    """A folder that was a mount point at the last sync (another filesystem than its parent: a second disk,
    a nested export) and is not one now - empty, gone, or on its parent's filesystem - is refused like an
    emptied root, by both directions: an unmounted disk looks exactly like one whose files were all deleted
    (Unison issue 262; this project lost such files too, 12-03).  `allowed`: folders (relative to the root)
    the user said are plain folders now, on purpose."""
    journal = base.journal
    if journal is None:
        return
    allow = {os.fsencode(rel.strip("/")) for rel in allowed}
    for side, tree, label in zip((base.src_side, base.dest_side), trees, labels, strict=True):
        now = set(tree.mount_points)
        gone = sorted(rel for rel in journal.mounts[side] if rel not in now and rel not in allow)
        if gone:
            shown = ", ".join(display(rel) for rel in gone[:5])
            if len(gone) > 5:
                shown += f" and {len(gone) - 5} more"
            raise SafetyRefusal(
                f"{label}: {shown} in {tree.root} was a mount point at the last sync and is not one now (its disk "
                "or export not mounted?); nothing was changed on either side. Mount it again; or, if it is a plain "
                f"folder now on purpose, run once with the setting allow_unmounted (--allow-unmounted "
                f"{display(gone[0])}): its entries are then compared as they are, deletions included"
            )


def check_plan(plan: Plan, dest: TreeListing, limits: SafetyLimits, free_bytes: Callable[[], int]) -> None:
    """Deletions within max_delete; the copies fit the destination (`free_bytes`: its free space, asked only
    when there is something to copy)."""
    deletes = plan.count(DELETE)
    dest_files = dest.files + dest.symlinks
    if deletes and dest_files and deletes * 100.0 / dest_files > limits.max_delete_percent:
        raise SafetyRefusal(
            f"the plan deletes {deletes} of {dest_files} files in {dest.root} "
            f"({deletes * 100.0 / dest_files:.1f}% > --max-delete {limits.max_delete_percent:g}%); refusing"
        )
    needed = plan.copy_bytes
    if needed:
        available = free_bytes()
        if needed > available - limits.free_space_reserve_bytes:
            raise SafetyRefusal(
                f"copies need {needed} bytes but {dest.root} has {available} bytes free "
                f"(keeping {limits.free_space_reserve_bytes} in reserve); refusing before starting"
            )


def free_bytes(root: str) -> int:
    """The bytes a user may still write in `root`'s filesystem."""
    fd = fsutil.open_root(root)
    try:
        return fsutil.free_bytes(fd)[0]
    finally:
        os.close(fd)


def clock_skew(root: str) -> float:
    """How far the clock that stamps files in `root` (the file server's, on NFS) is from this machine's, in
    seconds: a file is made there and its mtime compared.  Decisions never compare clocks; conflict copies'
    names and the mtime threshold of a first sync do, so a skew is reported."""
    fd = fsutil.open_root(root)
    name = f".hasync-tmp-clock-{os.getpid()}"
    try:
        before = time.time()
        probe = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            os.write(probe, b".")
            stamped = os.fstat(probe).st_mtime
        finally:
            os.close(probe)
            os.unlink(name, dir_fd=fd)
        return stamped - (before + time.time()) / 2
    finally:
        os.close(fd)
