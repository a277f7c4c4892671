"""Metadata parity: files and folders arrive as `rsync -aHAXS` leaves them (permissions, owners, mtimes of
files and folders, xattrs, POSIX ACLs, holes, hard links), and a metadata-only change propagates.  Each test
runs the real rsync on the same tree and compares both results."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from hasync_pipeline_tests.conftest import NOBODY, as_user, sync, synced, write

T0 = time.time() - 10_000
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ACL_ACCESS = "system.posix_acl_access"

needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (.ci installs it)")


def acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL as the kernel stores it in its xattr: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in entries)


def xattrs(path: Path) -> dict[str, bytes]:
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in os.listxattr(path, follow_symlinks=False)}


def metadata(root: Path) -> dict[str, tuple]:
    """Everything rsync -aHAXS keeps, per path (hard links as the set of names sharing an inode)."""
    found: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".hasync")]
        for name in dirnames + [f for f in filenames if not f.startswith(".hasync")]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
            found[rel] = (
                stat.filemode(st.st_mode),
                st.st_uid,
                st.st_gid,
                None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns,  # this rsync leaves a link's mtime
                st.st_size,
                st.st_blocks if stat.S_ISREG(st.st_mode) else None,
                None if stat.S_ISLNK(st.st_mode) else xattrs(path),
            )
    for names in inodes.values():
        for rel in names:
            found[rel] += (tuple(sorted(names)),)
    return found


def rsync_copy(src: Path, dest: Path) -> None:
    subprocess.run(["rsync", "-aHAXS", f"{src}/", f"{dest}/"], check=True)


def rich_tree(root: Path) -> None:
    """Modes, owners, set-gid, read-only folders, xattrs, ACLs, a sparse file, hard links, folder mtimes."""
    write(root / "docs" / "a.txt", "a", T0)
    os.setxattr(root / "docs" / "a.txt", "user.origin", b"scanner")
    os.setxattr(
        root / "docs" / "a.txt",
        ACL_ACCESS,
        acl((USER_OBJ, 6, 0), (USER, 4, 1000), (GROUP_OBJ, 4, 0), (MASK, 4, 0), (OTHER, 0, 0)),
    )
    write(root / "docs" / "private", "p", T0)
    os.chmod(root / "docs" / "private", 0o600)
    os.chown(root / "docs" / "private", 1000, 1000)
    write(root / "shared" / "team.txt", "t", T0)
    os.chown(root / "shared", 0, 1000)
    os.chmod(root / "shared", 0o2775)  # set-gid: new files there belong to the team
    os.chown(root / "shared" / "team.txt", 0, 1000)
    write(root / "frozen" / "inner" / "old.txt", "o", T0)
    os.chmod(root / "frozen" / "inner", 0o555)
    os.chmod(root / "frozen", 0o555)
    with open(root / "disk.img", "wb") as f:  # 1 MiB of data in a 64 MiB file
        f.truncate(64 << 20)
        f.seek(8 << 20)
        f.write(os.urandom(1 << 20))
    os.utime(root / "disk.img", (T0, T0))
    write(root / "photo.jpg", "jpeg", T0)
    os.link(root / "photo.jpg", root / "docs" / "photo-link.jpg")
    os.symlink("docs/a.txt", root / "latest")
    for folder in ("docs", "shared", "frozen/inner", "frozen"):
        os.utime(root / folder, (T0 - 500, T0 - 500))


@pytest.fixture
def three(tmp_path) -> tuple[Path, Path, Path]:
    """The rich tree, and two empty folders: one for ha-sync, one for rsync."""
    src, ours, theirs = tmp_path / "src", tmp_path / "ours", tmp_path / "rsync"
    for d in (src, ours, theirs):
        d.mkdir()
    rich_tree(src)
    return src, ours, theirs


@needs_rsync
def test_a_first_sync_leaves_what_rsync_aHAXS_leaves(three):
    src, ours, theirs = three
    rsync_copy(src, theirs)
    report, _ = sync(src, ours)
    assert report.clean, report.errors
    assert metadata(ours) == metadata(theirs) == metadata(src)
    assert os.stat(ours / "disk.img").st_blocks * 512 < 2 << 20  # the holes stayed holes
    assert os.lstat(ours / "latest").st_mtime_ns == os.lstat(src / "latest").st_mtime_ns  # we keep it


@needs_rsync
def test_metadata_only_changes_propagate_as_rsync_aHAXS_would(three):
    src, ours, theirs = three
    synced(src, ours)
    rsync_copy(src, theirs)
    os.chmod(src / "docs" / "a.txt", 0o640)  # chmod only
    os.chown(src / "photo.jpg", 1000, 1000)  # chown only (both names of the hard link)
    os.setxattr(src / "docs" / "private", "user.tag", b"new")  # an xattr only
    os.utime(src / "docs", (T0, T0))  # a folder's mtime, with a new file in it
    write(src / "docs" / "new.txt", "n", T0)
    os.utime(src / "docs", (T0 - 100, T0 - 100))
    rsync_copy(src, theirs)
    report, plan = sync(src, ours)
    assert report.clean, report.errors
    assert metadata(ours) == metadata(theirs)
    assert not any(op.action == "copy" and op.path != b"docs/new.txt" for op in plan.ops)  # no data re-sent


def test_a_read_only_tree_arrives_whole_for_a_user_who_is_not_root(tmp_path):
    """It once made the 0555 folder first and then could not put its files in, run after run."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    for d in (src, dest):
        d.mkdir()
    write(src / "archive" / "2019" / "scan.pdf", "pdf", T0)
    write(src / "archive" / "index.txt", "i", T0)
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.chown(name, NOBODY, NOBODY)
    for folder in ("archive/2019", "archive"):
        os.chmod(src / folder, 0o555)
        os.utime(src / folder, (T0, T0))

    def run() -> tuple[bool, list[str]]:
        report, _ = sync(src, dest)
        return report.clean, report.errors

    assert as_user(NOBODY, run) == (True, [])
    assert (dest / "archive" / "2019" / "scan.pdf").read_text() == "pdf"
    for folder in ("archive/2019", "archive"):
        st = os.stat(dest / folder)
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o555, T0)
    write(src / "archive" / "2019" / "late.pdf", "late", T0)  # root adds one (nobody could not)
    os.chown(src / "archive" / "2019" / "late.pdf", NOBODY, NOBODY)
    assert as_user(NOBODY, run) == (True, [])  # the existing read-only folder takes it, and stays read-only
    assert (dest / "archive" / "2019" / "late.pdf").read_text() == "late"
    assert stat.S_IMODE(os.stat(dest / "archive" / "2019").st_mode) == 0o555


