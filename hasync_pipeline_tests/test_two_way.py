"""Two-way sync with the journal: the ordinary cases in which two stateless newest-wins jobs lost a version.
Each test checks that every version is still readable under some visible path and that the two roots agree
after another cycle.  A cycle is what the schedules do: dell -> hp, then hp -> dell."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from hasync_pipeline.engine import SafetyRefusal
from hasync_pipeline.engine import journal as journal_mod
from hasync_pipeline.engine.plan import META, MOVE, RENAME_DEST, RENAME_SRC
from hasync_pipeline_tests.conftest import snapshot, sync, write

T0 = time.time() - 10_000


def to_hp(dell: Path, hp: Path, **opts):
    return sync(dell, hp, labels=("dell", "hp"), **opts)


def to_dell(dell: Path, hp: Path, **opts):
    return sync(hp, dell, labels=("hp", "dell"), **opts)


def cycle(dell: Path, hp: Path, **opts):
    return to_hp(dell, hp, **opts), to_dell(dell, hp, **opts)


def contents(root: Path) -> set[bytes]:
    """Every file's bytes, wherever it is (a version survives if it is readable somewhere)."""
    return {v[1] for v in snapshot(root).values() if v[0] == "file"}


def converged(dell: Path, hp: Path) -> dict:
    cycle(dell, hp, delete_missing=True)
    assert snapshot(dell) == snapshot(hp)
    again = cycle(dell, hp, delete_missing=True)
    assert [p.ops for _, p in again] == [[], []]  # and stays so
    return snapshot(dell)


@pytest.fixture
def synced(pair):
    """Two roots with a few files, synced once (the journal exists)."""
    dell, hp = pair
    write(dell / "doc.txt", "original", T0)
    write(dell / "photos" / "a.jpg", "photo a", T0)
    write(dell / "photos" / "b.jpg", "photo b", T0)
    cycle(dell, hp, delete_missing=True)
    assert snapshot(dell) == snapshot(hp)
    return dell, hp


def test_concurrent_edits_keep_both_versions(synced):
    dell, hp = synced
    write(dell / "doc.txt", "edited on the dell", T0 + 100)
    write(hp / "doc.txt", "edited on the hp, later", T0 + 200)
    (report, plan), _ = cycle(dell, hp, delete_missing=True)
    assert report.conflicts == 1 and [op.action for op in plan.ops] == [RENAME_SRC]
    final = converged(dell, hp)
    assert final[b"doc.txt"][1] == b"edited on the hp, later"  # the newer keeps the name
    [copy] = [p for p in final if p.startswith(b"doc.sync-conflict-")]
    assert copy.endswith(b"-dell.txt") and final[copy][1] == b"edited on the dell"


def test_edit_beats_delete_both_ways(synced):
    dell, hp = synced
    os.remove(dell / "doc.txt")
    write(hp / "doc.txt", "edited on the hp", T0 + 100)
    os.remove(hp / "photos" / "a.jpg")
    write(dell / "photos" / "a.jpg", "edited on the dell", T0 + 100)
    (r1, p1), (r2, p2) = cycle(dell, hp, delete_missing=True)
    assert any("the edit wins" in n for n in r1.notes + r2.notes)
    final = converged(dell, hp)
    assert final[b"doc.txt"][1] == b"edited on the hp"
    assert final[b"photos/a.jpg"][1] == b"edited on the dell"


def test_a_file_new_on_the_hp_survives_deletes_on_the_dell_job(synced):
    dell, hp = synced
    write(hp / "new-on-hp.txt", "made on the hp")
    report, plan = to_hp(dell, hp, delete_missing=True)
    assert plan.ops == [] and (hp / "new-on-hp.txt").exists()
    to_dell(dell, hp, delete_missing=True)
    assert (dell / "new-on-hp.txt").read_text() == "made on the hp"


def test_folder_deleted_on_one_side_while_a_file_is_added_inside_on_the_other(synced):
    dell, hp = synced
    for name in ("a.jpg", "b.jpg"):
        os.remove(dell / "photos" / name)
    os.rmdir(dell / "photos")
    write(hp / "photos" / "c.jpg", "new photo on the hp")
    final = converged(dell, hp)
    assert final[b"photos/c.jpg"][1] == b"new photo on the hp"
    assert b"photos/a.jpg" not in final  # the deletes did propagate
    assert b"photo a" in contents(hp / ".hasync-trash")  # ...into the trash


