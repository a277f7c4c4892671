"""Folders get their final mode and mtime after their contents, as `rsync -a` leaves them.

While a run fills a folder it must be writable for us: a new folder is made u+rwx (with its set-gid bit at
once, so what goes in inherits its group), and an existing read-only folder we own is made u+w for the run
(`FileOps` does both; root writes anyway).  Once every batch is done, `settle` gives each folder the run
touched its final mode (the source's for folders made or re-moded this run, else the one the walk saw) and
the source folder's mtime, deepest first (a level's folders on threads at once: levels.py).  Without this a
0555 source folder synced by a non-root user arrived empty, run after run, and every folder's mtime was the
time of the sync.

Cost: a folder the run did not touch costs nothing; a touched one ~6 syscalls (open, fstat, [fchmod],
utime, close, and a stat of the source folder), its parents reached through kept fds (fsutil.FolderFds).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from . import fsutil
from .levels import by_level
from .paths import display
from .plan import COPY, DELETE, HARDLINK, META, MKDIR, MOVE, RENAME_DEST, RMDIR, SYMLINK, Op
from .transfer import Ident, describe_error, ident_of
from .walk import DIR, TreeListing, entry_at

_CHANGES_ITS_FOLDER = (COPY, SYMLINK, HARDLINK, MKDIR, DELETE, RMDIR, MOVE, RENAME_DEST)


def folders_touched(op: Op) -> Iterator[bytes]:
    """The destination folders whose entries `op` adds, replaces or removes (their mtime moves)."""
    if op.action in _CHANGES_ITS_FOLDER:
        yield op.path.rpartition(b"/")[0]
    if op.action in (MOVE, RENAME_DEST) and op.new_path is not None:
        yield op.new_path.rpartition(b"/")[0]


def gets_source_mode(op: Op) -> bool:
    """A folder this operation made or re-moded: its final mode is the source's."""
    return op.action in (MKDIR, META) and op.src is not None and op.src.kind == DIR


class FolderSettler:
    """Collects the folders a run touched (from each operation's outcome) and settles them at the end."""

    def __init__(self, src_root: str, dest_root: str, dest_tree: TreeListing, threads: int = 1):
        self.src_root, self.dest_root, self.dest_tree = src_root, dest_root, dest_tree
        self.threads = threads  # a level's folders settled at once (the run's workers: many on NFS)
        self.modes: dict[bytes, int | None] = {}  # folder -> final mode (None: the mode the walk saw)
        self.made: dict[bytes, Op] = {}  # folders made or re-moded: the journal needs what they are after
        self.removed: set[bytes] = set()  # folders this run removed: nothing left to settle

    def saw(self, op: Op, ok: bool) -> None:
        for folder in folders_touched(op):
            self.modes.setdefault(folder, None)
        if ok and op.action == RMDIR:
            self.removed.add(op.path)  # its deleted files touched it too, in whatever order they end
        if ok and gets_source_mode(op):
            self.modes[op.path] = op.src_entry.mode
            self.made[op.path] = op

    def _removed(self, rel: bytes) -> bool:
        while rel:
            if rel in self.removed:
                return True
            rel = rel.rpartition(b"/")[0]
        return False

    def _walked_mode(self, rel: bytes) -> int | None:
        if not rel:
            return self.dest_tree.root_mode
        entry = entry_at(self.dest_tree.dirs, rel)
        return entry.mode if entry is not None and entry.kind == DIR else None

    def settle(self, beat: Callable[[], None] = lambda: None) -> tuple[dict[int, Ident], list[str]]:
        """Final mode and mtime for each folder touched, deepest first, a level's folders on `threads` threads
        at once.  Returns the new identity of each folder made or re-moded (by id of its op, for the journal)
        and the errors.  `beat`: called as each folder is done (the run's deadline counts it as progress)."""
        idents: dict[int, Ident] = {}
        errors: list[str] = []
        todo = [rel for rel in self.modes if not self._removed(rel)]
        if not todo:
            return idents, errors
        src_fd, dest_fd = fsutil.open_root(self.src_root), fsutil.open_root(self.dest_root)
        src_dirs, dest_dirs = fsutil.FolderFds(src_fd), fsutil.FolderFds(dest_fd)

        def settle_one(rel: bytes) -> Ident | OSError:
            want = self.modes[rel]
            try:
                return _settle_one(src_dirs, dest_dirs, rel, self._walked_mode(rel) if want is None else want)
            except OSError as exc:
                return exc
            finally:
                beat()

        try:
            outcomes = by_level(todo, lambda rel: rel.count(b"/") + bool(rel), settle_one, self.threads, True)
        finally:
            src_dirs.close()
            dest_dirs.close()
            os.close(src_fd)
            os.close(dest_fd)
        for rel, after in zip(todo, outcomes, strict=True):
            if isinstance(after, OSError):
                errors.append(f"{display(rel)}: folder mode and mtime not set: {describe_error(after)}")
            elif rel in self.made:
                idents[id(self.made[rel])] = after
        self.modes.clear()
        self.removed.clear()
        return idents, errors


def _settle_one(src_dirs: fsutil.FolderFds, dest_dirs: fsutil.FolderFds, rel: bytes, mode: int | None) -> Ident:
    head, name = rel.rpartition(b"/")[::2]
    try:
        if rel:
            sfd = src_dirs.open(head)
            try:
                src: os.stat_result | None = os.stat(name, dir_fd=sfd, follow_symlinks=False)
            finally:
                os.close(sfd)
        else:
            src = os.fstat(src_dirs.root_fd)
    except FileNotFoundError:
        src = None  # gone from the source meanwhile: its mtime is left as it is
    dfd = dest_dirs.open(rel)
    try:
        st = os.fstat(dfd)
        if mode is not None:
            fsutil.chmod_dir(dfd, mode, st)
        if src is not None and stat.S_ISDIR(src.st_mode) and st.st_mtime_ns != src.st_mtime_ns:
            os.utime(dfd, ns=(st.st_atime_ns, src.st_mtime_ns))
        return ident_of(os.fstat(dfd))
    finally:
        os.close(dfd)