def test_a_set_gid_destination_folder_gives_its_group_to_what_a_user_syncs_in(tmp_path):
    """Not root, so owners are not kept: the group comes from the destination's set-gid folder, as the
    kernel gives it to any new file there (the folder is made with its set-gid bit, before its contents)."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    for d in (src, dest):
        d.mkdir()
    write(src / "team" / "plan.txt", "p", T0)
    os.chown(src, NOBODY, NOBODY)
    for path in (src / "team", src / "team" / "plan.txt"):
        os.chown(path, NOBODY, NOBODY)
    os.chmod(src / "team", 0o2775)
    os.chown(dest, NOBODY, 1000)
    os.chmod(dest, 0o2775)

    def run() -> bool:
        return sync(src, dest)[0].clean

    assert as_user(NOBODY, run)
    assert os.stat(dest / "team").st_gid == os.stat(dest / "team" / "plan.txt").st_gid == 1000
    assert os.stat(dest / "team").st_mode & stat.S_ISGID  # and it passes the group on


def test_a_new_name_for_a_synced_file_is_linked_to_its_twin_not_copied(pair):
    dell, hp = pair
    write(dell / "video.mkv", "big", T0)
    synced(dell, hp)
    os.link(dell / "video.mkv", dell / "video-alias.mkv")
    report, plan = sync(dell, hp)
    assert [(op.action, op.path, op.new_path) for op in plan.ops] == [("hardlink", b"video-alias.mkv", b"video.mkv")]
    assert report.clean and report.bytes == 0
    assert os.stat(hp / "video-alias.mkv").st_ino == os.stat(hp / "video.mkv").st_ino
    report, plan = sync(hp, dell)  # the other way: nothing to do, nothing flagged
    assert report.clean and plan.ops == []


def test_with_hard_links_off_each_name_is_a_copy_of_its_own(pair):
    dell, hp = pair
    write(dell / "a", "same inode", T0)
    os.link(dell / "a", dell / "b")
    report, _ = sync(dell, hp, hard_links=False)
    assert report.clean and os.stat(hp / "a").st_ino != os.stat(hp / "b").st_ino
