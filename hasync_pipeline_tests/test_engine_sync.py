"""The engine on real folders: convergence, newest wins, odd names, symlinks, trash."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from array import array
from pathlib import Path

import pytest

from hasync_pipeline.engine.plan import TOUCH
from hasync_pipeline_tests.conftest import internal_leftovers, read_deep, snapshot, sync, synced, write, write_deep

T0 = time.time() - 10_000  # a fixed past, so "newer" is unambiguous


def inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_ino for p in root.rglob("*") if ".hasync-" not in str(p)}


def both_ways(a: Path, b: Path, **opts):
    return sync(a, b, **opts), sync(b, a, **opts)


def test_two_opposite_jobs_converge_and_second_round_rewrites_nothing(pair):
    dell, hp = pair
    write(dell / "only-dell.txt", "d", T0)
    write(dell / "sub" / "deep" / "f.bin", os.urandom(100_000), T0)
    write(hp / "only-hp.txt", "h", T0)
    write(hp / "sub" / "hp-file", "hh", T0)
    (dell / "empty-dir").mkdir()
    both_ways(dell, hp)
    assert snapshot(dell) == snapshot(hp)
    assert set(snapshot(dell)) >= {b"only-dell.txt", b"only-hp.txt", b"sub/deep/f.bin", b"sub/hp-file", b"empty-dir"}
    before = (inodes(dell), inodes(hp))
    (r1, p1), (r2, p2) = both_ways(dell, hp)
    assert p1.ops == [] and p2.ops == [] and r1.failed == r2.failed == 0
    assert (inodes(dell), inodes(hp)) == before  # nothing rewritten
    assert internal_leftovers(dell) == internal_leftovers(hp) == []


def test_each_side_s_edit_travels_whatever_its_mtime(pair):
    """Decisions come from the journal, not from comparing clocks: an edit with an older mtime still wins."""
    dell, hp = pair
    write(dell / "a", "first a", T0 + 100)
    write(dell / "b", "first b", T0 + 100)
    synced(dell, hp)
    write(dell / "a", "dell's edit, with an older mtime", T0)
    write(hp / "b", "hp's edit", T0 + 50)
    report, plan = sync(dell, hp)
    assert [op.path for op in plan.ops] == [b"a"] and plan.left_for_reverse == 1
    sync(hp, dell)
    assert (hp / "a").read_text() == (dell / "a").read_text() == "dell's edit, with an older mtime"
    assert (hp / "b").read_text() == (dell / "b").read_text() == "hp's edit"
    assert os.stat(hp / "a").st_mtime_ns == os.stat(dell / "a").st_mtime_ns


def test_first_sync_same_size_within_the_threshold_is_the_same_file_and_beyond_the_bytes_decide(pair):
    dell, hp = pair
    write(dell / "f", "same", T0 + 1.5)
    write(hp / "f", "same", T0)
    assert sync(dell, hp, dry_run=True)[1].ops == []  # rsync's rule, for a first sync only
    assert [op.action for op in sync(dell, hp, mtime_threshold=1.0)[1].ops] == [TOUCH]  # same bytes
    assert (hp / "f").stat().st_mtime_ns == (dell / "f").stat().st_mtime_ns


def test_a_folder_with_a_few_changes_is_compared_entry_by_entry(pair):
    """Unchanged folders are settled column by column against the journal; one that differs anywhere is
    compared name by name, and must find exactly the changes."""
    dell, hp = pair
    for i in range(50):
        write(dell / f"same-{i:02d}", "unchanged", T0)
    write(dell / "newer", "short", T0)
    write(dell / "older", "aa", T0)
    os.symlink("same-01", dell / "link")
    write(dell / "sub" / "inner", "same", T0)
    synced(dell, hp)
    write(dell / "newer", "longer now", T0 + 100)
    write(hp / "older", "b", T0 + 100)
    os.remove(dell / "link")
    os.symlink("same-02", dell / "link")
    write(dell / "sub" / "fresh", "new", T0)
    os.utime(hp / "sub", (T0 - 500, T0 - 500))  # folder mtimes never matter
    report, plan = sync(dell, hp)
    assert [(op.action, op.path) for op in plan.ops] == [
        ("copy", b"newer"),
        ("copy", b"sub/fresh"),
        ("symlink", b"link"),
    ]
    assert plan.unchanged == 50 + 1 and plan.left_for_reverse == 1 and plan.conflicts == 0


def test_walk_with_threads_lists_exactly_what_one_thread_does(pair):
    from hasync_pipeline.engine.walk import STAT_FANOUT, walk_tree

    dell, _ = pair
    for i in range(30):
        write(dell / f"d{i % 7}" / f"sub{i % 3}" / f"f{i}", "x" * i, T0 + i)
    os.symlink("d1", dell / "link-to-d1")
    write(dell / "d0" / ".hasync-tmp-leftover", "partial")
    for i in range(STAT_FANOUT * 3):  # a big flat folder: its entries are stat'ed by the threads together
        write(dell / "flat" / f"photo-{i:04d}.jpg", "p" * (i % 5), T0 - i)
    os.symlink("photo-0001.jpg", dell / "flat" / "latest.jpg")
    one, four = walk_tree(str(dell), threads=1), walk_tree(str(dell), threads=4)
    assert sorted(one.dirs) == sorted(four.dirs) and len(one.dirs) == 1 + 7 + 21 + 1
    for rel, listing in one.dirs.items():
        other = four.dirs[rel]
        assert listing.names() == other.names() and listing.kinds == other.kinds and listing.links == other.links
        assert listing.columns() == other.columns()  # sizes, mtimes, modes, owners, inodes, ctimes

    def counts(tree):
        return tree.files, tree.directories, tree.symlinks, tree.bytes

    flat = STAT_FANOUT * 3
    expected = (30 + flat, 29, 2, sum(range(30)) + len("d1") + sum(i % 5 for i in range(flat)) + len("photo-0001.jpg"))
    assert counts(one) == counts(four) == expected  # a link's size: its target's
    assert one.leftovers == four.leftovers == [b"d0/.hasync-tmp-leftover"]


_OPENS: list[object] | None = None  # while a list, the audit hook below appends every os.open's path to it


def _count_opens(event: str, args: tuple) -> None:
    if event == "open" and _OPENS is not None:
        _OPENS.append(args[0])


sys.addaudithook(_count_opens)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_walk_opens_each_folder_once_through_its_parent_and_keeps_no_fd(pair, monkeypatch, threads):
    """Each folder is one openat of its name through its parent's fd, not one per component of its path
    (on NFS each is a round trip); past the fd budget, by its path, listing the same."""
    from hasync_pipeline.engine import walk

    dell, _ = pair
    chain = dell
    for depth in range(8):
        chain = chain / f"level{depth}"
        for i in range(3):
            write(chain / f"side{i}" / "f", "x", T0)
    write(chain / "deepest", "y", T0)
    folders = 1 + 8 * 4  # the root, then each level and its three side folders
    fds_before = sorted(os.listdir("/proc/self/fd"))

    class Budgeted(walk.KeptFolders):
        budget_now: int | None = None

        def __init__(self) -> None:
            super().__init__(Budgeted.budget_now)

    monkeypatch.setattr(walk, "KeptFolders", Budgeted)

    def walk_counting_opens(budget: int | None) -> tuple[walk.TreeListing, list[object]]:
        global _OPENS
        Budgeted.budget_now = budget
        _OPENS = []
        try:
            return walk.walk_tree(str(dell), threads=threads), _OPENS
        finally:
            _OPENS = None

    kept, kept_opens = walk_counting_opens(None)
    assert len(kept.dirs) == folders
    assert len(kept_opens) == folders  # the root, then one openat of a name per folder
    assert all(b"/" not in name for name in kept_opens[1:])
    by_path, path_opens = walk_counting_opens(0)  # no fd kept: every folder opened from the root
    assert len(path_opens) == 1 + sum(rel.count(b"/") + 1 for rel in kept.dirs if rel)  # each component
    tight, _ = walk_counting_opens(1)  # one kept at a time: some through a parent, some by path
    for tree in (by_path, tight):
        assert sorted(tree.dirs) == sorted(kept.dirs)
        for rel, listing in kept.dirs.items():
            assert tree.dirs[rel].names() == listing.names() and tree.dirs[rel].columns() == listing.columns()
    assert sorted(os.listdir("/proc/self/fd")) == fds_before  # every kept fd closed


def test_kept_folders_open_each_component_once_and_stay_safe(tmp_path):
    """FileOps reaches every folder through FolderFds: a sibling of a kept folder is one openat; a renamed
    folder forgotten is not followed; a symlink is never gone through; at most `size` fds are kept."""
    global _OPENS
    from concurrent.futures import ThreadPoolExecutor

    from hasync_pipeline.engine import fsutil

    root = tmp_path / "root"
    root.mkdir()
    root_fd = fsutil.open_root(str(root))
    gc.collect()  # earlier tests' garbage (a database engine, a pipe) must not close its files mid-count
    fds_before = len(os.listdir("/proc/self/fd"))
    folders = fsutil.FolderFds(root_fd, size=8)
    try:
        _OPENS = []
        fd = folders.open(b"a/b/c/d/one", create_mode=0o755)  # made on the way: each component opened once
        os.close(fd)
        made = len(_OPENS)
        _OPENS = []
        os.close(folders.open(b"a/b/c/d/two", create_mode=0o755))
        os.close(folders.open(b"a/b/c/d/one"))
        assert made == 5 + 5 and _OPENS == [b"two", b"two"]  # missing: a failed open, mkdir, open
        _OPENS = None
        assert (root / "a/b/c/d/two").is_dir()

        os.rename(root / "a/b/c", root / "a/b/moved")  # this run renamed a folder: forget it
        folders.forget(b"a/b/c")
        os.close(folders.open(b"a/b/c/d", create_mode=0o755))
        assert (root / "a/b/c/d").is_dir() and not (root / "a/b/c/d/one").exists()

        (root / "a/b/c/d/trap").symlink_to("/etc")
        with pytest.raises(fsutil.UnsafePathError):
            folders.open(b"a/b/c/d/trap/passwd-dir")

        with ThreadPoolExecutor(8) as pool:  # new folders are made by several threads at once
            for fd in pool.map(lambda i: folders.open(b"w/%d/x/%d" % (i % 5, i), create_mode=0o755), range(200)):
                os.close(fd)
        assert sum(1 for _ in (root / "w").glob("*/x/*")) == 200
        assert len(os.listdir("/proc/self/fd")) <= fds_before + 8  # no more than `size` kept
    finally:
        _OPENS = None
        folders.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    os.close(root_fd)


def test_identical_content_with_a_new_mtime_is_not_recopied(pair):
    dell, hp = pair
    write(dell / "big", b"z" * 1_000_000, T0)
    synced(dell, hp)
    os.utime(dell / "big", (T0 + 100, T0 + 100))  # touched, not changed
    ino = (hp / "big").stat().st_ino
    report, plan = sync(dell, hp)
    assert [op.action for op in plan.ops] == [TOUCH]
    assert plan.ops[0].md5_src == plan.ops[0].md5_dest
    assert report.bytes == 0 and report.updated == 1
    assert (hp / "big").stat().st_ino == ino  # same inode: no data copied
    assert (hp / "big").stat().st_mtime_ns == (dell / "big").stat().st_mtime_ns


def test_same_size_different_bytes_is_copied(pair):
    dell, hp = pair
    write(dell / "f", "BBBB", T0)
    synced(dell, hp)
    write(dell / "f", "AAAA", T0 + 100)
    report, plan = sync(dell, hp)
    assert plan.ops[0].action == "copy" and plan.ops[0].md5_src != plan.ops[0].md5_dest
    assert (hp / "f").read_text() == "AAAA"


def test_odd_names_round_trip(pair):
    dell, hp = pair
    names = [
        b"with space",
        b"new\nline",
        "ünïcødé-日本".encode(),
        b"latin1-\xe9\xff",
        b"n" * 255,
        b"-starts-with-dash",
        b"tab\tand;semicolon",
        b"*glob?[x]",
    ]
    for n in names:
        write(os.path.join(os.fsencode(dell), n), n, T0)
    deep = dell
    for i in range(30):
        deep = deep / f"level{i:02d}"
    write(deep / "leaf", "deep", T0)
    report, _ = sync(dell, hp)
    assert report.failed == 0
    assert snapshot(dell) == snapshot(hp)
    for n in names:
        assert os.path.exists(os.path.join(os.fsencode(hp), n))


def test_path_longer_than_path_max_is_synced(pair):
    """Directory fds make paths of any total length work (each syscall sees one name)."""
    dell, hp = pair
    parts = [f"{i:03d}-" + "d" * 116 for i in range(40)] + ["leaf"]  # 40 * 120 bytes > PATH_MAX (4096)
    write_deep(dell, parts, b"far down")
    report, _ = sync(dell, hp)
    assert report.failed == 0 and report.created == 41
    assert read_deep(hp, parts) == b"far down"


def test_symlinks_are_copied_as_links_never_followed(pair, tmp_path):
    dell, hp = pair
    outside = tmp_path / "outside"
    write(outside / "secret", "must not be copied")
    os.symlink(outside, dell / "link-to-outside-dir")
    os.symlink("does-not-exist", dell / "dangling")
    (dell / "loop").mkdir()
    os.symlink("..", dell / "loop" / "up")  # a loop: must not hang
    os.symlink("self", dell / "self")  # a link to itself
    report, _ = sync(dell, hp)
    assert report.failed == 0
    assert os.readlink(hp / "link-to-outside-dir") == str(outside)
    assert os.readlink(hp / "dangling") == "does-not-exist"
    assert os.readlink(hp / "loop" / "up") == ".."
    assert os.readlink(hp / "self") == "self"
    assert (hp / "link-to-outside-dir").is_symlink() and not any(p.name == "secret" for p in hp.rglob("*"))
    assert snapshot(dell) == snapshot(hp)


def test_symlink_retarget_newest_wins(pair):
    dell, hp = pair
    os.symlink("new-target", dell / "l")
    os.symlink("old-target", hp / "l")
    os.utime(dell / "l", (T0 + 100, T0 + 100), follow_symlinks=False)
    os.utime(hp / "l", (T0, T0), follow_symlinks=False)
    sync(dell, hp)
    assert os.readlink(hp / "l") == "new-target"


def test_empty_directories_propagate_and_dir_mtimes_are_not_synced(pair):
    dell, hp = pair
    (dell / "e1" / "e2").mkdir(parents=True)
    os.chmod(dell / "e1", 0o750)
    sync(dell, hp)
    assert (hp / "e1" / "e2").is_dir()
    assert (hp / "e1").stat().st_mode & 0o777 == 0o750


def test_modes_and_mtime_nanoseconds_are_preserved(pair):
    dell, hp = pair
    f = write(dell / "script.sh", "#!/bin/sh\n")
    os.chmod(f, 0o751)
    os.utime(f, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    sync(dell, hp)
    st = (hp / "script.sh").stat()
    assert st.st_mode & 0o7777 == 0o751
    assert st.st_mtime_ns == 1_600_000_000_123_456_789


def test_excludes_and_internal_names_are_never_synced(pair):
    dell, hp = pair
    write(dell / "movie.part", "partial")
    write(dell / "keep.txt", "k")
    write(dell / "cache" / "x.tmp", "t")
    write(dell / "cache" / "y.txt", "y")
    write(dell / ".hasync-trash" / "old", "internal")
    write(dell / "sub" / ".hasync-tmp-abc", "internal temp")
    sync(dell, hp, excludes=("*.part", "cache/x.tmp"))
    assert sorted(snapshot(hp)) == [b"cache", b"cache/y.txt", b"keep.txt", b"sub"]


def test_delete_missing_moves_files_to_trash_where_they_can_be_restored(pair):
    dell, hp = pair
    for i in range(4):
        write(dell / f"keep{i}", "k", T0)
    write(dell / "gone.txt", "precious", T0)
    write(dell / "olddir" / "inner.txt", "inner", T0)
    synced(dell, hp)
    os.remove(dell / "gone.txt")
    shutil.rmtree(dell / "olddir")
    report, plan = sync(dell, hp, delete_missing=True, run_id="run-42")
    assert report.deleted == 3  # two files and one directory
    assert not (hp / "gone.txt").exists() and not (hp / "olddir").exists()
    trashed = {p.name: p for p in (hp / ".hasync-trash").rglob("*") if p.is_file()}
    assert trashed["gone.txt"].read_text() == "precious"
    assert trashed["inner.txt"].read_text() == "inner"
    assert "run-42" in str(trashed["gone.txt"])
    os.rename(trashed["gone.txt"], hp / "gone.txt")  # undo by hand, as the README says
    assert (hp / "gone.txt").read_text() == "precious"


def test_overwritten_version_is_kept_in_trash(pair):
    dell, hp = pair
    write(dell / "doc", "old version", T0)
    synced(dell, hp)
    write(dell / "doc", "new", T0 + 100)
    sync(dell, hp)
    assert (hp / "doc").read_text() == "new"
    [kept] = [p for p in (hp / ".hasync-trash").rglob("doc")]
    assert kept.read_text() == "old version"


def test_without_delete_missing_nothing_is_deleted(pair):
    dell, hp = pair
    write(dell / "a", "a")
    write(dell / "extra", "e")
    synced(dell, hp)
    os.remove(dell / "extra")
    report, plan = sync(dell, hp)
    assert (hp / "extra").exists() and plan.kept_deleted == 1 and report.deleted == 0
    assert sync(dell, hp)[1].ops == []  # and it stays so, run after run


def test_trash_older_than_retention_is_purged(pair):
    dell, hp = pair
    write(hp / ".hasync-trash" / "20200101T000000Z-old" / "x", "old")
    write(hp / ".hasync-trash" / "not-a-stamp" / "y", "not ours")
    write(dell / "f", "f")
    sync(dell, hp, trash_retain_days=10)
    assert not (hp / ".hasync-trash" / "20200101T000000Z-old").exists()
    assert (hp / ".hasync-trash" / "not-a-stamp" / "y").exists()


def test_trash_retain_zero_deletes_for_real(pair):
    dell, hp = pair
    write(dell / "f", "old", T0)
    write(dell / "gone", "only in hp", T0)
    synced(dell, hp)
    write(dell / "f", "new", T0 + 100)
    os.remove(dell / "gone")
    report, _ = sync(dell, hp, trash_retain_days=0, delete_missing=True)
    assert report.updated == 1 and report.deleted == 1
    assert (hp / "f").read_text() == "new" and not (hp / "gone").exists()
    assert not (hp / ".hasync-trash").exists()  # replaced and deleted outright, not kept then purged


def test_conflicts_keep_both_versions_under_visible_names(pair):
    dell, hp = pair
    write(dell / "same-time", "short", T0)
    write(hp / "same-time", "longer content", T0)
    write(dell / "clash", "a file", T0 + 100)
    write(hp / "clash" / "inside", "a directory", T0)
    os.utime(hp / "clash", (T0, T0))  # the folder is older: the file keeps the name
    report, plan = sync(dell, hp)
    assert plan.conflicts == report.conflicts == 2 and report.failed == 0
    assert any("CONFLICT same-time" in n for n in report.notes) and any("CONFLICT clash" in n for n in report.notes)
    found = {v[1] for v in snapshot(hp).values() if v[0] == "file"}
    assert {b"short", b"longer content", b"a file", b"a directory"} <= found | {
        v[1] for v in snapshot(dell).values() if v[0] == "file"
    }
    assert (hp / "clash").read_text() == "a file"  # the newer keeps the name


def test_dry_run_changes_nothing_and_lists_the_plan(pair):
    dell, hp = pair
    write(dell / "old", "o")
    synced(dell, hp)
    os.remove(dell / "old")
    write(dell / "new", "n")
    before = snapshot(hp)
    report, plan = sync(dell, hp, dry_run=True, delete_missing=True, max_delete_percent=100)
    assert snapshot(hp) == before and not (hp / ".hasync-trash").exists()
    assert report.created == 1 and report.deleted == 1
    assert {(op.action, op.path) for op in plan.ops} == {("copy", b"new"), ("delete", b"old")}


def test_special_files_are_skipped_and_reported(pair):
    dell, hp = pair
    os.mkfifo(dell / "a-fifo")
    write(dell / "f", "f")
    report, _ = sync(dell, hp)
    assert not (hp / "a-fifo").exists() and (hp / "f").exists()
    assert any("a-fifo" in e and "special" in e for e in report.errors)


def test_the_same_path_trashed_twice_in_one_trash_folder_keeps_both(pair):
    """Two runs with the same trash folder (same second, same run id) each trash 'doc': both versions stay."""
    dell, hp = pair
    write(dell / "doc", "first", T0)
    synced(dell, hp)
    for n, text in enumerate(("second", "third")):
        write(dell / "doc", text, T0 + 100 + n)
        sync(dell, hp, run_id="same-run")
    kept = sorted(p.read_text() for p in (hp / ".hasync-trash").rglob("doc*"))
    assert kept == ["first", "second"] and (hp / "doc").read_text() == "third"


def test_a_walked_listing_s_narrow_columns_go_through_the_journal_unchanged(pair):
    """The walk keeps modes as 16-bit and a folder's single owner as one value (walk.Same); the journal's
    format stores 32-bit columns: what comes back must equal what went in, entry by entry."""
    from hasync_pipeline.engine.journal import Journal, decode, encode
    from hasync_pipeline.engine.walk import Same, walk_tree

    dell, _ = pair
    for i in range(5):
        write(dell / "same" / f"f{i}", "x" * i, T0 + i)
        write(dell / "mixed" / f"f{i}", "y", T0)
        os.chmod(dell / "mixed" / f"f{i}", 0o600 + i)
    os.chown(dell / "mixed" / "f3", 4242, 4343)
    tree = walk_tree(str(dell))
    same, mixed = tree.dirs[b"same"], tree.dirs[b"mixed"]
    assert isinstance(same.uids, Same) and not isinstance(mixed.uids, Same) and same.modes.typecode == "H"
    assert same.uids == array("I", [os.geteuid()] * 5) and array("I", [os.geteuid()] * 5) == same.uids
    back = decode(encode(Journal("g1", None, ("a", "b"), {rel: (d, d) for rel, d in tree.dirs.items()})))
    for rel, listing in tree.dirs.items():
        for side in back.dirs[rel]:
            assert list(side.entries()) == list(listing.entries()), rel


def test_a_folder_deleted_with_its_files_is_not_settled_afterwards(pair):
    """The deleted files touched their folder, then the folder went too: setting its mode and mtime after
    the batch made a clean deletion a partial failure ('old: folder mode and mtime not set: ENOENT')."""
    dell, hp = pair
    write(dell / "old" / "deeper" / "gone.txt", "soon deleted", T0)
    write(dell / "kept.txt", "k", T0)
    synced(dell, hp)
    shutil.rmtree(dell / "old")
    report, _ = sync(dell, hp, delete_missing=True)
    assert report.errors == [] and report.failed == 0 and report.deleted == 3
    assert snapshot(hp) == snapshot(dell)
