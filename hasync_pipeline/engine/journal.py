"""The journal: how every path of a pair looked at its last successful sync, on each side.  With it a run tells
"deleted here" from "new there" and an edit from a stale copy (Unison's archives, rclone bisync's listings);
every decision it feeds is in reconcile.py.

Where: `<root>/.hasync/` in both roots (it travels with the data; never synced):
    root-id        this root's identity, written at its first sync: the marker.  A root without it while the
                   other has one is refused (an unmounted share, a swapped disk).
    journal        the current generation;  journal.prev  the one before.
Both copies carry the same generation id.  Anything else - a copy missing or corrupt, two generations (a
side restored from a backup, or a run that stopped between writing the two), a root the journal does not
know - means first-sync mode: nothing is deleted, differing content is a conflict, and the run says so.

Format (a share-writable file must never be able to run code, so no pickle): a magic line, a JSON header
(generation, parent, the two root ids, entry count, BLAKE2b of the body) and a zlib body of per-folder
columns: the agreed state (kind, size, mtime, mode, owner, link target) and each side's identity (inode,
ctime).  ~20 B/entry on disk for a typical tree plus its names.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import fsutil
from .walk import DIR, DirListing, Entry, Row

STATE_DIR = b".hasync"
ROOT_ID, JOURNAL, PREVIOUS = "root-id", "journal", "journal.prev"
MAGIC = b"HASYNC-JOURNAL 1\n"
_U32 = struct.Struct("<I")
# the agreed state's columns (shared by both sides), then each side's identity
_SHARED = (("sizes", "q"), ("mtimes", "q"))
_OWNER = (("modes", "I"), ("uids", "I"), ("gids", "I"))  # side 1's stored only where it differs from side 0's
_IDENTITY = (("inos", "Q"), ("ctimes", "q"))
_SAME_AS_SIDE_0 = b""


class JournalError(Exception):
    """A journal copy cannot be used (corrupt, foreign, unreadable); the message says which and why."""


@dataclass
class Journal:
    """Per folder, two listings with the same names: how each side looked at the last sync (side 0 and
    side 1 are the roots named in `sides`)."""

    generation: str
    parent: str | None
    sides: tuple[str, str]
    dirs: dict[bytes, tuple[DirListing, DirListing]] = field(default_factory=dict)
    # per side, the folders that were mount points (another filesystem than their parent) at that sync: one
    # that is not a mount point now is refused (safety.check_mounts), never taken for emptied
    mounts: tuple[frozenset[bytes], frozenset[bytes]] = (frozenset(), frozenset())

    def side_of(self, root_id: str | None) -> int | None:
        return self.sides.index(root_id) if root_id in self.sides else None

    @property
    def entries(self) -> int:
        return sum(len(pair[0]) for pair in self.dirs.values())


@dataclass
class RootState:
    """What a root says about itself before a run: its marker and its journal copy."""

    root: str
    root_id: str | None
    journal: Journal | None
    problem: str | None = None  # why its journal copy cannot be used


# ---- markers ------------------------------------------------------------------------------------------


def _state_fd(root: str, create: bool = False) -> int:
    root_fd = fsutil.open_root(root)
    try:
        return fsutil.open_dir(root_fd, STATE_DIR, create_mode=0o700 if create else None)
    finally:
        os.close(root_fd)


def _read_small(dir_fd: int, name: str, limit: int = 1 << 30) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


@dataclass
class RootFiles:
    """The marker and journal copy of a root as bytes, read from it (the I/O: in a child, liveness.py)."""

    root: str
    root_id: str | None = None
    data: bytes | None = None
    problem: str | None = None


def read_files(root: str) -> RootFiles:
    """The root's marker and journal bytes (None where absent); an unreadable one is a problem, not an
    exception."""
    try:
        dfd = _state_fd(root)
    except FileNotFoundError:
        return RootFiles(root)
    except OSError as exc:
        return RootFiles(root, problem=f"cannot open {root}/.hasync: {exc.strerror or exc}")
    try:
        raw_id = _read_small(dfd, ROOT_ID, 256)
        files = RootFiles(root, raw_id.decode("ascii", "replace").strip() if raw_id else None)
        try:
            files.data = _read_small(dfd, JOURNAL)
        except OSError as exc:
            files.problem = f"{root}/.hasync/{JOURNAL}: {exc}"
        return files
    finally:
        os.close(dfd)


def parse_root(files: RootFiles, with_body: bool = True) -> RootState:
    """What the root says about itself; a journal that cannot be read is a problem, never an exception: the
    run then goes to first-sync mode.  Without the body, only the header is decoded (and the checksum
    checked): a run uses the source's copy once both agree."""
    if files.problem is not None:
        return RootState(files.root, files.root_id, None, files.problem)
    try:
        journal = decode(files.data, with_body) if files.data is not None else None
    except JournalError as exc:
        return RootState(files.root, files.root_id, None, f"{files.root}/.hasync/{JOURNAL}: {exc}")
    return RootState(files.root, files.root_id, journal)