@pytest.mark.parametrize("skew", [3600, -3600])
@pytest.mark.parametrize("skewed", ["dell", "hp"])
def test_clock_skew_changes_no_decision(synced, skew, skewed):
    """One machine's clock runs an hour off: its files carry mtimes an hour off.  An edit still travels."""
    dell, hp = synced
    off = {"dell": dell, "hp": hp}[skewed]
    for p in off.rglob("*"):
        if p.is_file() and ".hasync" not in str(p):
            os.utime(p, (p.stat().st_mtime + skew, p.stat().st_mtime + skew))
    converged(dell, hp)  # the touch is an edit on that side: it travels, nothing else happens
    write(dell / "doc.txt", "edited on the dell", T0 + 50 + (skew if skewed == "dell" else 0))
    write(hp / "photos" / "b.jpg", "edited on the hp", T0 + 50 + (skew if skewed == "hp" else 0))
    (r1, _), (r2, _) = cycle(dell, hp, delete_missing=True)
    assert r1.conflicts == r2.conflicts == 0
    final = converged(dell, hp)
    assert final[b"doc.txt"][1] == b"edited on the dell" and final[b"photos/b.jpg"][1] == b"edited on the hp"


def test_first_sync_of_two_populated_folders_is_a_union_deleting_nothing(pair):
    dell, hp = pair
    write(dell / "same.txt", "same", T0)
    write(hp / "same.txt", "same", T0)
    write(dell / "only-dell.txt", "d", T0)
    write(hp / "only-hp.txt", "h", T0)
    write(dell / "differs.txt", "dell's version", T0)
    write(hp / "differs.txt", "hp's other version", T0 + 60)
    before = contents(dell) | contents(hp)
    (r1, p1), _ = cycle(dell, hp, delete_missing=True)
    assert p1.first_sync and any("first-sync mode" in n for n in r1.notes)
    assert r1.deleted == 0 and r1.conflicts == 1
    final = converged(dell, hp)
    assert before <= contents(dell)  # every version is there
    assert {b"same.txt", b"only-dell.txt", b"only-hp.txt", b"differs.txt"} <= set(final)


def test_a_same_size_edit_within_the_mtime_threshold_travels(synced):
    dell, hp = synced
    mtime = (dell / "doc.txt").stat().st_mtime
    write(dell / "doc.txt", "ORIGINAL", mtime + 1)  # same size, mtime 1 s on
    to_hp(dell, hp)
    assert (hp / "doc.txt").read_text() == "ORIGINAL"


def test_a_chmod_only_change_travels_without_copying(synced):
    dell, hp = synced
    inode = (hp / "doc.txt").stat().st_ino
    os.chmod(dell / "doc.txt", 0o600)
    report, plan = to_hp(dell, hp)
    assert [op.action for op in plan.ops] == [META] and report.bytes == 0
    assert (hp / "doc.txt").stat().st_mode & 0o777 == 0o600 and (hp / "doc.txt").stat().st_ino == inode
    assert to_dell(dell, hp)[1].ops == []  # nothing comes back


def test_a_file_against_a_folder_keeps_both(synced):
    dell, hp = synced
    os.remove(dell / "doc.txt")
    write(dell / "doc.txt" / "inside.txt", "a folder now, on the dell", T0 + 300)
    write(hp / "doc.txt", "still a file, edited on the hp", T0 + 100)
    cycle(dell, hp, delete_missing=True)
    final = converged(dell, hp)
    assert b"a folder now, on the dell" in contents(dell) and b"still a file, edited on the hp" in contents(dell)
    assert final[b"doc.txt"][0] == "dir"  # the newer one keeps the name


