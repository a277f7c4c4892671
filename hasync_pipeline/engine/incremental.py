"""A run in `changes` mode: only what the two change logs name is looked at; everything else is taken to be as
the journal left it.  The result is a pair of ordinary TreeListings, so the plan is made by the same
reconcile as a full run (one decision table): a folder the change logs do not name is the journal's listing
of it, which reconcile finds unchanged at once; a folder they name is listed now.

For each changed path: its parent folder is listed (its entries, not below), and the path itself is walked
as a subtree if it is a folder now or was one (a folder moved, made or deleted; one that is a file costs a
failed open).  A rescan record's subtree is walked whole.  What a position means (per direction: each job
reads both sides' logs since its own last run, so the opposite job's changes are still there for it) and
when a run must walk everything instead is changelog.py's and `plan_changes`' to say.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from . import fsutil
from .changelog import Changes, Position, read_since
from .journal import ROOT_ID, STATE_DIR, Baseline
from .liveness import DEST, SRC, Deadlines
from .options import SyncOptions
from .paths import ExcludeMatcher, split
from .walk import DirListing, TreeListing, add_listed, list_folder

POSITIONS = "feed-positions.json"  # in each root's .hasync/, next to the journal


def direction_key(src_id: str, dest_id: str) -> str:
    return f"{src_id}>{dest_id}"


# ---- positions --------------------------------------------------------------------------------------------


def read_positions(root: str, generation: str, key: str) -> tuple[Position, Position] | None:
    """The (source, destination) positions the last `changes` run of this direction recorded, if they go with
    this journal generation (else None: that run's journal is not this one, walk everything)."""
    try:
        entry = _load(root)[key]
        if entry["generation"] != generation:
            return None
        (e1, s1), (e2, s2) = entry["src"], entry["dest"]
        return Position(str(e1), int(s1)), Position(str(e2), int(s2))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_positions(roots: tuple[str, str], generation: str, key: str, positions: tuple[Position, Position]) -> None:
    """Record this direction's positions, for `generation` of the journal, in both roots.  Raises OSError."""
    src, dest = positions
    entry = {"generation": generation, "src": [src.epoch, src.seq], "dest": [dest.epoch, dest.seq]}
    for root in roots:
        data = _load(root)
        data[key] = entry
        _store(root, data)


def carry_positions(roots: tuple[str, str], old: str, new: str) -> None:
    """A run wrote journal generation `new` over `old`: every direction's positions recorded for `old` hold
    for `new` too (the new journal only adds what that run synced).  A crash before this leaves them for
    `old`: the next changes run walks everything.  Raises OSError."""
    for root in roots:
        data = _load(root)
        moved = {key: {**entry, "generation": new} for key, entry in data.items() if entry.get("generation") == old}
        if moved:
            _store(root, {**data, **moved})


def consumed(root: str, epoch: str) -> int | None:
    """How far this root's change log (in `epoch`) has been carried to the other side: the position the last
    clean run that copies away from this root recorded for it (the key "<this root's id>>..."), or None when
    no run has recorded one in this epoch (everything in it is waiting).  The watcher's replication lag."""
    try:
        with open(os.path.join(os.fsdecode(root), os.fsdecode(STATE_DIR), ROOT_ID), encoding="ascii") as f:
            root_id = f.read(256).strip()
    except (OSError, ValueError):
        return None
    seqs = []
    for key, entry in _load(root).items():
        try:
            if key.startswith(f"{root_id}>") and root_id and str(entry["src"][0]) == epoch:
                seqs.append(int(entry["src"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return max(seqs) if seqs else None


def _path(root: str) -> str:
    return os.path.join(os.fsdecode(root), os.fsdecode(STATE_DIR), POSITIONS)


def _load(root: str) -> dict[str, dict[str, Any]]:
    try:
        with open(_path(root), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _store(root: str, data: dict[str, dict[str, Any]]) -> None:
    path = _path(root)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- what to look at ---------------------------------------------------------------------------------------


@dataclass
class Scope:
    """What a changes-mode run lists: `folders` (their entries only) and `subtrees` (everything below)."""

    folders: set[bytes] = field(default_factory=set)
    subtrees: set[bytes] = field(default_factory=set)

    @property
    def paths(self) -> int:
        return len(self.folders) + len(self.subtrees)


def scope_of(changes: tuple[Changes, Changes], known: Container[bytes] = frozenset()) -> Scope:
    """Both sides' changes, as folders to list and subtrees to walk.  `known`: the journal's folders.

    A named path the journal knows as a folder is listed, not walked: what changed below it has its own
    records, and a folder made or moved in there is a rescan record (feed/watcher.py).  Walking it instead
    made the root's own attribute change (a run setting its mtime) a walk of the whole tree: 18 s at 1M."""
    scope = Scope()
    for side in changes:
        scope.subtrees |= side.subtrees
        for rel in side.paths:
            if rel:
                scope.folders.add(split(rel)[0])
            if rel in known:
                scope.folders.add(rel)  # gone now (or a file): taken out with all below it (overlay)
            else:
                scope.subtrees.add(rel)  # walked if it is (or becomes) a folder on either side
    every = scope.subtrees  # a subtree inside another is walked with it
    scope.subtrees = {rel for rel in every if not any(up in every for up in _ancestors(rel))}
    scope.folders = {f for f in scope.folders if not _under(f, scope.subtrees)}
    return scope


def _ancestors(rel: bytes) -> list[bytes]:
    """The folders above `rel`, the root (b"") included: "a/b/c" -> [b"", b"a", b"a/b"]."""
    if not rel:
        return []
    parts = rel.split(b"/")
    return [b""] + [b"/".join(parts[:i]) for i in range(1, len(parts))]


def _under(rel: bytes, subtrees: set[bytes]) -> bool:
    """`rel` is one of `subtrees` or inside one: a set lookup per ancestor, not a scan of the set (a burst of
    10k changed paths against a journal of 100k folders)."""
    return rel in subtrees or any(up in subtrees for up in _ancestors(rel))


# ---- listing the scope on one side ---------------------------------------------------------------------------


@dataclass
class Part:
    """One side's listing of a Scope: the folders it could list, and those that are not there (or not folders)."""

    tree: TreeListing
    missing: set[bytes] = field(default_factory=set)


def list_scope(root: str, scope: Scope, excludes: ExcludeMatcher, beat: Callable[[], None] | None = None) -> Part:
    """List `scope` under `root` now (runs where a dead share can be abandoned: liveness.py)."""
    tree = TreeListing(root=root)
    part = Part(tree)
    root_fd = fsutil.open_root(root)
    root_st = os.fstat(root_fd)
    root_dev, tree.root_mode = root_st.st_dev, root_st.st_mode & 0o7777
    try:

        def take(rel: bytes) -> list[tuple[bytes, tuple[int, int]]] | None:
            try:
                listed = list_folder(root_fd, rel, excludes)
            except (FileNotFoundError, NotADirectoryError):
                part.missing.add(rel)
                return None
            except OSError as exc:
                tree.unreadable[rel] = exc.strerror or str(exc)
                return None
            if beat is not None:
                beat()
            return add_listed(tree, rel, listed, _dev_of(root_fd, rel, root_dev), root_dev)

        for rel in sorted(scope.folders):
            take(rel)
        for top in sorted(scope.subtrees):
            stack = [top]
            while stack:
                subdirs = take(stack.pop())
                if subdirs:
                    stack.extend(sub for sub, _ in subdirs)
    finally:
        os.close(root_fd)
    return part


def _dev_of(root_fd: int, rel: bytes, root_dev: int) -> int:
    if not rel:
        return root_dev
    try:
        return os.stat(rel, dir_fd=root_fd, follow_symlinks=False).st_dev
    except OSError:
        return root_dev


# ---- the tree as it is now ------------------------------------------------------------------------------------


def overlay(
    journal_dirs: dict[bytes, DirListing], journal_mounts: frozenset[bytes], scope: Scope, part: Part, root: str
) -> TreeListing:
    """One side now: the journal's listings (that side's), with what `part` listed in their place and what it
    found missing taken out.  The result is what a full walk would have listed if the change logs are right."""
    fresh = part.tree
    tree = TreeListing(root=root)
    tree.dirs = {
        rel: listing
        for rel, listing in journal_dirs.items()
        if not _under(rel, scope.subtrees) and not _under(rel, part.missing)
    }
    tree.dirs.update(fresh.dirs)
    tree.unreadable, tree.special, tree.leftovers = fresh.unreadable, fresh.special, fresh.leftovers
    tree.holding_hidden, tree.root_mode = fresh.holding_hidden, fresh.root_mode
    outside = [m for m in journal_mounts if not _under(m, scope.subtrees)]
    tree.mount_points = sorted(set(outside) | set(fresh.mount_points))
    tree.mounts = sorted(set(outside) | set(fresh.mounts))
    for listing in tree.dirs.values():
        tree.count(listing)
    return tree


# ---- the walk step of a changes run ----------------------------------------------------------------------------


@dataclass
class ChangesWalk:
    """What the walk step of a changes run found: both trees (None: walk everything, `why` says why), and the
    change logs' tips to record as this direction's positions once the run has ended clean."""

    trees: tuple[TreeListing, TreeListing] | None
    tips: tuple[Position, Position] | None
    key: str = ""
    why: str = ""
    scope: Scope | None = None


def walk_changes(
    roots: tuple[str, str], ids: tuple[str | None, str | None], base: Baseline, deadlines: Deadlines, opts: SyncOptions
) -> ChangesWalk:
    """Read both change logs since this direction's positions and list what they name, under `deadlines`."""
    src, dest = roots
    if base.journal is None or ids[0] is None or ids[1] is None:
        return ChangesWalk(None, None, why=f"no journal to start from ({base.why})")
    key = direction_key(ids[0], ids[1])
    positions = deadlines.call((SRC,), read_positions, src, base.journal.generation, key)
    since = positions if positions is not None else (None, None)
    changes = deadlines.results([((SRC,), read_since, (src, since[0])), ((DEST,), read_since, (dest, since[1]))])
    a, b = changes[0].tip, changes[1].tip
    tips = (a, b) if a is not None and b is not None else None
    for label, side in zip(("source", "destination"), changes, strict=True):
        if side.full:
            return ChangesWalk(None, tips, key, f"{label} {side.full}")
    scope = scope_of((changes[0], changes[1]), base.journal.dirs)
    excludes = ExcludeMatcher(opts.excludes)
    parts = deadlines.results(
        [
            ((SRC,), list_scope, (src, scope, excludes, deadlines.board.beater(SRC))),
            ((DEST,), list_scope, (dest, scope, excludes, deadlines.board.beater(DEST))),
        ]
    )
    journal = base.journal
    trees = tuple(
        overlay({rel: pair[side] for rel, pair in journal.dirs.items()}, journal.mounts[side], scope, part, root)
        for side, part, root in ((base.src_side, parts[0], src), (base.dest_side, parts[1], dest))
    )
    return ChangesWalk((trees[0], trees[1]), tips, key, "", scope)