def read_root(root: str, with_body: bool = True) -> RootState:
    """read_files and parse_root in one (tools and tests; a run reads the files in a child)."""
    return parse_root(read_files(root), with_body)


def ensure_root_id(root: str) -> str:
    """This root's identity, made (and made durable) at its first sync."""
    dfd = _state_fd(root, create=True)
    try:
        existing = _read_small(dfd, ROOT_ID, 256)
        if existing:
            return existing.decode("ascii", "replace").strip()
        root_id = secrets.token_hex(8)
        _write_atomically(dfd, ROOT_ID, (root_id + "\n").encode())
        return root_id
    finally:
        os.close(dfd)


# ---- choosing the journal -----------------------------------------------------------------------------


@dataclass
class Baseline:
    """The journal this run compares against (None: first-sync mode, for `why`)."""

    journal: Journal | None
    why: str = ""
    src_side: int = 0
    dest_side: int = 1


def baseline(src: RootState, dest: RootState) -> Baseline:
    """Pick the journal from the two copies (see the module's docstring)."""
    if src.root_id is None or dest.root_id is None:
        return Baseline(None, "first sync of this pair: no journal yet")
    problems = [p for p in (src.problem, dest.problem) if p]
    if problems:
        return Baseline(None, "; ".join(problems))
    a, b = src.journal, dest.journal
    if a is None or b is None:
        missing = src.root if a is None else dest.root
        return Baseline(None, f"the journal copy in {missing} is missing")
    if a.generation != b.generation:
        return Baseline(
            None,
            f"the two journal copies disagree (generation {a.generation} in {src.root}, "
            f"{b.generation} in {dest.root}): was one side restored from a backup?",
        )
    chosen = a  # the source's copy, read whole (the destination's was read for its header only)
    s, d = chosen.side_of(src.root_id), chosen.side_of(dest.root_id)
    if s is None or d is None or s == d:
        return Baseline(None, "the journal does not know these two roots (a copy was swapped or re-created)")
    return Baseline(chosen, "", s, d)


# ---- writing -------------------------------------------------------------------------------------------


def save(
    roots: tuple[str, str],
    sides: tuple[str, str],
    dirs: dict[bytes, tuple[DirListing, DirListing]],
    parent: str | None,
    mounts: tuple[Iterable[bytes], Iterable[bytes]] = ((), ()),
) -> Journal:
    """Write a new generation into both roots (the previous one kept as journal.prev).  Raises OSError.
    `mounts`: each side's mount points now (side 0, side 1)."""
    journal = Journal(secrets.token_hex(8), parent, sides, dirs, (frozenset(mounts[0]), frozenset(mounts[1])))
    data = encode(journal)
    for root in roots:
        dfd = _state_fd(root, create=True)
        try:
            try:
                os.rename(JOURNAL, PREVIOUS, src_dir_fd=dfd, dst_dir_fd=dfd)
            except FileNotFoundError:
                pass
            _write_atomically(dfd, JOURNAL, data)
        finally:
            os.close(dfd)
    return journal


def _write_atomically(dir_fd: int, name: str, data: bytes) -> None:
    tmp = f".{name}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


# ---- the format ------------------------------------------------------------------------------------------


def _stored(column: Any, code: str) -> bytes:
    """A column's bytes in the format's item type (a walked listing may keep it narrower, or as walk.Same)."""
    return column.tobytes() if column.typecode == code and column.itemsize else array(code, column).tobytes()


def encode(journal: Journal) -> bytes:
    parts: list[bytes] = []
    for rel in sorted(journal.dirs):
        side0, side1 = journal.dirs[rel]
        links = {
            n.decode("utf-8", "surrogateescape"): t.decode("utf-8", "surrogateescape")
            for n, t in (side0.links or {}).items()
        }
        owner1 = [getattr(side1, name) for name, _ in _OWNER]
        same_owner = all(a == getattr(side0, name) for a, (name, _) in zip(owner1, _OWNER, strict=True))
        columns = [
            side0.kinds,
            *(_stored(getattr(side0, name), code) for name, code in _SHARED + _OWNER + _IDENTITY),
            *(_SAME_AS_SIDE_0 if same_owner else _stored(a, code) for a, (_, code) in zip(owner1, _OWNER, strict=True)),
            *(_stored(getattr(side1, name), code) for name, code in _IDENTITY),
            json.dumps(links).encode(),
        ]
        parts += [_U32.pack(len(rel)), rel, _U32.pack(len(side0)), _U32.pack(len(side0.names_blob)), side0.names_blob]
        for column in columns:
            parts += [_U32.pack(len(column)), bytes(column)]
    body = zlib.compress(b"".join(parts), 1)
    header = {
        "generation": journal.generation,
        "parent": journal.parent,
        "sides": list(journal.sides),
        "entries": journal.entries,
        "mounts": [sorted(_text(rel) for rel in side) for side in journal.mounts],
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "blake2b": hashlib.blake2b(body, digest_size=16).hexdigest(),
    }
    return MAGIC + json.dumps(header).encode() + b"\n" + body