def test_a_folder_rename_is_a_rename_there(synced):
    dell, hp = synced
    inodes = {p.name: p.stat().st_ino for p in (hp / "photos").iterdir()}
    os.rename(dell / "photos", dell / "pictures")
    report, plan = to_hp(dell, hp, delete_missing=True)
    assert [op.action for op in plan.ops] == [MOVE] and report.bytes == 0 and report.deleted == 0
    assert not (hp / "photos").exists()
    assert {p.name: p.stat().st_ino for p in (hp / "pictures").iterdir()} == inodes  # no data copied
    final = converged(dell, hp)
    assert set(final) == {b"doc.txt", b"pictures", b"pictures/a.jpg", b"pictures/b.jpg"}


def test_a_file_rename_is_a_rename_there(synced):
    dell, hp = synced
    inode = (hp / "doc.txt").stat().st_ino
    os.rename(dell / "doc.txt", dell / "renamed.txt")
    report, plan = to_hp(dell, hp)  # delete propagation off: a move is not a delete
    assert [op.action for op in plan.ops] == [MOVE]
    assert not (hp / "doc.txt").exists() and (hp / "renamed.txt").stat().st_ino == inode
    converged(dell, hp)


@pytest.mark.parametrize("emptied", ["dell", "hp"])
def test_an_emptied_root_is_refused_both_ways(synced, emptied):
    """An unmounted share that leaves an empty mount point (marker and all gone), or an emptied folder."""
    dell, hp = synced
    root = {"dell": dell, "hp": hp}[emptied]
    for p in sorted(root.rglob("*"), reverse=True):
        if ".hasync" not in p.parts:
            p.rmdir() if p.is_dir() else p.unlink()
    before = (snapshot(dell), snapshot(hp))
    for run in (to_hp, to_dell):
        with pytest.raises(SafetyRefusal, match="empty but the journal lists"):
            run(dell, hp, delete_missing=True)
    import shutil

    shutil.rmtree(root / ".hasync")  # the mount point of an unmounted share: no marker at all
    for run in (to_hp, to_dell):
        with pytest.raises(SafetyRefusal, match="no .hasync marker"):
            run(dell, hp, delete_missing=True)
    assert (snapshot(dell), snapshot(hp)) == before


@pytest.mark.parametrize("damage", ["lost", "corrupt", "restored-from-backup"])
def test_a_lost_or_damaged_journal_means_a_first_sync_deleting_nothing(synced, damage):
    dell, hp = synced
    journal_file = dell / ".hasync" / "journal"
    if damage == "lost":
        journal_file.unlink()
    elif damage == "corrupt":
        data = bytearray(journal_file.read_bytes())
        data[-5] ^= 0xFF
        journal_file.write_bytes(bytes(data))
    else:
        write(hp / "extra.txt", "x")
        cycle(dell, hp)
        (dell / ".hasync" / "journal.prev").rename(journal_file)  # an older generation: a restored backup
    os.remove(dell / "photos" / "a.jpg")  # a deletion we can no longer tell from a new file on the hp
    write(hp / "doc.txt", "edited on the hp", T0 + 100)
    (report, plan), _ = cycle(dell, hp, delete_missing=True)
    assert plan.first_sync and report.deleted == 0
    final = converged(dell, hp)
    assert final[b"photos/a.jpg"][1] == b"photo a"  # came back rather than being deleted
    assert b"edited on the hp" in contents(dell)


class Killed(BaseException):
    """The run's process killed (as an exception that reaches the test from the child writing the journal)."""


def test_a_run_killed_between_copies_and_journal_copies_nothing_back(synced, monkeypatch):
    dell, hp = synced
    write(dell / "new.txt", "new on the dell", T0 + 100)
    write(dell / "doc.txt", "edited on the dell", T0 + 100)

    def killed(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(journal_mod, "save", killed)
    with pytest.raises(Killed):
        to_hp(dell, hp)
    monkeypatch.undo()
    inodes = {p: (hp / p).stat().st_ino for p in ("new.txt", "doc.txt")}
    (r1, p1), (r2, p2) = cycle(dell, hp)
    assert p1.ops == p2.ops == [] and r1.conflicts == r2.conflicts == 0  # recorded, not copied again
    assert {p: (hp / p).stat().st_ino for p in inodes} == inodes
    assert (dell / "doc.txt").read_text() == (hp / "doc.txt").read_text() == "edited on the dell"


def test_a_dry_run_never_writes_the_journal_or_a_marker(pair):
    dell, hp = pair
    write(dell / "a.txt", "a", T0)
    to_hp(dell, hp, dry_run=True)
    assert not (dell / ".hasync").exists() and not (hp / ".hasync").exists()
    cycle(dell, hp)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (dell / ".hasync").iterdir()}
    write(dell / "b.txt", "b", T0)
    to_hp(dell, hp, dry_run=True)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (dell / ".hasync").iterdir()} == before
    assert not (hp / "b.txt").exists()


