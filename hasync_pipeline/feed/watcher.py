"""`ha-sync watch`: inotify on a server's own pair roots, appending what changed to each root's change log.

inotify through `inotify_simple` (a thin, dependency-free wrapper of the three syscalls that hands over the
raw events: IN_Q_OVERFLOW and the move cookies included, which a higher-level watcher such as watchfiles
coalesces away; we need them to know when to ask for a rescan).  It sees local writes and NFS clients'
writes alike (nfsd writes through the VFS).  One watch per folder: `fs.inotify.max_user_watches` bounds the
folders (the kernel's default is derived from RAM; fanotify's filesystem marks are the way past that).

What cannot be followed name by name becomes a rescan record: a folder created or moved in (its contents
may have appeared before its watch did), a folder that cannot be watched, a queue overflow (the whole root).
Events are coalesced for BATCH_SECONDS, then appended and fsync'd in one write.  A reader's fence (a file it
makes in .hasync/, changelog.fence) ends the batch at once and is removed once the batch is logged: the reader
then knows every change made before it is in the log (a run's echo test, engine/echo.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator

from inotify_simple import INotify, flags

from ..engine.changelog import FENCE_PREFIX, STATE_FOLDER, ChangeLogWriter, Position
from ..engine.incremental import consumed
from ..engine.paths import INTERNAL_PREFIX, join

BATCH_SECONDS = 0.2  # events are gathered this long before one append (a burst becomes one write)
_MASK = (
    flags.CREATE
    | flags.MODIFY
    | flags.CLOSE_WRITE
    | flags.ATTRIB
    | flags.DELETE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.DONT_FOLLOW
    | flags.EXCL_UNLINK
)


class Waiting:
    """When each batch of this epoch's records was seen: (last seq of the batch, wall time of its first event),
    in order, those already carried dropped.  Bounded: past MAX_BATCHES, neighbours merge keeping the earlier
    time, so the lag it tells can only be too long, never too short."""

    MAX_BATCHES = 4096

    def __init__(self, start: Position):
        # the epoch's first record (a rescan of the root: what changed while no watcher ran) waits too
        self.epoch = start.epoch
        self.batches: list[tuple[int, float]] = [(start.seq, time.time())]

    def add(self, tip: Position, seen_at: float) -> None:
        if tip.epoch != self.epoch:
            self.epoch, self.batches = tip.epoch, []
        self.batches.append((tip.seq, seen_at))
        if len(self.batches) > self.MAX_BATCHES:
            pairs = zip(self.batches[0::2], self.batches[1::2], strict=False)
            merged = [(later[0], min(earlier[1], later[1])) for earlier, later in pairs]
            self.batches = merged + (self.batches[-1:] if len(self.batches) % 2 else [])

    def oldest_after(self, seq: int | None) -> float | None:
        """The first event time of the records after `seq` (None: none carried yet, all of them)."""
        if seq is not None:
            keep = next((i for i, (last, _) in enumerate(self.batches) if last > seq), len(self.batches))
            del self.batches[:keep]
        return self.batches[0][1] if self.batches else None


class RootWatch:
    """One pair root: its watches (watch descriptor -> folder, relative) and its change log."""

    def __init__(self, inotify: INotify, root: str):
        self.inotify, self.root = inotify, root
        self.log = ChangeLogWriter(root)
        self.folders: dict[int, bytes] = {}
        self.paths: set[bytes] = set()
        self.rescans: set[bytes] = set()
        self.waiting = Waiting(self.log.tip)
        self.fences: list[str] = []  # readers' fences seen (changelog.fence): removed once the batch is logged
        self.state_dir = os.path.join(root, STATE_FOLDER)
        self.state_wd = inotify.add_watch(self.state_dir, flags.CREATE | flags.MOVED_TO)
        self.watch_tree(b"")

    def watch_tree(self, rel: bytes) -> None:
        """Watch `rel` and every folder below it (internal folders excepted); one that cannot be watched
        (gone already, or no watch left) is rescanned instead."""
        base = os.fsencode(self.root)
        for dirpath, dirnames, _ in os.walk(os.path.join(base, rel) if rel else base):
            dirnames[:] = [d for d in dirnames if not d.startswith(INTERNAL_PREFIX)]
            here = os.path.relpath(dirpath, base)
            here = b"" if here == b"." else here
            try:
                self.folders[self.inotify.add_watch(dirpath, _MASK)] = here
            except OSError as exc:
                self.rescans.add(b"" if exc.errno == errno.ENOSPC else here)  # ENOSPC: max_user_watches

    def take(self, wd: int, mask: int, name: bytes) -> bool:
        """One event: the path it names, and what else it means (a new folder to watch, a watch gone).
        True for a reader's fence: the batch ends now."""
        if wd == self.state_wd:
            if name.startswith(FENCE_PREFIX.encode()):
                self.fences.append(os.fsdecode(name))
                return True
            return False
        folder = self.folders.get(wd)
        if folder is None:
            return False
        if mask & flags.IGNORED:
            del self.folders[wd]
            return False
        if mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            self.paths.add(folder)
            return False
        if name.startswith(INTERNAL_PREFIX):
            return False
        rel = join(folder, name)
        self.paths.add(rel)
        if mask & flags.ISDIR and mask & (flags.CREATE | flags.MOVED_TO):
            self.watch_tree(rel)
            self.rescans.add(rel)  # what it holds may have arrived before its watch
        return False

    def flush(self, seen_at: float | None = None) -> None:
        """Append what was gathered; `seen_at` (wall clock): when its first event was read."""
        if self.paths or self.rescans:
            self.log.append(sorted(self.paths), sorted(self.rescans))
            self.paths.clear()
            self.rescans.clear()
            self.waiting.add(self.log.tip, time.time() if seen_at is None else seen_at)
        for name in self.fences:  # logged (and fsync'd) everything read before it: the reader may go on
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.state_dir, name))
        self.fences.clear()

    def pending_since(self) -> float | None:
        """When the oldest change not yet carried to the other side was seen (wall clock), or None when every
        change is: the replication lag's start.  Reads this root's own positions file (a local disk)."""
        return self.waiting.oldest_after(consumed(self.root, self.log.epoch))