def decode(data: bytes, with_body: bool = True) -> Journal:
    if not data.startswith(MAGIC):
        raise JournalError("not an HA Sync journal")
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        generation, parent, sides = str(header["generation"]), header["parent"], header["sides"]
        expected = header["blake2b"]
        listed = header.get("mounts") or [[], []]  # absent in journals written before mount points were kept
        mounts = (frozenset(map(_bytes, listed[0])), frozenset(map(_bytes, listed[1])))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise JournalError(f"bad header ({exc})") from None
    body = data[end + 1 :]
    if hashlib.blake2b(body, digest_size=16).hexdigest() != expected:
        raise JournalError("checksum mismatch (damaged)")
    if len(sides) != 2:
        raise JournalError("bad header (sides)")
    if not with_body:
        return Journal(generation, parent, (str(sides[0]), str(sides[1])), mounts=mounts)
    try:
        raw = zlib.decompress(body)
        dirs = dict(_read_dirs(memoryview(raw)))
    except (zlib.error, struct.error, ValueError, IndexError) as exc:
        raise JournalError(f"unreadable body ({exc})") from None
    return Journal(generation, parent, (str(sides[0]), str(sides[1])), dirs, mounts)


def _text(rel: bytes) -> str:
    return rel.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _read_dirs(raw: memoryview) -> Iterator[tuple[bytes, tuple[DirListing, DirListing]]]:
    pos = 0

    def take() -> memoryview:
        nonlocal pos
        (size,) = _U32.unpack_from(raw, pos)
        chunk = raw[pos + 4 : pos + 4 + size]
        if len(chunk) != size:
            raise ValueError("truncated")
        pos += 4 + size
        return chunk

    def column(code: str) -> array[int]:
        values = array(code)
        values.frombytes(take())  # one copy, at C speed
        return values

    while pos < len(raw):
        rel = bytes(take())
        (count,) = _U32.unpack_from(raw, pos)
        pos += 4
        names_blob, kinds = bytes(take()), bytes(take())
        shared = {name: column(code) for name, code in _SHARED}
        side0 = {name: column(code) for name, code in _OWNER + _IDENTITY}
        side1 = {name: column(code) for name, code in _OWNER}
        side1 = {name: side1[name] if len(side1[name]) else side0[name] for name, _ in _OWNER}
        side1.update({name: column(code) for name, code in _IDENTITY})
        encoded_links = bytes(take())
        links = {
            k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
            for k, v in (json.loads(encoded_links).items() if encoded_links != b"{}" else ())
        }
        columns = [*shared.values(), *side0.values(), *side1.values()]
        if len(kinds) != count or any(len(a) != count for a in columns):
            raise ValueError(f"folder {rel!r}: columns of different lengths")
        yield (
            rel,
            (
                listing_over(names_blob, kinds, {**shared, **side0}, links),
                listing_over(names_blob, kinds, {**shared, **side1}, links),
            ),
        )


def listing_over(
    names_blob: bytes,
    kinds: bytes,
    columns: dict[str, array[int]],
    links: dict[bytes, bytes],
) -> DirListing:
    """A DirListing over existing columns (the two sides share the agreed content's)."""
    listing = DirListing.__new__(DirListing)
    listing.names_blob, listing.kinds, listing.links = names_blob, kinds, links or None
    for name, column in columns.items():
        setattr(listing, name, column)
    return listing


def pair_listing(rows: list[tuple[bytes, Entry, Entry]]) -> tuple[DirListing, DirListing]:
    """Two listings of one folder from (name, entry on side 0, entry on side 1) rows: the agreed content (size,
    mtime, link) is side 0's; mode, owner and identity are each side's own (a non-root run cannot chown, so
    the owners may differ); folders keep no ctime (it moves whenever their contents do)."""
    rows.sort(key=lambda r: r[0])
    zero: list[Row] = []
    one: list[Row] = []
    links: dict[bytes, bytes] = {}
    for name, a, b in rows:
        zero.append((name, a.kind, a.size, a.mtime_ns, a.mode, a.uid, a.gid, a.ino, 0 if a.kind == DIR else a.ctime_ns))
        one.append((name, a.kind, a.size, a.mtime_ns, b.mode, b.uid, b.gid, b.ino, 0 if b.kind == DIR else b.ctime_ns))
        if a.link is not None:
            links[name] = a.link
    side0, side1 = DirListing(zero, links), DirListing(one, links)
    for column, _ in _SHARED:  # one copy of the agreed state
        setattr(side1, column, getattr(side0, column))
    return side0, side1
