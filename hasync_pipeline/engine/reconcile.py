"""Every two-way decision, in one place: each path is judged from three states - the source now, the journal
(how both sides were at the last sync), the destination now - never by comparing clocks across machines.

    source vs journal  | destination vs journal       | this run (source -> destination)
    -------------------|------------------------------|-----------------------------------------------------
    unchanged          | unchanged                    | nothing
    changed / new      | unchanged / absent           | copy (metadata only if only mode/owner changed)
    deleted            | unchanged                    | delete there (into the trash) if delete_missing
    unchanged / absent | changed / new / deleted      | nothing: the opposite job carries it
    changed / new      | changed / new, same content  | record only
    changed / new      | changed / new, different     | CONFLICT: the newer mtime keeps the name, the other is
                       |   (or file vs folder)        |   renamed on its own side to name.sync-conflict-...
    changed            | deleted                      | copy: the edit wins (restored), reported
    deleted            | changed                      | nothing: the opposite job restores it, reported there
    deleted            | deleted                      | forget it

With no journal (first-sync mode) every path is "new" wherever it exists: the union of both sides, nothing
deleted, differing content a conflict.  A folder or file that vanished at one path and appeared at another
on the source with the same inode is a move: renamed on the destination, no data copied, no delete counted.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from operator import ne

from . import xattrs
from .gcpause import cyclic_gc_paused
from .journal import Baseline, Journal, listing_over, pair_listing
from .paths import display, join, mount_of, split
from .plan import (
    CONFLICT,
    COPY,
    DELETE,
    HARDLINK,
    META,
    METADATA,
    MKDIR,
    MOVE,
    MOVED,
    ORDER,
    RENAME_DEST,
    RENAME_SRC,
    RESTORED,
    RMDIR,
    SYMLINK,
    TOUCH,
    Op,
    Plan,
    md5_of,
)
from .transfer import Ident
from .walk import DIR, FILE, KIND_NAMES, LINK, DirListing, Entry, TreeListing, entry_at

# one side of one path, against the journal
NONE, NEW, SAME, CHANGED, GONE = "none", "new", "same", "changed", "gone"
_EMPTY = DirListing([], {})


@dataclass(frozen=True)
class ReconcileOptions:
    mtime_threshold_ns: int
    delete_missing: bool
    hash_threads: int
    labels: tuple[str, str]  # what to call the source and the destination in a conflict copy's name
    now: datetime
    owners: bool = True  # mode and owner are compared (root); mode only otherwise (a user cannot chown)
    xattrs: bool = False  # a file whose only change is its xattrs or ACLs gets them (read only for such files)
    hard_links: bool = False  # names of one source inode stay one inode on the destination


def state(now: Entry | None, then: Entry | None) -> str:
    """How one side of a path changed since the journal.  A file or link is unchanged while its inode and
    ctime are (any write, chmod or chown moves ctime, which no user can set back); a folder while its kind,
    mode and owner are (its ctime moves whenever its contents do)."""
    if now is None:
        return GONE if then is not None else NONE
    if then is None:
        return NEW
    if now.kind != then.kind:
        return CHANGED
    if now.kind == DIR:
        return SAME if (now.mode, now.uid, now.gid) == (then.mode, then.uid, then.gid) else CHANGED
    return SAME if (now.ino, now.ctime_ns) == (then.ino, then.ctime_ns) else CHANGED


def conflict_name(name: bytes, side: str, when: datetime) -> bytes:
    """Syncthing's shape: `name.sync-conflict-<date>-<time>-<side>.ext` (hidden files keep their dot)."""
    stem, dot, ext = name.rpartition(b".")
    if not stem or not dot:  # no extension, or a name like ".bashrc"
        stem, ext = name, b""
    tag = f".sync-conflict-{when.strftime('%Y%m%d-%H%M%S')}-{side}".encode()
    return stem + tag + (b"." + ext if ext else b"")


# ---- the next journal -----------------------------------------------------------------------------------

_SET, _OP = "set", "op"


