"""Relative paths as bytes, internal names, exclude globs.

Paths inside the engine are always *bytes* relative to a pair root ("a/b/c", b"" for the root itself),
so names that are not valid UTF-8 round-trip unchanged.  Text is only made at the edges (logs, audit).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable

INTERNAL_PREFIX = b".hasync"  # .hasync/ (journal, marker), .hasync-trash/, .hasync-tmp-*: never synced
TRASH_DIR = b".hasync-trash"
TMP_PREFIX = b".hasync-tmp-"


def join(dir_rel: bytes, name: bytes) -> bytes:
    return dir_rel + b"/" + name if dir_rel else name


def split(rel: bytes) -> tuple[bytes, bytes]:
    """'a/b/c' -> ('a/b', 'c');  'c' -> ('', 'c')."""
    head, _, tail = rel.rpartition(b"/")
    return head, tail


def mount_of(mounts: Iterable[bytes], rel: bytes) -> bytes:
    """The mount point (relative, b"" for the root's own filesystem) whose filesystem holds `rel`: the
    deepest of `mounts` that is `rel` or one of its parents.  A rename cannot leave it (EXDEV)."""
    found = b""
    for mount in mounts:
        if (rel == mount or rel.startswith(mount + b"/")) and len(mount) > len(found):
            found = mount
    return found


def display(rel: bytes | str) -> str:
    """A printable, unambiguous form of a path for messages (non-UTF-8 bytes as \\xNN, newlines escaped)."""
    if isinstance(rel, str):
        rel = os.fsencode(rel)
    text = rel.decode("utf-8", "backslashreplace") or "."
    return text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


class ExcludeMatcher:
    """rsync-like globs: a pattern without '/' matches a name at any depth, one with '/' the whole path."""

    def __init__(self, patterns: list[str] | tuple[str, ...] = ()):
        self.patterns = tuple(patterns)
        # Translate on the bytes of the pattern (seen as latin-1) so it matches bytes names, UTF-8 or not.
        raw = [os.fsencode(p.strip("/")).decode("latin-1") for p in self.patterns]
        name_rx = [fnmatch.translate(p) for p in raw if "/" not in p]
        path_rx = [fnmatch.translate(p) for p in raw if "/" in p]
        self._name = re.compile("|".join(name_rx).encode("latin-1")) if name_rx else None
        self._path = re.compile("|".join(path_rx).encode("latin-1")) if path_rx else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, rel: bytes, name: bytes) -> bool:
        if self._name is not None and self._name.match(name):
            return True
        return self._path is not None and self._path.match(rel) is not None
