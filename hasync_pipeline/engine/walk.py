"""Parallel tree walk into a compact, per-directory listing.

Why per directory and columnar: a 1M-file tree as a dict of tuples costs ~270 bytes an entry; one sorted
name blob plus a few typed arrays per directory costs ~45, and two sorted listings of the same directory
compare by a merge, without any global index.
"""

from __future__ import annotations

import os
import queue
import resource
import stat
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple

from . import fsutil
from .changelog import Position
from .changelog import tip as changelog_tip
from .forking import Child, call_in_child
from .gcpause import cyclic_gc_paused
from .latency import AUTO_THREADS, on_network
from .paths import INTERNAL_PREFIX, TMP_PREFIX, ExcludeMatcher, join

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

    from .liveness import Board
    from .options import SyncOptions

FILE, DIR, LINK = 0, 1, 2
_S_IFREG, _S_IFDIR, _S_IFLNK, _DOT = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, ord(".")  # the hot loop's constants
KIND_NAMES = {FILE: "file", DIR: "directory", LINK: "symlink"}


class Entry(NamedTuple):
    """One entry, materialised only while comparing.  (ino, ctime_ns) is its identity on its side: any change
    to its content or metadata moves ctime, which no user can set; the journal keeps it to tell an edit."""

    kind: int
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    ino: int = 0
    ctime_ns: int = 0
    link: bytes | None = None


Row = tuple[bytes, int, int, int, int, int, int, int, int]  # name, then Entry's fields but the link


class Same:
    """A column holding one value n times: a folder's owner and group, nearly always one user's.  Reads like
    the array it replaces (index, iterate, compare with an array, tobytes) and costs no bytes per entry: 8 of
    the 64 a 1M-entry walk took per entry (bench_engine --million)."""

    __slots__ = ("value", "n")
    typecode, itemsize = "I", 0

    def __init__(self, value: int, n: int):
        self.value, self.n = value, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError("column index out of range")
        return self.value

    def __iter__(self) -> Iterator[int]:
        return repeat(self.value, self.n)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Same):
            return self.n == other.n and (self.value == other.value or self.n == 0)
        if isinstance(other, array):
            return len(other) == self.n and other.count(self.value) == self.n
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like array: compared, never a key

    def tobytes(self) -> bytes:
        return (array(self.typecode, (self.value,)) * self.n).tobytes()

    def __repr__(self) -> str:
        return f"Same({self.value}, {self.n})"


def _owner_column(values: tuple[int, ...]) -> Same | array[int]:
    """Same when every entry has one value (checked at C speed), else an array."""
    if values and values.count(values[0]) == len(values):
        return Same(values[0], len(values))
    return array("I", values)


class DirListing:
    """The entries of one directory, sorted by name, stored as columns."""

    __slots__ = ("names_blob", "kinds", "sizes", "mtimes", "modes", "uids", "gids", "inos", "ctimes", "links")

    def __init__(self, rows: list[Row], links: dict[bytes, bytes]):
        rows.sort()
        names, kinds, sizes, mtimes, modes, uids, gids, inos, ctimes = (
            zip(*rows, strict=True) if rows else ((),) * 9
        )  # rows -> columns
        self.names_blob = b"\0".join(names)
        self.kinds = bytes(kinds)
        self.sizes = array("q", sizes)
        self.mtimes = array("q", mtimes)
        self.modes = array("H", modes)  # permission bits only (<= 0o7777)
        self.uids = _owner_column(uids)
        self.gids = _owner_column(gids)
        self.inos = array("Q", inos)
        self.ctimes = array("q", ctimes)
        self.links = links or None  # name -> target, symlinks only (rare)

    def __len__(self) -> int:
        return len(self.kinds)

    def names(self) -> list[bytes]:
        return self.names_blob.split(b"\0") if self.kinds else []

    def entry(self, i: int, name: bytes) -> Entry:
        return Entry(
            self.kinds[i],
            self.sizes[i],
            self.mtimes[i],
            self.modes[i],
            self.uids[i],
            self.gids[i],
            self.inos[i],
            self.ctimes[i],
            self.links.get(name) if self.links else None,
        )

    def entries(self) -> Iterator[Entry]:
        """Every entry in name order, built at C speed (a new folder's 100k files: half the time of entry())."""
        rows = map(Entry, self.kinds, self.sizes, self.mtimes, self.modes, self.uids, self.gids, self.inos, self.ctimes)
        if not self.links:
            return rows
        return (
            e._replace(link=self.links[n]) if e.kind == LINK else e for n, e in zip(self.names(), rows, strict=True)
        )

    def columns(self) -> tuple[array[int] | Same, ...]:
        return (self.sizes, self.mtimes, self.modes, self.uids, self.gids, self.inos, self.ctimes)

    def nbytes(self) -> int:
        return (
            len(self.names_blob)
            + len(self.kinds)
            + sum(a.itemsize * len(a) for a in self.columns())
            + sum(len(k) + len(v) for k, v in (self.links or {}).items())
        )