@dataclass
class Draft:
    """The journal this run will leave, by folder: whole folders kept as they were, or per name either the
    (source, destination) entries now or the operation whose success decides them (`fallback` otherwise)."""

    kept: dict[bytes, tuple[DirListing, DirListing]] = field(default_factory=dict)
    rows: dict[bytes, dict[bytes, tuple[str, Entry | None, Entry | None, Op | None]]] = field(default_factory=dict)
    # folders whose names did not change: the journal's listings, with `rows` patched in by index
    patched: dict[bytes, tuple[DirListing, DirListing]] = field(default_factory=dict)
    moves: list[Op] = field(default_factory=list)
    changed: bool = False

    def set(self, rel: bytes, name: bytes, src: Entry, dest: Entry, news: bool = True) -> None:
        """Both sides agree on this entry now (`news`: and the journal did not know them so)."""
        self.rows.setdefault(rel, {})[name] = (_SET, src, dest, None)
        self.changed = self.changed or news

    def keep(self, rel: bytes, name: bytes, j_src: Entry | None, j_dest: Entry | None) -> None:
        if j_src is not None and j_dest is not None:
            self.rows.setdefault(rel, {})[name] = (_SET, j_src, j_dest, None)

    def after(self, rel: bytes, name: bytes, op: Op, fallback: tuple[Entry, Entry] | None) -> None:
        """The entry follows `op`: (its source, the destination as the op left it), else `fallback`."""
        f_src, f_dest = fallback if fallback is not None else (None, None)
        self.rows.setdefault(rel, {})[name] = (_OP, f_src, f_dest, op)
        self.changed = True

    def drop(self, rel: bytes, name: bytes) -> None:
        self.rows.get(rel, {}).pop(name, None)


def finalize(draft: Draft, done: dict[int, Ident | None]) -> dict[bytes, tuple[DirListing, DirListing]]:
    """The next journal's folders, (source, destination) listings each, once the operations have run:
    `done` maps id(op) of each successful operation to the destination's (inode, ctime) after it."""
    out = dict(draft.kept)
    out.update(draft.patched)  # folders whose names did not change and that have no row: as they were
    for rel, names in draft.rows.items():
        resolved = {name: _resolve(row, done) for name, row in names.items()}
        base = draft.patched.get(rel)
        if base is not None and all(pair is not None for pair in resolved.values()):
            out[rel] = _patch(base, resolved)  # type: ignore[arg-type]
            continue
        rows = {name: (a, b) for name, a, b in _rows_of_pair(base)} if base is not None else {}
        rows.update(resolved)  # type: ignore[arg-type]
        kept = [(name, pair[0], pair[1]) for name, pair in rows.items() if pair is not None]
        if kept:
            out[rel] = pair_listing(kept)
        else:
            out.pop(rel, None)
    return out


def _resolve(
    row: tuple[str, Entry | None, Entry | None, Op | None], done: dict[int, Ident | None]
) -> tuple[Entry, Entry] | None:
    """A draft row -> (source, destination) entries for the journal, or None: not in it."""
    kind, src, dest, op = row
    if kind == _OP:
        assert op is not None
        if id(op) in done:
            ident = done[id(op)]
            if op.action in (DELETE, RMDIR) or ident is None:
                return None
            src = op.src_entry
            ino, ctime_ns, mode, uid, gid = ident  # the destination as the operation left it
            dest = src._replace(ino=ino, ctime_ns=ctime_ns, mode=mode, uid=uid, gid=gid)
    return (src, dest) if src is not None and dest is not None else None


_SIDE_COLUMNS = ("modes", "uids", "gids", "inos", "ctimes")


def _patch(
    base: tuple[DirListing, DirListing], rows: dict[bytes, tuple[Entry, Entry]]
) -> tuple[DirListing, DirListing]:
    """The journal's listings of a folder with a few entries replaced in place (same names): copies of its
    columns, patched by index, instead of a rebuild of every entry."""
    a, b = base
    at = {name: i for i, name in enumerate(a.names())}
    kinds = bytearray(a.kinds)
    shared = {c: array(getattr(a, c).typecode, getattr(a, c)) for c in ("sizes", "mtimes")}
    sides = [{c: array(getattr(x, c).typecode, getattr(x, c)) for c in _SIDE_COLUMNS} for x in (a, b)]
    links = dict(a.links or {})
    for name, entries in rows.items():
        i = at[name]
        src = entries[0]
        kinds[i] = src.kind
        shared["sizes"][i], shared["mtimes"][i] = src.size, src.mtime_ns
        for cols, e in zip(sides, entries, strict=True):
            cols["modes"][i], cols["uids"][i], cols["gids"][i] = e.mode, e.uid, e.gid
            cols["inos"][i], cols["ctimes"][i] = e.ino, 0 if e.kind == DIR else e.ctime_ns
        if src.link is not None:
            links[name] = src.link
        else:
            links.pop(name, None)
    return (
        listing_over(a.names_blob, bytes(kinds), {**shared, **sides[0]}, links),
        listing_over(a.names_blob, bytes(kinds), {**shared, **sides[1]}, links),
    )


# ---- the planner ----------------------------------------------------------------------------------------