@pytest.mark.slow
def test_the_journal_is_compact_and_both_copies_agree(synced):
    dell, hp = synced
    for i in range(2000):
        write(dell / f"d{i % 20}" / f"photo-{i:05d}.jpg", b"x" * (i % 7), T0)
    cycle(dell, hp)
    a, b = (journal_mod.read_root(str(root)) for root in (dell, hp))
    assert a.journal is not None and b.journal is not None
    assert a.journal.generation == b.journal.generation and a.journal.entries == 2000 + 20 + 3 + 1
    size = (dell / ".hasync" / "journal").stat().st_size
    assert size / a.journal.entries < 60  # bytes per entry on disk


def test_conflict_copies_are_named_like_syncthings():
    from datetime import datetime

    from hasync_pipeline.engine.reconcile import conflict_name

    when = datetime(2026, 12, 2, 14, 5, 9)
    assert conflict_name(b"report.pdf", "hp", when) == b"report.sync-conflict-20261202-140509-hp.pdf"
    assert conflict_name(b"Makefile", "dell", when) == b"Makefile.sync-conflict-20261202-140509-dell"
    assert conflict_name(b".bashrc", "dell", when) == b".bashrc.sync-conflict-20261202-140509-dell"
    assert conflict_name(b"a.tar.gz", "hp", when) == b"a.tar.sync-conflict-20261202-140509-hp.gz"


def test_renames_on_the_losing_side_are_what_the_plan_says(synced):
    """A conflict where the source's version is newer: the destination's becomes the conflict copy there."""
    dell, hp = synced
    write(hp / "doc.txt", "hp's edit, older", T0 + 100)
    write(dell / "doc.txt", "dell's edit, newer", T0 + 200)
    report, plan = to_hp(dell, hp)
    assert [op.action for op in plan.ops][:1] == [RENAME_DEST] and report.conflicts == 1
    [copy] = [p for p in os.listdir(hp) if p.startswith("doc.sync-conflict-")]
    assert copy.endswith("-hp.txt") and (hp / copy).read_text() == "hp's edit, older"
    assert (hp / "doc.txt").read_text() == "dell's edit, newer"


def _everything(root: Path) -> set[bytes]:
    """Every file's bytes under root, the trash included (the journal's own files left out)."""
    return {
        p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(root).parts[0] != ".hasync"
    }


def _mutate(rnd, root: Path, counter: int) -> None:
    """One random change a user might make on one side."""
    files = sorted(p for p in root.rglob("*") if ".hasync" not in str(p) and p.is_file() and not p.is_symlink())
    dirs = sorted(p for p in root.rglob("*") if ".hasync" not in str(p) and p.is_dir() and not p.is_symlink())
    action = rnd.choice(
        ["edit", "edit", "new", "delete", "rename", "dir-rename", "dir-delete", "chmod", "new-dir", "link", "both"]
    )
    if action == "link":
        link = rnd.choice([*dirs, root]) / f"l{counter}"
        if not link.exists() and not link.is_symlink():
            os.symlink(rnd.choice(["x", "../y", "f1.txt"]), link)
    elif action == "both" and files:  # the same file edited on both sides before the next cycle
        target = rnd.choice(files)
        other = root.parent / ("hp" if root.name == "dell" else "dell") / target.relative_to(root)
        write(target, f"both {counter} on {root.name}", T0 + rnd.randint(0, 999))
        if other.parent.is_dir() and not other.is_symlink():
            write(other, f"both {counter} on the other side", T0 + rnd.randint(0, 999))
    elif action == "new" or not files:
        write(rnd.choice([*dirs, root]) / f"n{counter}.txt", f"new {counter} on {root.name}", T0 + rnd.randint(0, 999))
    elif action == "new-dir":
        write(root / f"nd{counter}" / "x.txt", f"nd {counter} on {root.name}", T0)
    elif action in ("dir-rename", "dir-delete") and dirs:
        folder = rnd.choice(dirs)
        if folder.exists() and action == "dir-rename":
            folder.rename(folder.with_name(f"dr{counter}-{folder.name}"))
        elif folder.exists():
            shutil.rmtree(folder)
    else:
        target = rnd.choice(files)
        if action == "edit":
            write(target, f"edit {counter} on {root.name}", T0 + rnd.randint(0, 999))
        elif action == "delete":
            target.unlink()
        elif action == "rename":
            target.rename(target.with_name(f"r{counter}-{target.name}"))
        else:
            os.chmod(target, rnd.choice([0o600, 0o644, 0o640]))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 13))
