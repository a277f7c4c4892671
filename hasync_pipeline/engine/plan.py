"""Compare two listings into a plan: the list of operations a one-way, newest-wins sync needs.

Rules (DESIGN.md "Compare"): dest missing -> create; equal size and |dmtime| <= threshold -> equal; source
newer -> update, but with equal sizes MD5 both first (same bytes -> only set the mtime); dest newer -> skip
(the opposite job carries it back); only in dest -> delete when delete_missing; same mtime with a different
size, or a file/directory/symlink clash -> conflict, reported and left alone.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import compress
from operator import ne

from . import fsutil
from .gcpause import cyclic_gc_paused
from .paths import display, join, split
from .walk import DIR, FILE, KIND_NAMES, LINK, DirListing, Entry, TreeListing

MKDIR, COPY, TOUCH, SYMLINK, DELETE, RMDIR, CONFLICT = (
    "mkdir",
    "copy",
    "touch",
    "symlink",
    "delete",
    "rmdir",
    "conflict",
)
_AUDIT_OPERATION = {
    MKDIR: "create",
    COPY: "update",
    TOUCH: "update",
    SYMLINK: "update",
    DELETE: "delete",
    RMDIR: "delete",
    CONFLICT: "update",
}


@dataclass(slots=True)
class Op:
    action: str
    path: bytes
    src: Entry | None
    dest: Entry | None
    detail: str = ""
    md5_src: str | None = None
    md5_dest: str | None = None

    @property
    def operation(self) -> str:
        """The audit trail's create/update/delete."""
        if self.action in (COPY, SYMLINK) and self.dest is None:
            return "create"
        return _AUDIT_OPERATION[self.action]

    @property
    def copy_bytes(self) -> int:
        return self.src.size if self.action == COPY and self.src is not None else 0

    @property
    def src_entry(self) -> Entry:
        """The source entry of an operation that has one (copies, links, folders made)."""
        assert self.src is not None, f"{self.action} without a source entry"
        return self.src

    @property
    def dest_entry(self) -> Entry:
        """The destination entry of an operation that has one (replacements, deletes)."""
        assert self.dest is not None, f"{self.action} without a destination entry"
        return self.dest

    def describe(self) -> str:
        return f"{self.action:<8} {display(self.path)}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)  # in apply order: mkdir, transfers, deletes, rmdirs
    conflicts: list[Op] = field(default_factory=list)  # reported, never applied
    errors: list[tuple[bytes, str]] = field(default_factory=list)  # subtrees that could not be compared
    unchanged: int = 0
    dest_newer: int = 0
    dest_only_kept: int = 0

    @property
    def skipped(self) -> int:
        return self.unchanged + self.dest_newer + self.dest_only_kept

    def count(self, *actions: str) -> int:
        return sum(1 for op in self.ops if op.action in actions)

    @property
    def copy_bytes(self) -> int:
        return sum(op.copy_bytes for op in self.ops)


@dataclass(frozen=True)
class CompareOptions:
    mtime_threshold_s: float = 2.0
    delete_missing: bool = False
    hash_threads: int = 4


def make_plan(src: TreeListing, dest: TreeListing, opts: CompareOptions = CompareOptions()) -> Plan:
    with cyclic_gc_paused():
        return _make_plan(src, dest, opts)


def _make_plan(src: TreeListing, dest: TreeListing, opts: CompareOptions) -> Plan:
    plan = Plan()
    threshold_ns = int(opts.mtime_threshold_s * 1e9)
    transfers: list[Op] = []
    mkdirs: list[Op] = []
    deletes: list[Op] = []
    rmdirs: list[Op] = []
    to_hash: list[Op] = []
    empty = DirListing([], {})
    recurse = {b""}
    for rel in sorted(src.dirs.keys() | dest.dirs.keys() | src.unreadable.keys() | dest.unreadable.keys()):
        if rel not in recurse:
            continue
        s_list, d_list = src.dirs.get(rel), dest.dirs.get(rel)
        for tree, listing in ((src, s_list), (dest, d_list)):
            if listing is None and rel in tree.unreadable:
                plan.errors.append(
                    (rel, f"cannot read {display(rel)} in {tree.root}: {tree.unreadable[rel]}; subtree left alone")
                )
        if (s_list is None and rel in src.unreadable) or (d_list is None and rel in dest.unreadable):
            continue
        s_list, d_list = s_list or empty, d_list or empty
        if not d_list:  # nothing of this folder in the destination: all of it is created, nothing to compare
            prefix = rel + b"/" if rel else b""
            for name, entry in zip(s_list.names(), s_list.entries(), strict=True):
                _create(prefix + name, entry, mkdirs, transfers, recurse)
            continue
        s_kinds, s_sizes, s_mtimes = s_list.kinds, s_list.sizes, s_list.mtimes
        d_kinds, d_sizes, d_mtimes = d_list.kinds, d_list.sizes, d_list.mtimes
        same, to_check = _pairs_to_check(s_list, d_list)
        plan.unchanged += same
        for name, i, j in to_check:
            if (
                i >= 0
                and j >= 0
                and s_kinds[i] == FILE == d_kinds[j]
                and s_sizes[i] == d_sizes[j]
                and abs(s_mtimes[i] - d_mtimes[j]) <= threshold_ns
            ):
                plan.unchanged += 1  # the common case, decided without building entries
                continue
            s: Entry | None = s_list.entry(i, name) if i >= 0 else None
            d: Entry | None = d_list.entry(j, name) if j >= 0 else None
            path = join(rel, name)
            if d is None:
                assert s is not None  # a merge pair has at least one side
                _create(path, s, mkdirs, transfers, recurse)
            elif s is None:
                if not opts.delete_missing:
                    plan.dest_only_kept += 1
                elif d.kind == DIR:
                    rmdirs.append(Op(RMDIR, path, None, d, "not in source"))
                    recurse.add(path)
                else:
                    deletes.append(Op(DELETE, path, None, d, "not in source"))
            elif s.kind != d.kind:
                plan.conflicts.append(
                    Op(CONFLICT, path, s, d, f"{KIND_NAMES[s.kind]} in source but {KIND_NAMES[d.kind]} in destination")
                )
            elif s.kind == DIR:
                recurse.add(path)
            else:
                _compare_leaf(plan, transfers, to_hash, path, s, d, threshold_ns)
    _settle_by_md5(src.root, dest.root, to_hash, opts.hash_threads)
    rmdirs.reverse()  # deepest first, after the files inside them are gone
    plan.ops = mkdirs + transfers + deletes + rmdirs
    return plan


