"""Checks made before any change.  A refusal stops the whole run, loudly, with nothing touched.

The classic ways a mirror destroys data: a source that is an unmounted (empty) mount point, roots that are
the same folder or nested, a delete storm, and a disk that fills half-way.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import fsutil
from .plan import DELETE, Plan
from .walk import TreeListing


class SafetyRefusal(Exception):
    """The run was refused before any change; the message says why and what to check."""


@dataclass(frozen=True)
class SafetyLimits:
    max_delete_percent: float = 50.0
    free_space_reserve_bytes: int = 64 << 20


def check_roots(src: str, dest: str) -> None:
    for label, path in (("source", src), ("destination", dest)):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SafetyRefusal(f"{label} {path} does not exist (is the volume mounted?)") from None
        except OSError as exc:
            raise SafetyRefusal(f"{label} {path} cannot be reached: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SafetyRefusal(f"{label} {path} is not a directory")
    if os.path.samefile(src, dest):
        raise SafetyRefusal(f"source {src} and destination {dest} are the same folder")
    real_src, real_dest = os.path.realpath(src), os.path.realpath(dest)
    for inner, outer in ((real_src, real_dest), (real_dest, real_src)):
        if inner.startswith(outer.rstrip("/") + "/"):
            raise SafetyRefusal(f"{inner} lies inside {outer}: source and destination must not be nested")


def check_plan(plan: Plan, src: TreeListing, dest: TreeListing, limits: SafetyLimits) -> None:
    if src.is_empty() and dest.entries > 0:
        raise SafetyRefusal(
            f"source {src.root} is empty but destination {dest.root} holds {dest.entries} entries; "
            "refusing (an empty source is usually an unmounted volume)"
        )
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
