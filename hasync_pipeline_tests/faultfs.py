"""The tests' way to a share whose server can die (bench/faultfs.py): faulty_share() mounts one for a `with`
and skips the test, saying why, where this machine has no FUSE bed (as test_latency_bed.py does)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from faultfs import (  # noqa: E402
    FaultyShare,
    MountRefused,
    blocked_in_fuse,
    fuse_missing,
    latencyfs_binary,
    process_state,
)

__all__ = ["FaultyShare", "blocked_in_fuse", "faulty_share", "process_state"]


@contextlib.contextmanager
def faulty_share(
    backing: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    *,
    delay_us: int = 0,
    cache: bool = False,
    control: str | os.PathLike[str] | None = None,
) -> Iterator[FaultyShare]:
    """A mounted FaultyShare (healed) for the `with`, unmounted after it whatever happened; the test is skipped,
    saying why, where there is no FUSE bed."""
    why_not = fuse_missing()
    if why_not is not None:
        pytest.skip(why_not)
    try:
        binary = latencyfs_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    share = FaultyShare(backing, mountpoint, delay_us=delay_us, cache=cache, control=control, binary=binary)
    try:
        share.mount()
    except MountRefused as exc:  # e.g. a container without the right to mount
        pytest.skip(str(exc))
    try:
        yield share
    finally:
        share.unmount()