@dataclass
class TreeListing:
    root: str
    dirs: dict[bytes, DirListing] = field(default_factory=dict)
    unreadable: dict[bytes, str] = field(default_factory=dict)  # dir rel path -> reason (never "empty")
    special: list[bytes] = field(default_factory=list)  # FIFOs, sockets, devices: skipped
    leftovers: list[bytes] = field(default_factory=list)  # temp files of an interrupted run
    # folders holding names ha-sync leaves alone (excluded or internal): never removed as "emptied"
    holding_hidden: set[bytes] = field(default_factory=set)
    mounts: list[bytes] = field(default_factory=list)  # folders on another filesystem than the root
    mount_points: list[bytes] = field(default_factory=list)  # folders on another filesystem than their parent
    root_mode: int = 0  # the root folder's permission bits
    fingerprint: str | None = field(default=None, compare=False, repr=False)  # fingerprint.py's, once computed
    # the root's change-log tip, read before the walk began: everything it names is in this listing, so a
    # clean run may record it as its position (incremental.py).  None: no change log, or not a full walk
    feed_tip: Position | None = field(default=None, compare=False, repr=False)
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0

    @property
    def entries(self) -> int:
        return self.files + self.directories + self.symlinks

    def count(self, listing: DirListing) -> None:
        """Add one folder's entries to the totals."""
        kinds = listing.kinds
        self.files += kinds.count(FILE)
        self.directories += kinds.count(DIR)
        self.symlinks += kinds.count(LINK)
        self.bytes += sum(listing.sizes)

    def is_empty(self) -> bool:
        root = self.dirs.get(b"")
        return root is not None and len(root) == 0


def entry_at(dirs: dict[bytes, DirListing], rel: bytes) -> Entry | None:
    """The entry at `rel` (not the root), or None.  Linear in its folder's size: for a few lookups."""
    head, _, name = rel.rpartition(b"/")
    listing = dirs.get(head)
    if listing is None:
        return None
    names = listing.names()
    return listing.entry(names.index(name), name) if name in names else None


class WalkError(OSError):
    """The root itself could not be listed."""


# one folder listed: its listing, its subfolders (with their identity), special files, leftover temp files,
# whether it holds names left alone (excluded or internal), its fd if kept open for its subfolders (or None)
_Listed = tuple[DirListing, list[tuple[bytes, tuple[int, int]]], list[bytes], list[bytes], bool, int | None]


