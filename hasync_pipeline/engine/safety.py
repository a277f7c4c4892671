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
from dataclasses import dataclass

from . import fsutil
from .journal import Baseline, RootState
from .plan import DELETE, Plan
from .walk import TreeListing


class SafetyRefusal(Exception):
    """The run was refused before any change; the message says why and what to check."""


@dataclass(frozen=True)
class SafetyLimits:
    max_delete_percent: float = 50.0
    free_space_reserve_bytes: int = 64 << 20


def check_roots(src: str, dest: str, writing: bool = True) -> None:
    """Both roots exist, are folders, are not the same or nested; `writing` (a real run): both can be written
    (a two-way sync writes its journal, and a conflict's rename, on both sides) - else one line now, not one
    EROFS failure per file."""
    for label, path in (("source", src), ("destination", dest)):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SafetyRefusal(f"{label} {path} does not exist (is the volume mounted?)") from None
        except OSError as exc:
            raise SafetyRefusal(f"{label} {path} cannot be reached: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SafetyRefusal(f"{label} {path} is not a directory")
        if writing and os.statvfs(path).f_flag & os.ST_RDONLY:
            raise SafetyRefusal(f"{label} {path} is on a read-only filesystem (mounted ro?); a sync writes both sides")
        if writing and not os.access(path, os.W_OK | os.X_OK) and st.st_uid != os.geteuid():  # its owner may chmod
            raise SafetyRefusal(f"{label} {path} is not writable by this user (uid {os.geteuid()})")
    if os.path.samefile(src, dest):
        raise SafetyRefusal(f"source {src} and destination {dest} are the same folder")
    real_src, real_dest = os.path.realpath(src), os.path.realpath(dest)
    for inner, outer in ((real_src, real_dest), (real_dest, real_src)):
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


def check_plan(plan: Plan, dest: TreeListing, limits: SafetyLimits) -> None:
    deletes = plan.count(DELETE)
    dest_files = dest.files + dest.symlinks
    if deletes and dest_files and deletes * 100.0 / dest_files > limits.max_delete_percent:
        raise SafetyRefusal(
            f"the plan deletes {deletes} of {dest_files} files in {dest.root} "
            f"({deletes * 100.0 / dest_files:.1f}% > --max-delete {limits.max_delete_percent:g}%); refusing"
        )
    needed = plan.copy_bytes
    if needed:
        fd = fsutil.open_root(dest.root)
        try:
            available, _total = fsutil.free_bytes(fd)
        finally:
            os.close(fd)
        if needed > available - limits.free_space_reserve_bytes:
            raise SafetyRefusal(
                f"copies need {needed} bytes but {dest.root} has {available} bytes free "
                f"(keeping {limits.free_space_reserve_bytes} in reserve); refusing before starting"
            )


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