def test_random_changes_on_both_sides_lose_nothing_and_converge(pair, seed):
    """Random edits, new files and folders, deletions, renames of files and folders and chmods on both sides
    between cycles (fixed seeds, delete propagation on and off): whatever existed before a cycle still exists
    after it on one side or in a trash, and with delete propagation on the roots converge.  This found the
    trash replacing a version trashed at the same path, and a reused inode taken for a move."""
    import random

    rnd = random.Random(seed)
    dell, hp = pair
    deletes = {"delete_missing": seed % 2 == 0, "max_delete_percent": 100}
    for i in range(20):
        write(dell / f"d{i % 3}" / f"s{i % 2}" / f"f{i}.txt", f"v0 of f{i}", T0 + rnd.randint(0, 100))
    cycle(dell, hp, **deletes)
    counter = 0
    for _ in range(5):
        for root in (dell, hp):
            for _ in range(rnd.randint(1, 5)):
                counter += 1
                _mutate(rnd, root, counter)
        before = _everything(dell) | _everything(hp)
        cycle(dell, hp, **deletes)
        assert before <= _everything(dell) | _everything(hp)  # nothing that existed is gone (at worst: trash)
    if deletes["delete_missing"]:
        for _ in range(2):
            cycle(dell, hp, **deletes)
        assert snapshot(dell) == snapshot(hp)


def walk_reporting_inode(monkeypatch, root: Path, name: bytes, ino: int) -> None:
    """Make the walk report `ino` for `name` at the top of `root`: a freed inode the filesystem reused (the
    kernel does not reuse one on request)."""
    from hasync_pipeline.engine import session as session_mod

    real_walk = session_mod.walk_pair

    def walk(*args, **kwargs):
        src_tree, dest_tree = real_walk(*args, **kwargs)
        for tree in (src_tree, dest_tree):
            if tree.root == str(root):
                listing = tree.dirs[b""]
                listing.inos[listing.names().index(name)] = ino
        return src_tree, dest_tree

    monkeypatch.setattr(session_mod, "walk_pair", walk)


def test_a_reused_inode_is_not_taken_for_a_move(synced, monkeypatch):
    """Filesystems reuse a freed inode: doc.txt deleted and other.txt created with doc's inode, size and
    mtime but other bytes is a delete and a new file, not a rename (found by the random test on ext4)."""

    dell, hp = synced
    old_ino = (dell / "doc.txt").stat().st_ino
    os.remove(dell / "doc.txt")
    write(dell / "other.txt", "ORIGINAL", (hp / "doc.txt").stat().st_mtime)  # same size as "original"
    walk_reporting_inode(monkeypatch, dell, b"other.txt", old_ino)
    report, plan = to_hp(dell, hp, delete_missing=True)
    assert MOVE not in [op.action for op in plan.ops]
    assert (hp / "other.txt").read_text() == "ORIGINAL" and not (hp / "doc.txt").exists()
    assert b"original" in contents(hp / ".hasync-trash")


def test_a_second_conflict_on_a_path_in_the_same_second_gets_a_numbered_copy(synced):
    """Conflict copies are named to the second: a name already taken gets -2 (the runs used to stay stuck)."""
    dell, hp = synced
    names = set()
    for n in range(2):
        write(dell / "doc.txt", f"dell's edit {n}", T0 + 100 + n)
        write(hp / "doc.txt", f"hp's edit {n}, newer", T0 + 200 + n)
        (report, _), _ = cycle(dell, hp)
        assert report.failed == 0 and report.conflicts == 1
        names |= {p for p in os.listdir(dell) if "sync-conflict" in p}
    converged(dell, hp)
    assert {"dell's edit 0", "dell's edit 1"} <= {
        (dell / p).read_text() for p in os.listdir(dell) if "sync-conflict" in p
    }