def reconcile(src: TreeListing, dest: TreeListing, base: Baseline, opts: ReconcileOptions) -> tuple[Plan, Draft]:
    with cyclic_gc_paused():
        return _Reconciler(src, dest, base, opts).run()


class _Reconciler:
    def __init__(self, src: TreeListing, dest: TreeListing, base: Baseline, opts: ReconcileOptions):
        self.src, self.dest, self.base, self.opts = src, dest, base, opts
        self.journal: Journal | None = base.journal
        self.plan = Plan(first_sync=base.why if base.journal is None else "")
        self.draft = Draft()
        self.ops: list[Op] = []
        self.compare: list[tuple[bytes, bytes, Entry, Entry, tuple[Entry, Entry] | None]] = []
        self.to_touch: list[Op] = []
        self.gone_files: dict[int, tuple[bytes, bytes, Entry, Entry, Entry]] = {}  # src inode -> deleted path
        self.fresh: set[bytes] = set()  # folders (re)created whole on the destination: their journal is moot
        self.special = set(src.special) | set(dest.special)  # FIFOs, sockets, devices: never acted on
        self.held = _with_ancestors(dest.holding_hidden)  # destination folders that stay: they hold excluded names
        self._sorted_dirs: list[bytes] | None = None

    def j_pair(self, rel: bytes) -> tuple[DirListing, DirListing] | None:
        if self.journal is None or (self.fresh and any(rel == f or rel.startswith(f + b"/") for f in self.fresh)):
            return None
        pair = self.journal.dirs.get(rel)
        if pair is None:
            return None
        return pair[self.base.src_side], pair[self.base.dest_side]

    def run(self) -> tuple[Plan, Draft]:
        if self.journal is not None:
            self._moved_folders()
        recurse = {b""}
        rels = self.src.dirs.keys() | self.dest.dirs.keys() | self.src.unreadable.keys() | self.dest.unreadable.keys()
        if self.journal is not None:
            rels |= self.journal.dirs.keys()
        for rel in sorted(rels):
            if rel in recurse:
                self._folder(rel, recurse)
        self._moved_files()
        self._settle_by_md5()
        if self.opts.hard_links:
            self._hard_links()
        self.ops.sort(key=lambda op: ORDER.index(op.action))
        rmdirs = [op for op in self.ops if op.action == RMDIR]
        self.plan.ops = [op for op in self.ops if op.action != RMDIR] + rmdirs[::-1]  # deepest folders first
        return self.plan, self.draft

    # ---- one folder ------------------------------------------------------------------------------------
    def _folder(self, rel: bytes, recurse: set[bytes]) -> None:
        for tree in (self.src, self.dest):
            if rel in tree.unreadable and rel not in tree.dirs:
                self.plan.errors.append(
                    (rel, f"cannot read {display(rel)} in {tree.root}: {tree.unreadable[rel]}; subtree left alone")
                )
        if (rel in self.src.unreadable and rel not in self.src.dirs) or (
            rel in self.dest.unreadable and rel not in self.dest.dirs
        ):
            self._keep_subtree(rel)
            return
        s_l, o_l = self.src.dirs.get(rel, _EMPTY), self.dest.dirs.get(rel, _EMPTY)
        jp = self.j_pair(rel)
        if jp is not None and _unchanged(s_l, jp[0]) and _unchanged(o_l, jp[1]):
            self.draft.kept[rel] = jp  # the common case, decided column by column
            self.plan.unchanged += len(s_l) - s_l.kinds.count(DIR)
            recurse.update(join(rel, n) for n, k in zip(s_l.names(), s_l.kinds, strict=True) if k == DIR)
            return
        if (
            jp is not None
            and s_l.names_blob == jp[0].names_blob == o_l.names_blob
            and s_l.kinds == jp[0].kinds == o_l.kinds
        ):
            self._same_names(rel, s_l, jp, o_l, recurse)  # a few entries changed: found column by column
            return
        if jp is None and not o_l:  # a folder only the source has (and never had in the journal): all new
            for name, new in zip(s_l.names(), s_l.entries(), strict=True):
                self._create(rel, name, join(rel, name), new, None)
                if new.kind == DIR:
                    recurse.add(join(rel, name))
            return
        js_l, jo_l = jp if jp is not None else (_EMPTY, _EMPTY)
        s_at, js_at, o_at = _index(s_l), _index(js_l), _index(o_l)
        for name in sorted(s_at.keys() | js_at.keys() | o_at.keys()):
            s = s_l.entry(s_at[name], name) if name in s_at else None
            o = o_l.entry(o_at[name], name) if name in o_at else None
            j = (js_l.entry(js_at[name], name), jo_l.entry(js_at[name], name)) if name in js_at else None
            if self.special and join(rel, name) in self.special:
                self.draft.keep(rel, name, *(j or (None, None)))  # a special file here: that path is left
                continue  # alone on both sides (reported as an error), never deleted or replaced
            if self._path(rel, name, s, j, o):
                recurse.add(join(rel, name))

    def _same_names(
        self, rel: bytes, s_l: DirListing, jp: tuple[DirListing, DirListing], o_l: DirListing, recurse: set[bytes]
    ) -> None:
        """A folder holding the same names on both sides and in the journal, some entry changed: only the
        entries whose identity or metadata differ go through the table; the rest stay as the journal has them
        (the draft patches them in by index)."""
        changed = _differing(s_l, jp[0]) | _differing(o_l, jp[1])
        names, kinds = s_l.names(), s_l.kinds
        self.draft.patched[rel] = jp
        for m in _A_DIR.finditer(kinds):
            if m.start() not in changed:
                recurse.add(join(rel, names[m.start()]))
        self.plan.unchanged += len(kinds) - kinds.count(DIR) - sum(1 for i in changed if kinds[i] != DIR)
        for i in sorted(changed):
            name = names[i]
            j = (jp[0].entry(i, name), jp[1].entry(i, name))
            if self._path(rel, name, s_l.entry(i, name), j, o_l.entry(i, name)):
                recurse.add(join(rel, name))

    def _keep_subtree(self, rel: bytes) -> None:
        """A folder not looked into (unreadable, or the opposite job's) keeps its journal entries, all the way
        down, so that the next run still knows them."""
        if self.journal is None:
            return
        if self._sorted_dirs is None:
            self._sorted_dirs = sorted(self.journal.dirs)
        keys = self._sorted_dirs
        prefix = rel + b"/" if rel else b""
        below = [rel] if rel in self.journal.dirs else []
        i = bisect_left(keys, prefix)  # every folder below rel sorts together, right after rel + "/"
        while i < len(keys) and keys[i].startswith(prefix):
            below.append(keys[i])
            i += 1
        for key in below:
            pair = self.j_pair(key)
            if pair is not None:
                self.draft.kept[key] = pair

    # ---- one path: the table -----------------------------------------------------------------------------
    def _path(self, rel: bytes, name: bytes, s: Entry | None, j: tuple[Entry, Entry] | None, o: Entry | None) -> bool:
        """Plan one path; True when it is a folder to look into."""
        path = join(rel, name)
        s_state, o_state = state(s, j[0] if j else None), state(o, j[1] if j else None)
        draft, plan = self.draft, self.plan
        folder = (s is not None and s.kind == DIR) or (o is not None and o.kind == DIR)
        if s_state == SAME and o_state == SAME:
            assert s is not None and o is not None
            draft.set(rel, name, s, o, news=False)
            plan.unchanged += 0 if folder else 1
            return s.kind == DIR
        if s_state in (SAME, NONE):  # only the destination changed: the opposite job's
            draft.keep(rel, name, *(j or (None, None)))
            plan.left_for_reverse += 0 if folder else 1
            if s is not None and s.kind == DIR and (o is None or o.kind == DIR):
                return True  # a folder deleted there may hold something new here: that is restored
            if j is not None and j[0].kind == DIR:
                self._keep_subtree(path)
            return False
        if s_state == GONE:
            assert j is not None
            if o_state == GONE:
                draft.changed = True
                return False  # deleted on both sides: forget it
            if o_state == SAME:
                assert o is not None
                return self._delete(rel, name, path, j, o)
            draft.keep(rel, name, *j)  # deleted here, edited there: the edit wins, restored by the opposite job
            if j[0].kind == DIR:
                self._keep_subtree(path)
            plan.left_for_reverse += 1
            plan.notes.append(
                f"{display(path)}: deleted in {self.src.root} but changed in {self.dest.root}: "
                "kept; the opposite run restores it"
            )
            return False
        assert s is not None  # the source changed or is new
        if o_state in (SAME, NONE):
            return self._propagate(rel, name, path, s, j, o)
        if o_state == GONE:
            assert j is not None
            op = self._create(
                rel,
                name,
                path,
                s,
                j,
                reason=RESTORED,
                detail=f"edited in {self.src.root}, deleted in {self.dest.root}: the edit wins",
            )
            plan.notes.append(f"{display(path)}: {op.detail}; restored")
            if s.kind == DIR:
                self.fresh.add(path)
            return s.kind == DIR
        assert o is not None  # both changed, or new on both sides
        if s.kind == o.kind == DIR:
            draft.set(rel, name, s, o)
            return True
        if s.kind == o.kind == LINK and s.link == o.link:
            draft.set(rel, name, s, o)
            return False
        if s.kind == o.kind == FILE and s.size == o.size:
            self.compare.append((rel, name, s, o, j))  # the bytes decide: same -> record, else conflict
            return False
        return self._conflict(rel, name, path, s, o, j, _differ(s, o))

    def _metadata(self, e: Entry) -> tuple[int, ...]:
        return (e.mode, e.uid, e.gid) if self.opts.owners else (e.mode,)

    def _unchanged_content(self, s: Entry, j: tuple[Entry, Entry] | None) -> bool:
        """Only metadata can have changed: the same inode (modified in place, not replaced: a replaced file
        of the same size and mtime is read, as Unison's fastcheck does) with the same size, mtime and link."""
        if j is None:
            return False
        then = j[0]
        return (s.kind, s.ino, s.size, s.mtime_ns, s.link) == (then.kind, then.ino, then.size, then.mtime_ns, then.link)

    def _propagate(
        self, rel: bytes, name: bytes, path: bytes, s: Entry, j: tuple[Entry, Entry] | None, o: Entry | None
    ) -> bool:
        """The source changed (or is new), the destination did not: carry it over."""
        if o is None:
            self._create(rel, name, path, s, j)
            return s.kind == DIR
        if s.kind == o.kind == DIR or (s.kind == o.kind and self._unchanged_content(s, j)):
            if self._metadata(s) != self._metadata(o):
                self._op(rel, name, Op(META, path, s, o, "mode or owner changed", reason=METADATA), j)
            elif self.opts.xattrs and s.kind == FILE and xattrs.differ(self.src.root, self.dest.root, path):
                self._op(rel, name, Op(META, path, s, o, "xattrs or ACLs changed", reason=METADATA), j)
            else:
                self.draft.set(rel, name, s, o)  # ctime moved, nothing we copy changed (e.g. a new hard link)
            return s.kind == DIR
        if s.kind != o.kind:  # a file became a folder or the like: the other stays, renamed (no trash for folders)
            return self._conflict(
                rel,
                name,
                path,
                s,
                o,
                j,
                f"{KIND_NAMES[o.kind]} replaced by a {KIND_NAMES[s.kind]} on the source",
                source_wins=True,
            )
        op = Op(COPY if s.kind == FILE else SYMLINK, path, s, o, "changed")
        self._op(rel, name, op, j)
        if s.kind == FILE and s.size == o.size:
            self.to_touch.append(op)  # same size: maybe only the mtime moved (then no data is copied)
        return False

    def _create(
        self,
        rel: bytes,
        name: bytes,
        path: bytes,
        s: Entry,
        j: tuple[Entry, Entry] | None,
        reason: str | None = None,
        detail: str = "new",
    ) -> Op:
        action = MKDIR if s.kind == DIR else COPY if s.kind == FILE else SYMLINK
        op = Op(action, path, s, None, detail, reason=reason)
        self._op(rel, name, op, j)
        return op

    def _delete(self, rel: bytes, name: bytes, path: bytes, j: tuple[Entry, Entry], o: Entry) -> bool:
        if o.kind != DIR:
            self.gone_files[j[0].ino] = (rel, name, j[0], j[1], o)  # unless it moved (_moved_files)
        if not self.opts.delete_missing:
            self.draft.keep(rel, name, *j)
            self.plan.kept_deleted += 0 if o.kind == DIR else 1
            return o.kind == DIR
        if o.kind == DIR and path in self.held:  # its synced contents go; the folder stays, in the journal too,
            self.draft.keep(rel, name, *j)  # so the other direction does not bring it back
            self.plan.notes.append(f"{display(path)}: deleted on the source; kept here, it holds excluded names")
            return True
        self._op(rel, name, Op(RMDIR if o.kind == DIR else DELETE, path, None, o, "deleted on the source"), j)
        return o.kind == DIR

    def _conflict(
        self,
        rel: bytes,
        name: bytes,
        path: bytes,
        s: Entry,
        o: Entry,
        j: tuple[Entry, Entry] | None,
        why: str,
        source_wins: bool = False,
    ) -> bool:
        """Keep both: the newer mtime keeps the name; the other is renamed on its own side (no data copied)
        and reaches the other side as a new entry on a later run.  True: a folder to create whole."""
        self.plan.conflicts += 1
        src_label, dest_label = self.opts.labels
        source_keeps = source_wins or s.mtime_ns >= o.mtime_ns  # the newer keeps the name
        copy_name = conflict_name(name, dest_label if source_keeps else src_label, self.opts.now)
        kept, moved = (self.src.root, self.dest.root) if source_keeps else (self.dest.root, self.src.root)
        # said in the run's notes and in the audit rows (the dashboard's conflicts view shows where each copy is)
        where = f"the newer one ({kept}) keeps the name, the other is now {display(join(rel, copy_name))} in {moved}"
        if source_keeps:
            rename = Op(RENAME_DEST, path, None, o, f"{why}; {where}", new_path=join(rel, copy_name), reason=CONFLICT)
            self.ops.append(rename)
            self._create(rel, name, path, s, j, reason=CONFLICT, detail=f"{why}; {where}")
            if s.kind == DIR:
                self.fresh.add(path)
        else:
            rename = Op(RENAME_SRC, path, s, None, f"{why}; {where}", new_path=join(rel, copy_name), reason=CONFLICT)
            self.ops.append(rename)
            self.draft.keep(rel, name, *(j or (None, None)))  # the opposite run brings the winner here
            if j is not None and j[0].kind == DIR:
                self._keep_subtree(path)
            self.draft.changed = True
        self.plan.notes.append(f"CONFLICT {display(path)}: {why}; {where}; both are synced")
        return s.kind == DIR and moved == self.dest.root

    def _op(self, rel: bytes, name: bytes, op: Op, j: tuple[Entry, Entry] | None) -> None:
        self.ops.append(op)
        self.draft.after(rel, name, op, j)

    # ---- content comparisons ---------------------------------------------------------------------------
    def _settle_by_md5(self) -> None:
        """Same size: read both.  A changed-on-both pair with the same bytes is recorded; with other bytes it is
        a conflict.  A copy whose bytes are already there only sets the mtime (TOUCH)."""
        first_sync = self.journal is None
        threshold = self.opts.mtime_threshold_ns
        quick = [c for c in self.compare if first_sync and abs(c[2].mtime_ns - c[3].mtime_ns) <= threshold]
        slow = [c for c in self.compare if not (first_sync and abs(c[2].mtime_ns - c[3].mtime_ns) <= threshold)]
        for rel, name, s, o, _ in quick:  # rsync's rule, for the first sync only: same size, same mtime
            self.draft.set(rel, name, s, o)
        paths = [join(rel, name) for rel, name, *_ in slow] + [op.path for op in self.to_touch]
        digests = self._md5_both(paths)
        for rel, name, s, o, j in slow:
            got = digests.get(join(rel, name))
            if got is not None and got[0] == got[1] and first_sync and s.mtime_ns != o.mtime_ns:
                touch = Op(TOUCH, join(rel, name), s, o, "same bytes, only the mtime differs", got[0], got[1])
                self._op(rel, name, touch, j)  # a first sync aligns the mtimes (the source's)
            elif got is not None and got[0] == got[1]:
                self.draft.set(rel, name, s, o)
            else:
                why = "changed on both sides" if j is not None else "different content on both sides"
                self._conflict(rel, name, join(rel, name), s, o, j, why if got else f"{why} (unreadable)")
        for op in self.to_touch:
            got = digests.get(op.path)
            if got is not None:
                op.md5_src, op.md5_dest = got
                if got[0] == got[1]:
                    op.action, op.detail = TOUCH, "same bytes, only the mtime differs"

    def _same_bytes(self, pairs: list[tuple[bytes, bytes]]) -> dict[tuple[bytes, bytes], bool]:
        """For (path on the source, path on the destination) pairs: do the two files hold the same bytes?"""

        def compare(pair: tuple[bytes, bytes]) -> tuple[tuple[bytes, bytes], bool]:
            try:
                return pair, md5_of(self.src.root, pair[0]) == md5_of(self.dest.root, pair[1])
            except OSError:
                return pair, False

        if not pairs:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, self.opts.hash_threads), thread_name_prefix="md5") as pool:
            return dict(pool.map(compare, pairs))

    def _md5_both(self, paths: Iterable[bytes]) -> dict[bytes, tuple[str, str]]:
        def both(path: bytes) -> tuple[bytes, tuple[str, str] | None]:
            try:
                return path, (md5_of(self.src.root, path), md5_of(self.dest.root, path))
            except OSError:
                return path, None

        todo = list(paths)
        if not todo:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, self.opts.hash_threads), thread_name_prefix="md5") as pool:
            return {p: d for p, d in pool.map(both, todo) if d is not None}

    def _hard_links(self) -> None:
        """Names of one source inode (hard links) stay one inode: of the names copied, the first is copied and
        the others link to it; a name that is a new link to a file already in place links to its twin there.
        Costs nothing without copies; with them, one pass over the source's inode columns."""
        by_ino: dict[int, list[Op]] = {}
        for op in self.ops:
            if op.action == COPY and op.src_entry.ino:
                by_ino.setdefault(op.src_entry.ino, []).append(op)
        if not by_ino:
            return
        copying = {op.path for ops in by_ino.values() for op in ops}
        in_place: dict[int, bytes] = {}
        for rel, listing in self.src.dirs.items():
            if by_ino.keys().isdisjoint(listing.inos):
                continue
            for name, kind, ino in zip(listing.names(), listing.kinds, listing.inos, strict=True):
                if kind == FILE and ino in by_ino and join(rel, name) not in copying:
                    in_place.setdefault(ino, join(rel, name))
        for ino, ops in by_ino.items():
            twin = in_place.get(ino)
            if twin is None:
                if len(ops) < 2:
                    continue
                twin, ops = ops[0].path, ops[1:]
            for op in ops:
                op.action, op.new_path, op.detail = HARDLINK, twin, "hard link"

    # ---- moves ---------------------------------------------------------------------------------------------
    def _moved_files(self) -> None:
        """A new file on the source whose inode was a deleted path's, with the same size, mtime and bytes:
        rename there instead of copy + delete.  The bytes are read because filesystems reuse a freed inode:
        a new file of the same size and mtime is not proof of a move (found by the random test)."""
        if not self.gone_files:
            return
        candidates: list[tuple[Op, tuple[bytes, bytes, Entry, Entry, Entry]]] = []
        for op in self.ops:
            if op.action not in (COPY, SYMLINK) or op.dest is not None or op.reason or op.src is None:
                continue
            gone = self.gone_files.pop(op.src.ino, None)
            if gone is None:
                continue
            j_s = gone[2]
            if (j_s.kind, j_s.size, j_s.mtime_ns, j_s.link) == (op.src.kind, op.src.size, op.src.mtime_ns, op.src.link):
                candidates.append((op, gone))  # else moved and edited: copy and delete as usual
        same = self._same_bytes([(op.path, join(gone[0], gone[1])) for op, gone in candidates if op.action == COPY])
        for op, (rel_a, name_a, _j_s, _j_o, o) in candidates:
            old = join(rel_a, name_a)
            if op.action == COPY and not same.get((op.path, old)):
                continue
            if self._across_filesystems(old, op.path):
                continue  # a rename cannot leave a filesystem: copied and deleted as usual
            if not any(x.action == DELETE and x.path == old for x in self.ops):
                self.plan.kept_deleted -= 1  # it was kept (delete propagation off): a move is no delete
            self.ops = [x for x in self.ops if not (x.action == DELETE and x.path == old)]
            self.draft.drop(rel_a, name_a)
            move = Op(MOVE, old, op.src, o, f"moved to {display(op.path)}", new_path=op.path, reason=MOVED)
            self.ops[self.ops.index(op)] = move
            rel_b, name_b = split(op.path)
            self.draft.after(rel_b, name_b, move, None)
            self.draft.moves.append(move)

    def _across_filesystems(self, old: bytes, new: bytes) -> bool:
        """Would renaming old to new on the destination cross a mount point inside it?"""
        mounts = self.dest.mounts
        return bool(mounts) and mount_of(mounts, old) != mount_of(mounts, split(new)[0])

    def _moved_folders(self) -> None:
        """A folder gone from one path of the source and new at another with the same inode and some of the
        same files inside, still at its old path on the destination: rename it there first, and compare its
        contents as if it had always been at the new path (in the journal and the destination's listing)."""
        assert self.journal is not None
        j_only = self.journal.dirs.keys() - self.src.dirs.keys()
        s_only = self.src.dirs.keys() - self.journal.dirs.keys()
        if not j_only or not s_only:
            return
        gone: dict[int, bytes] = {}
        for rel in j_only:
            entry = self._entry_in_journal(rel)
            if entry is not None and rel in self.dest.dirs:
                gone[entry.ino] = rel
        moved: list[tuple[bytes, bytes]] = []
        for new in sorted(s_only):
            if any(new.startswith(b + b"/") for _, b in moved) or new in self.dest.dirs:
                continue
            entry = entry_at(self.src.dirs, new)
            old = gone.get(entry.ino) if entry is not None else None
            if old is None or any(old.startswith(a + b"/") or old == a for a, _ in moved):
                continue
            o = entry_at(self.dest.dirs, old)
            if o is None or o.kind != DIR or entry is None or not self._carried_along(old, new):
                continue
            if old in self.dest.mounts or self._across_filesystems(old, new):
                continue  # a mount point does not move, nor anything across filesystems
            moved.append((old, new))
            move = Op(MOVE, old, entry, o, f"folder moved to {display(new)}", new_path=new, reason=MOVED)
            self.ops.append(move)
            self.draft.moves.append(move)
            self.draft.changed = True
            self._rename_subtree(old, new)

    def _carried_along(self, old: bytes, new: bytes) -> bool:
        """Evidence that `new` is `old` renamed, not a new folder that got a freed inode: at least one file
        inside it with the same inode and ctime as in the journal (a rename leaves its contents untouched)."""
        pair, now = self.j_pair(old), self.src.dirs.get(new)
        if pair is None or now is None:
            return False
        then = {(i, c) for k, i, c in zip(pair[0].kinds, pair[0].inos, pair[0].ctimes, strict=True) if k != DIR}
        return any((i, c) in then for k, i, c in zip(now.kinds, now.inos, now.ctimes, strict=True) if k != DIR)

    def _entry_in_journal(self, rel: bytes) -> Entry | None:
        head, name = split(rel)
        pair = self.j_pair(head)
        if pair is None:
            return None
        names = pair[0].names()
        return pair[0].entry(names.index(name), name) if name in names else None

    def _rename_subtree(self, old: bytes, new: bytes) -> None:
        """Move `old`'s subtree to `new` in the journal and in the destination's listing (not on disk)."""
        assert self.journal is not None
        for dirs in (self.journal.dirs, self.dest.dirs):
            for key in [k for k in dirs if k == old or k.startswith(old + b"/")]:
                dirs[new + key[len(old) :]] = dirs.pop(key)  # type: ignore[assignment]
        (old_head, old_name), (new_head, new_name) = split(old), split(new)
        jdirs = self.journal.dirs
        if old_head in jdirs:
            pairs = _rows_of_pair(jdirs[old_head])
            moved_row = next(r for r in pairs if r[0] == old_name)
            jdirs[old_head] = pair_listing([r for r in pairs if r[0] != old_name])
            target = _rows_of_pair(jdirs[new_head]) if new_head in jdirs else []
            jdirs[new_head] = pair_listing([*target, (new_name, moved_row[1], moved_row[2])])
        listing = self.dest.dirs.get(old_head)
        if listing is not None:
            rows = [(n, e) for n, e in zip(listing.names(), listing.entries(), strict=True)]
            moved_entry = next(e for n, e in rows if n == old_name)
            self.dest.dirs[old_head] = _listing_of([(n, e) for n, e in rows if n != old_name])
            target_l = self.dest.dirs.get(new_head)
            others = list(zip(target_l.names(), target_l.entries(), strict=True)) if target_l else []
            self.dest.dirs[new_head] = _listing_of([*others, (new_name, moved_entry)])


