"""The change log: which paths under a pair root changed, as the watcher saw them, for incremental runs.

It lives with the journal, in `<root>/.hasync/changes/`, on the server's own disk (the watcher runs there):

    seg-<epoch>-<first seq, 16 digits>.log     one line per record: "<seq> p <path>" or "<seq> r <subtree>"

Paths are relative to the root, percent-encoded bytes (any name round-trips, newlines included).  `p`: this
path changed (created, written, deleted, moved, chmod); `r`: rescan this subtree (b"" is the whole root) -
what the watcher could not follow name by name (a folder moved in, a queue overflow).  The **epoch** changes
each time a watcher starts: what happened while none ran is unknown, so a reader holding a position of
another epoch must walk everything.  Records are appended and fsync'd in small batches; a segment is closed
at SEGMENT_BYTES and the oldest dropped past MAX_SEGMENTS: a reader whose position is older than the oldest
record kept finds a gap, and walks everything too.  Every way this can fail says so and falls back to a full
walk: the change log can make a run cheaper, never make it skip a change.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes

STATE_FOLDER = ".hasync"  # the journal's folder (journal.STATE_DIR); the change log and fences live in it
CHANGES_DIR = os.path.join(STATE_FOLDER, "changes")
SEGMENT_BYTES = 4 << 20  # a segment is closed at this size (~60k records of typical paths)
MAX_SEGMENTS = 16  # kept at most: 64 MiB of changes; older ones dropped (a reader that far behind walks)
_TAIL = 64 << 10  # bytes of a segment's end that tip() reads (a record's line is far shorter)
_SEGMENT = re.compile(r"^seg-([0-9a-f]{16})-(\d{16})\.log$")


FENCE_PREFIX = "fence-"  # in .hasync/: a reader's fence; the watcher removes it once it has logged what came before
FENCE_SECONDS = 0.5  # how long a reader waits for that (a watcher answers in milliseconds; none: it gives up)


def fence(root: str, timeout: float = FENCE_SECONDS) -> bool:
    """Wait until the watcher of `root` has appended every change made under it before now: a fence file is
    made in `root`/.hasync/, which the watcher removes once it has logged every event read before it (one
    inotify queue: in order).  False when none answered in time (no watcher, or a busy one).  Polled by open
    (NFS's close-to-open check asks the server each time; a stat may answer from the client's cache)."""
    if not os.path.isdir(os.path.join(root, CHANGES_DIR)):
        return False  # no watcher has ever run here
    path = os.path.join(root, STATE_FOLDER, f"{FENCE_PREFIX}{secrets.token_hex(8)}")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.close(os.open(path, os.O_RDONLY))
        except FileNotFoundError:
            return True
        time.sleep(0.01)  # an NFS client gets no inotify event: polling is the only way to hear it
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return False


@dataclass(frozen=True, order=True)
class Position:
    """How far a reader has read: the last record's sequence number within a watcher's epoch."""

    epoch: str
    seq: int


@dataclass
class Changes:
    """What changed under a root since a position: exact `paths` and `subtrees` to walk, or `full` (walk
    everything) with the reason why."""

    tip: Position | None
    paths: set[bytes] = field(default_factory=set)
    subtrees: set[bytes] = field(default_factory=set)
    full: str = ""  # non-empty: walk the whole root, because of this

    @property
    def nothing(self) -> bool:
        return not (self.full or self.paths or self.subtrees)


def _encode(rel: bytes) -> str:
    return quote_from_bytes(rel, safe="/") or "."


def _decode(text: str) -> bytes:
    return b"" if text == "." else unquote_to_bytes(text)


def _segments(root: str) -> list[tuple[str, int, str]]:
    """(epoch, first seq, file name) of each segment, oldest first."""
    try:
        names = os.listdir(os.path.join(root, CHANGES_DIR))
    except FileNotFoundError:
        return []
    found = [(m.group(1), int(m.group(2)), name) for name in names if (m := _SEGMENT.match(name))]
    return sorted(found, key=lambda s: (s[1], s[0]))


class ChangeLogWriter:
    """The watcher's end: a new epoch per writer (per watcher start), records appended in batches."""

    def __init__(self, root: str, segment_bytes: int = SEGMENT_BYTES, max_segments: int = MAX_SEGMENTS):
        self.root = root
        self.dir = os.path.join(root, CHANGES_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self.epoch = secrets.token_hex(8)
        self.segment_bytes, self.max_segments = segment_bytes, max_segments
        previous = _segments(root)
        self.seq = previous[-1][1] if previous else 0  # numbers keep growing across epochs: easier to read
        self._fd: int | None = None
        self._size = 0
        self.append(rescans=[b""])  # a new epoch starts with "everything may have changed meanwhile"

    @property
    def tip(self) -> Position:
        return Position(self.epoch, self.seq)

    def append(self, paths: Iterable[bytes] = (), rescans: Iterable[bytes] = ()) -> Position:
        """Append the records and fsync them: once this returns, a reader sees them (and so does a reader
        after a power cut)."""
        lines = []
        for kind, rels in (("r", rescans), ("p", paths)):
            for rel in rels:
                self.seq += 1
                lines.append(f"{self.seq} {kind} {_encode(rel)}\n")
        if not lines:
            return self.tip
        if self._fd is None or self._size >= self.segment_bytes:
            self._rotate()
        data = "".join(lines).encode("ascii")
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._size += len(data)
        return self.tip

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        name = f"seg-{self.epoch}-{self.seq:016d}.log"
        self._fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new segment's name survives a power cut
        finally:
            os.close(dir_fd)
        for _, _, old in _segments(self.root)[: -self.max_segments]:
            os.remove(os.path.join(self.dir, old))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_since(root: str, since: Position | None) -> Changes:
    """What the change log of `root` names after `since` (the position the journal recorded at the last
    sync).  Anything it cannot vouch for makes the answer `full`, saying why."""
    segments = _segments(root)
    if not segments:
        return Changes(None, full="no change log (is the watcher running on this server?)")
    epoch = segments[-1][0]
    mine = [s for s in segments if s[0] == epoch]
    changes = Changes(None)
    if since is None:
        changes.full = "no position recorded by the last sync"
    elif since.epoch != epoch:
        changes.full = "the watcher restarted since the last sync (new epoch)"
    last = None
    for index, (_, _, name) in enumerate(mine):
        with open(os.path.join(root, CHANGES_DIR, name), "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        if lines[-1] and index < len(mine) - 1:  # only the segment being written may end mid-line
            return Changes(None, full=f"change log segment {name} is damaged")
        for raw in lines[:-1]:  # a last line without its newline is being written: the next run has it
            parts = raw.split(b" ")
            if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in (b"p", b"r"):
                return Changes(last, full=f"change log segment {name} is damaged")
            seq = int(parts[0])
            if last is not None and seq != last.seq + 1:
                changes.full = changes.full or f"change log has a gap after record {last.seq}"
            if last is None and since is not None and since.epoch == epoch and seq > since.seq + 1:
                changes.full = changes.full or "the change log no longer holds the records since the last sync"
            last = Position(epoch, seq)
            if since is not None and since.epoch == epoch and seq <= since.seq:
                continue
            rel = _decode(parts[2].decode("ascii"))
            if parts[1] == b"r":
                if rel == b"":
                    changes.full = changes.full or "the watcher asked for a rescan of the whole root"
                changes.subtrees.add(rel)
            else:
                changes.paths.add(rel)
    changes.tip = last
    if since is not None and last is not None and since.epoch == epoch and since.seq > last.seq:
        changes.full = changes.full or "the change log is behind the last sync (truncated or restored?)"
    return changes


def tip(root: str) -> Position | None:
    """The last complete record's position (reads the last segment only): where a run that reads the change
    log next starts from, once this run has seen everything."""
    segments = _segments(root)
    if not segments:
        return None
    epoch, _, name = segments[-1]
    with open(os.path.join(root, CHANGES_DIR, name), "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _TAIL))
        lines = f.read().split(b"\n")[:-1]  # its tail only: a follower asks every second, over NFS
    for raw in reversed(lines):
        head = raw.split(b" ", 1)[0]
        if head.isdigit():
            return Position(epoch, int(head))
    return None