class Watcher:
    """All of one server's pair roots in one inotify instance."""

    def __init__(self, roots: list[str]):
        self.inotify = INotify()
        self.roots = [RootWatch(self.inotify, root) for root in roots]
        for root in self.roots:
            root.flush()

    def _owner(self, wd: int) -> RootWatch | None:
        return next((root for root in self.roots if wd in root.folders or wd == root.state_wd), None)

    def step(self, timeout: float) -> int:
        """Wait up to `timeout` s for events, gather them for BATCH_SECONDS, append them.  Returns how many."""
        events = self.inotify.read(timeout=int(timeout * 1000))
        if not events:
            return 0
        deadline, seen_at = time.monotonic() + BATCH_SECONDS, time.time()
        count, fenced = 0, False
        while True:
            for event in events:
                count += 1
                if event.mask & flags.Q_OVERFLOW:
                    for root in self.roots:
                        root.rescans.add(b"")
                    continue
                owner = self._owner(event.wd)
                if owner is not None:
                    fenced = owner.take(event.wd, event.mask, os.fsencode(event.name)) or fenced
            left = deadline - time.monotonic()
            if left <= 0 or fenced:  # a reader waits on a fence: no gathering past it
                break
            events = self.inotify.read(timeout=int(left * 1000))
            if not events:
                break
        for root in self.roots:
            root.flush(seen_at)
        return count

    def run(self, stop: Callable[[], bool] = lambda: False) -> Iterator[int]:
        while not stop():
            yield self.step(1.0)

    def close(self) -> None:
        for root in self.roots:
            root.log.close()
        self.inotify.close()