_A_DIR = re.compile(re.escape(bytes([DIR])))


def _differing(now: DirListing, then: DirListing) -> set[int]:
    """Indices whose identity, mode or owner differ between two listings of the same names."""
    out: set[int] = set()
    for column in _SIDE_COLUMNS:
        mine, theirs = getattr(now, column), getattr(then, column)
        if mine != theirs:
            out.update(compress(range(len(mine)), map(ne, mine, theirs)))
    return out


def _unchanged(now: DirListing, then: DirListing) -> bool:
    return (
        now.names_blob == then.names_blob
        and now.kinds == then.kinds
        and now.inos == then.inos
        and now.ctimes == then.ctimes
        and now.modes == then.modes
        and now.uids == then.uids
        and now.gids == then.gids
    )


def _with_ancestors(folders: Iterable[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    for rel in folders:
        while rel and rel not in found:
            found.add(rel)
            rel = rel.rpartition(b"/")[0]
    return found


def _index(listing: DirListing) -> dict[bytes, int]:
    return {name: i for i, name in enumerate(listing.names())}


def _differ(s: Entry, o: Entry) -> str:
    if s.kind != o.kind:
        return f"{KIND_NAMES[s.kind]} on the source, {KIND_NAMES[o.kind]} on the destination"
    if s.kind == LINK:
        return "links to different targets"
    return "different content on both sides"


def _rows_of_pair(pair: tuple[DirListing, DirListing]) -> list[tuple[bytes, Entry, Entry]]:
    a, b = pair
    return [(n, x, y) for n, x, y in zip(a.names(), a.entries(), b.entries(), strict=True)]


def _listing_of(rows: list[tuple[bytes, Entry]]) -> DirListing:
    links = {n: e.link for n, e in rows if e.link is not None}
    return DirListing(
        [(n, e.kind, e.size, e.mtime_ns, e.mode, e.uid, e.gid, e.ino, e.ctime_ns) for n, e in rows], links
    )