def _create(path: bytes, s: Entry, mkdirs: list[Op], transfers: list[Op], recurse: set[bytes]) -> None:
    """The operation for an entry the destination does not have."""
    if s.kind == DIR:
        mkdirs.append(Op(MKDIR, path, s, None, "new directory"))
        recurse.add(path)
    else:
        transfers.append(Op(COPY if s.kind == FILE else SYMLINK, path, s, None, "new"))


_NOT_A_FILE = re.compile(b"[^%c]" % FILE)


def _pairs_to_check(s_list: DirListing, d_list: DirListing) -> tuple[int, Iterable[tuple[bytes, int, int]]]:
    """(files certainly unchanged, the (name, i, j) pairs still to compare) for one folder.

    The common case, a folder holding the same names on both sides, is settled column by column at C speed
    (a no-change run of 100k files spent most of its compare time in the name-by-name merge otherwise):
    only entries whose size or mtime differ at all, and folders and symlinks, are handed on."""
    if s_list.names_blob != d_list.names_blob or s_list.kinds != d_list.kinds:
        return 0, _merge(s_list.names(), d_list.names())
    n = len(s_list)
    differ: set[int] = set()
    for mine, theirs in ((s_list.sizes, d_list.sizes), (s_list.mtimes, d_list.mtimes)):
        if mine != theirs:
            differ.update(compress(range(n), map(ne, mine, theirs)))
    differ.update(m.start() for m in _NOT_A_FILE.finditer(s_list.kinds))
    if not differ:
        return n, ()
    names = s_list.names()
    return n - len(differ), [(names[i], i, i) for i in sorted(differ)]


def _merge(an: list[bytes], bn: list[bytes]) -> Iterator[tuple[bytes, int, int]]:
    """Yield (name, index in a or -1, index in b or -1) over two sorted name lists."""
    i = j = 0
    len_a, len_b = len(an), len(bn)
    while i < len_a and j < len_b:
        a, b = an[i], bn[j]
        if a == b:
            yield a, i, j
            i += 1
            j += 1
        elif a < b:
            yield a, i, -1
            i += 1
        else:
            yield b, -1, j
            j += 1
    for k in range(i, len_a):
        yield an[k], k, -1
    for k in range(j, len_b):
        yield bn[k], -1, k


def _compare_leaf(
    plan: Plan, transfers: list[Op], to_hash: list[Op], path: bytes, s: Entry, d: Entry, threshold_ns: int
) -> None:
    delta = s.mtime_ns - d.mtime_ns
    if s.kind == LINK and s.link == d.link:
        plan.unchanged += 1
    elif abs(delta) <= threshold_ns:
        if s.kind == FILE and s.size == d.size:
            plan.unchanged += 1
        else:
            what = "different size" if s.kind == FILE else "different target"
            plan.conflicts.append(Op(CONFLICT, path, s, d, f"same mtime (within threshold) but {what}"))
    elif delta < 0:
        plan.dest_newer += 1
    elif s.kind == LINK:
        transfers.append(Op(SYMLINK, path, s, d, "source newer"))
    elif s.size == d.size:
        op = Op(COPY, path, s, d, "source newer")
        transfers.append(op)
        to_hash.append(op)
    else:
        transfers.append(Op(COPY, path, s, d, "source newer"))


def md5_of(root: str, rel: bytes) -> str:
    """MD5 of a regular file below `root`, opened without following any symlink."""
    root_fd = fsutil.open_root(root)
    try:
        head, name = split(rel)
        dfd = fsutil.open_dir(root_fd, head)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb", buffering=0) as f:
        h = hashlib.md5()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()


def _settle_by_md5(src_root: str, dest_root: str, ops: list[Op], threads: int) -> None:
    """Same size, source newer: identical bytes only need the mtime set (TOUCH), not a copy."""

    def settle(op: Op) -> None:
        try:
            op.md5_src, op.md5_dest = md5_of(src_root, op.path), md5_of(dest_root, op.path)
        except OSError as exc:
            op.detail = f"source newer; could not compare contents ({exc.strerror or exc})"
            return
        if op.md5_src == op.md5_dest:
            op.action, op.detail = TOUCH, "same bytes, only the mtime differs"

    if ops:
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="md5") as pool:
            list(pool.map(settle, ops))