def test_a_new_folder_on_a_reused_inode_is_not_taken_for_a_moved_one(synced, monkeypatch):
    """photos/ deleted and albums/ made with the freed inode (the walk reports it so): no rename there,
    since nothing inside albums/ was inside photos/ (a renamed folder keeps its files untouched)."""

    dell, hp = synced
    old_ino = (dell / "photos").stat().st_ino
    shutil.rmtree(dell / "photos")
    write(dell / "albums" / "a.jpg", "PHOTO A", (hp / "photos" / "a.jpg").stat().st_mtime)  # same size, mtime
    walk_reporting_inode(monkeypatch, dell, b"albums", old_ino)
    report, plan = to_hp(dell, hp, delete_missing=True, max_delete_percent=100)
    assert MOVE not in [op.action for op in plan.ops]
    assert (hp / "albums" / "a.jpg").read_text() == "PHOTO A" and not (hp / "photos").exists()


def test_a_pair_synced_by_an_unprivileged_user_stays_quiet(pair):
    """A user cannot chown: the folders it makes are its own.  The journal records the destination as it is,
    so the next runs, either way, find nothing to do (they used to see the folders' owners as changes)."""
    from hasync_pipeline_tests.conftest import NOBODY, as_user

    dell, hp = pair
    write(dell / "photos" / "a.jpg", "a", T0)  # owned by root, readable by all
    for root in (dell, hp):  # both roots the user's (the journal lives in both), the source's files root's
        os.chown(root, NOBODY, NOBODY)

    def two_runs():
        to_hp(dell, hp)
        return [op.describe() for op in to_hp(dell, hp)[1].ops], [
            op.describe() for op in to_dell(dell, hp, dry_run=True)[1].ops
        ]

    again, back = as_user(NOBODY, two_runs)
    assert (hp / "photos").stat().st_uid == NOBODY
    assert again == [] and back == []
    state = journal_mod.read_root(str(dell))
    assert state.journal is not None
    recorded = {listing.entry(0, b"photos").ino: listing.entry(0, b"photos").uid for listing in state.journal.dirs[b""]}
    assert recorded[(hp / "photos").stat().st_ino] == NOBODY  # the destination as it is, not the source's owner


def test_an_unreadable_folder_keeps_its_journal_entries_whatever_the_names_below(synced):
    """A folder the run cannot read keeps every journal entry under it, names of any bytes included (the
    kept range is found by prefix in the sorted folder list), so nothing there is forgotten."""
    from hasync_pipeline_tests.conftest import NOBODY, as_user

    dell, hp = synced
    odd = os.fsdecode(b"\xff\xfe-raw")
    write(dell / "private" / odd / "deep.txt", "deep", T0)
    write(dell / "private" / "plain" / "deep.txt", "plain", T0)
    for root in (dell.parent,):
        for d, dirs, files in os.walk(root):
            for n in [d, *(os.path.join(d, x) for x in dirs + files)]:
                os.chown(n, NOBODY, NOBODY)
    as_user(NOBODY, lambda: cycle(dell, hp))
    before = journal_mod.read_root(str(dell)).journal
    write(dell / "new.txt", "a change elsewhere, so that the run writes the journal", T0)
    os.chown(dell / "new.txt", NOBODY, NOBODY)
    os.chmod(dell / "private", 0)
    try:
        as_user(NOBODY, lambda: to_hp(dell, hp, delete_missing=True))
    finally:
        os.chmod(dell / "private", 0o755)
    after = journal_mod.read_root(str(dell)).journal
    assert before is not None and after is not None
    under = {k for k in before.dirs if k.startswith(b"private/")}
    assert under == {b"private/plain", b"private/\xff\xfe-raw"} and under <= set(after.dirs)
    assert after.generation != before.generation  # it was rewritten, and kept them