class KeptFolders:
    """Listed folders' fds, each kept open until its subfolders have been opened through it.  A folder then
    costs one openat of its name instead of one per component of its path from the root (each a round trip
    on NFS: depth 6 is 6).  At most `budget` are kept at once, a share of the process's fd limit: a wide
    tree's frontier can be thousands of folders, and past the budget a subfolder is opened by its path."""

    def __init__(self, budget: int | None = None):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = soft if soft != resource.RLIM_INFINITY else 1 << 16
        self.budget = budget if budget is not None else max(0, min(1024, limit // 4))
        self._waiting: dict[int, int] = {}  # fd -> its subfolders not yet opened through it
        self._lock = threading.Lock()

    def keep(self, fd: int, subfolders: int) -> bool:
        """Keep `fd` open for `subfolders` opens through it; False (close it yourself) past the budget."""
        with self._lock:
            if len(self._waiting) >= self.budget:
                return False
            self._waiting[fd] = subfolders
            return True

    def opened_one(self, fd: int) -> None:
        """One subfolder of `fd` is open (or failed to open): the last one closes it."""
        with self._lock:
            left = self._waiting[fd] - 1
            if left:
                self._waiting[fd] = left
                return
            del self._waiting[fd]
        os.close(fd)

    def close_all(self) -> None:
        """A walk that stopped half-way: close what its unstarted subfolders would have."""
        with self._lock:
            fds, self._waiting = list(self._waiting), {}
        for fd in fds:
            os.close(fd)

    def __len__(self) -> int:
        return len(self._waiting)


STAT_FANOUT = 64  # a folder with more entries than this has them stat'ed by the walk's threads together


def _lstat(entry: os.DirEntry[str], beat: Callable[[], None] | None = None) -> os.stat_result | None:
    try:
        st = entry.stat(follow_symlinks=False)  # fstatat on the folder's fd: no path from the root
    except FileNotFoundError:
        return None  # vanished since readdir: as if never there
    if beat is not None:
        beat()  # an answer from the share (liveness.Board): a flat folder of 1M photos is progress all along
    return st


def _open_folder(root_fd: int, rel: bytes, parent_fd: int | None, kept: KeptFolders) -> int:
    """Open `rel` through its parent's kept fd (one openat), or by its path from the root."""
    if parent_fd is None:
        return fsutil.open_dir(root_fd, rel)
    try:
        return fsutil.open_child(parent_fd, rel.rpartition(b"/")[2])
    finally:
        kept.opened_one(parent_fd)


def _list_one(
    root_fd: int,
    rel: bytes,
    expect: tuple[int, int] | None,
    excludes: ExcludeMatcher,
    kept: KeptFolders,
    parent_fd: int | None = None,
    stat_pool: Executor | None = None,
    beat: Callable[[], None] | None = None,
) -> _Listed:
    """List one folder.  `stat_pool` (a network filesystem): a big folder's entries are stat'ed across its
    threads, each stat one round trip (a flat folder of 20k photos: 20 s at 1 ms serially, ~1.3 s by 16).
    The folder's fd is kept open for its subfolders when `kept` has room (the last element: it or None)."""
    fd = _open_folder(root_fd, rel, parent_fd, kept)
    keep = False
    try:
        if expect is not None:
            here = os.fstat(fd)
            if (here.st_dev, here.st_ino) != expect:
                raise OSError("directory was replaced while walking")
        rows: list[Row] = []
        links: dict[bytes, bytes] = {}
        subdirs: list[tuple[bytes, tuple[int, int]]] = []
        special: list[bytes] = []
        leftovers: list[bytes] = []
        add = rows.append
        excluded = excludes.excluded if excludes else None
        hidden = False
        fan_out = stat_pool is not None
        listed: list[tuple[bytes, Any]] = []  # (name, its stat) - or, to fan out, (name, its DirEntry)
        with os.scandir(fd) as it:
            for e in it:  # the per-entry hot path: kept flat on purpose
                name = e.name.encode("utf-8", "surrogateescape")
                if name[0] == _DOT and name.startswith(INTERNAL_PREFIX):
                    if name.startswith(TMP_PREFIX):
                        leftovers.append(join(rel, name))  # removed before any change: not kept
                    else:
                        hidden = True
                    continue
                if excluded is not None and excluded(join(rel, name), name):
                    hidden = True
                    continue
                if fan_out:
                    listed.append((name, e))
                    continue
                try:
                    listed.append((name, e.stat(follow_symlinks=False)))  # fstatat on the folder's fd
                except FileNotFoundError:
                    continue  # vanished since readdir: as if never there
        if stat_pool is not None:
            lstat = partial(_lstat, beat=beat)
            if len(listed) > STAT_FANOUT:
                stats: Iterable[os.stat_result | None] = stat_pool.map(lstat, [e for _, e in listed])
            else:
                stats = map(lstat, [e for _, e in listed])
            listed = [(name, st) for (name, _), st in zip(listed, stats, strict=True) if st is not None]
        for name, st in listed:
            mode = st.st_mode
            fmt, perm = mode & 0o170000, mode & 0o7777
            if fmt == _S_IFREG:
                kind = FILE
            elif fmt == _S_IFDIR:
                subdirs.append((join(rel, name), (st.st_dev, st.st_ino)))
                add((name, DIR, 0, st.st_mtime_ns, perm, st.st_uid, st.st_gid, st.st_ino, 0))
                continue  # a folder keeps no ctime (it moves whenever its contents do)
            elif fmt == _S_IFLNK:
                links[name] = os.readlink(name, dir_fd=fd)
                kind = LINK
            else:
                special.append(join(rel, name))
                continue
            add((name, kind, st.st_size, st.st_mtime_ns, perm, st.st_uid, st.st_gid, st.st_ino, st.st_ctime_ns))
        keep = bool(subdirs) and kept.keep(fd, len(subdirs))
        return DirListing(rows, links), subdirs, special, leftovers, hidden, fd if keep else None
    finally:
        if not keep:
            os.close(fd)


def add_listed(
    tree: TreeListing, rel: bytes, listed: _Listed, here_dev: int, root_dev: int
) -> list[tuple[bytes, tuple[int, int]]]:
    """Record one listed folder in `tree` (`here_dev`: its own device, `root_dev`: the root's); returns its
    subfolders."""
    listing, subdirs, special, leftovers, hidden, _ = listed
    tree.dirs[rel] = listing
    tree.special.extend(special)
    tree.leftovers.extend(leftovers)
    if hidden:
        tree.holding_hidden.add(rel)
    tree.mounts.extend(sub for sub, (dev, _) in subdirs if dev != root_dev)
    tree.mount_points.extend(sub for sub, (dev, _) in subdirs if dev != here_dev)
    tree.count(listing)
    return subdirs


def list_folder(root_fd: int, rel: bytes, excludes: ExcludeMatcher) -> _Listed:
    """One folder's entries, not those below (incremental.py lists the folders the change logs name)."""
    return _list_one(root_fd, rel, None, excludes, KeptFolders(budget=0))


def threads_for(root: str) -> int:
    """The walk's threads when the setting says auto (0).  One on a local disk: more only contend for the
    GIL (8 took 2.3x as long here).  AUTO_THREADS across a network, where the threads overlap the round
    trips (bench/bench_nfs.py)."""
    return AUTO_THREADS if on_network(root) else 1


def walk_tree(
    root: str, excludes: ExcludeMatcher | None = None, threads: int = 1, beat: Callable[[], None] | None = None
) -> TreeListing:
    """List `root` recursively with `threads` concurrent scandirs.  Symlinks are never followed.

    One thread is fastest on a local disk (the GIL turns more into contention: 8 threads took 2.3x as
    long here); more may pay on a high-latency NFS mount.

    `threads` 0: chosen for the filesystem (threads_for).  A directory that cannot be read is recorded in
    `unreadable` (its subtree is unknown, not empty); the root itself failing raises WalkError.  `beat` is
    called as the share answers (each folder listed; each entry stat'ed on a network filesystem): the run's
    deadline (liveness.py) counts those as progress.
    """
    with cyclic_gc_paused():
        return _walk_tree(root, excludes or ExcludeMatcher(), threads or threads_for(root), beat)


def _walk_tree(root: str, excludes: ExcludeMatcher, threads: int, beat: Callable[[], None] | None) -> TreeListing:
    tree = TreeListing(root=root)
    try:
        tree.feed_tip = changelog_tip(root)  # first: a change recorded after it is after the walk began
    except (OSError, ValueError):
        tree.feed_tip = None
    try:
        root_fd = fsutil.open_root(root)
    except OSError as exc:
        raise WalkError(exc.errno, f"cannot open {root}: {exc.strerror}") from None

    root_st = os.fstat(root_fd)
    root_dev, tree.root_mode = root_st.st_dev, root_st.st_mode & 0o7777

    def record(rel: bytes, ident: tuple[int, int] | None, listed: _Listed) -> list[tuple[bytes, tuple[int, int]]]:
        if beat is not None:
            beat()
        return add_listed(tree, rel, listed, ident[0] if ident is not None else root_dev, root_dev)

    def failed(rel: bytes, exc: OSError) -> None:
        if not rel:
            raise WalkError(exc.errno, f"cannot list {root}: {exc.strerror or exc}") from None
        tree.unreadable[rel] = exc.strerror or str(exc)

    kept = KeptFolders()
    try:
        if threads <= 1:
            stack: list[tuple[bytes, tuple[int, int] | None, int | None]] = [(b"", None, None)]
            while stack:
                rel, ident, parent_fd = stack.pop()
                try:
                    listed = _list_one(root_fd, rel, ident, excludes, kept, parent_fd)
                except OSError as exc:
                    failed(rel, exc)
                    continue
                stack.extend((sub, sub_ident, listed[-1]) for sub, sub_ident in record(rel, ident, listed))
        else:
            from concurrent.futures import ThreadPoolExecutor  # only here: ha-sync's start-up stays light

            done: queue.SimpleQueue[tuple[bytes, tuple[int, int] | None, Future[_Listed]]] = queue.SimpleQueue()
            # folders on one pool, a big folder's stats on another: a folder's thread waits for its stats,
            # a stat waits for nothing, so neither pool can starve the other
            with (
                ThreadPoolExecutor(max_workers=threads, thread_name_prefix="walk") as pool,
                ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stat") as stat_pool,
            ):

                def submit(rel: bytes, ident: tuple[int, int] | None, parent_fd: int | None) -> None:
                    pool.submit(
                        _list_one, root_fd, rel, ident, excludes, kept, parent_fd, stat_pool, beat
                    ).add_done_callback(lambda fut: done.put((rel, ident, fut)))

                submit(b"", None, None)
                pending = 1
                while pending:
                    rel, ident, fut = done.get()
                    pending -= 1
                    try:
                        listed = fut.result()
                    except OSError as exc:
                        failed(rel, exc)
                        continue
                    for sub_rel, sub_ident in record(rel, ident, listed):
                        submit(sub_rel, sub_ident, listed[-1])
                        pending += 1
    finally:
        kept.close_all()
        os.close(root_fd)
    return tree


def start_walks(src: str, dest: str, opts: SyncOptions, board: Board) -> tuple[Child, Child]:
    """Start walking both folders now, each in a forked process (the CLI does it before its imports, lease
    and database set-up, which then overlap the walks); hand them to session.walk_pair.  Nothing is asked of
    either root here (a dead server's root never answers): a walk of a root that is no folder fails in its
    child, after walk_pair's checks have refused the run.  `board`: where each walk shows its progress."""
    from .liveness import DEST, SRC

    excludes = ExcludeMatcher(opts.excludes)

    def start(root: str, slot: int) -> Child:
        return call_in_child(walk_tree, root, excludes, opts.walk_threads, board.beater(slot), group=True)

    return start(src, SRC), start(dest, DEST)
