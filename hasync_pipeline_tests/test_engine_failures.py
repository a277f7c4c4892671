"""Bad input of every kind: each gets a clear error naming the problem, and loses nothing."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hasync_pipeline.engine import SafetyRefusal, fsutil, run_sync
from hasync_pipeline_tests.conftest import (
    NOBODY,
    as_user,
    internal_leftovers,
    largest_temp_file,
    options,
    pair_args,
    snapshot,
    sync,
    synced,
    write,
)

T0 = time.time() - 10_000


def chown_tree(root: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.chown(name, uid, uid, follow_symlinks=False)


def summarize(report_and_plan):
    report, plan = report_and_plan
    return report.clean, report.failed, report.errors, [(op.action, op.path) for op in plan.ops]


def test_unreadable_source_directory_is_never_read_as_empty(pair):
    dell, hp = pair
    write(dell / "private" / "a", "a", T0)
    write(hp / "private" / "a", "a", T0)
    write(hp / "private" / "b", "b", T0)  # would be deleted if 'private' were wrongly seen as empty
    for i in range(5):
        write(dell / f"f{i}", "f", T0)
    chown_tree(dell.parent, NOBODY)
    os.chmod(dell / "private", 0)
    clean, failed, errors, ops = as_user(NOBODY, lambda: summarize(sync(dell, hp, delete_missing=True)))
    assert ops and all(not path.startswith(b"private") for _, path in ops)
    assert clean is False
    assert any("private" in e and "Permission denied" in e for e in errors)
    assert (hp / "private" / "b").read_text() == "b"


def test_unreadable_destination_directory_is_left_alone(pair):
    dell, hp = pair
    write(dell / "locked" / "new", "n", T0)
    write(hp / "locked" / "old", "o", T0)
    chown_tree(dell.parent, NOBODY)
    os.chmod(hp / "locked", 0)
    clean, failed, errors, ops = as_user(NOBODY, lambda: summarize(sync(dell, hp, delete_missing=True)))
    assert ops == [] and clean is False
    assert any("locked" in e for e in errors)


def test_unreadable_file_fails_alone_and_the_rest_is_synced(pair):
    dell, hp = pair
    write(dell / "secret", "s")
    write(dell / "public", "p")
    chown_tree(dell.parent, NOBODY)
    os.chmod(dell / "secret", 0)

    def run():
        results = []
        report, _ = run_sync(str(dell), str(hp), options(), "t", on_result=results.append)
        return report.clean, [(r.op.path, r.ok, r.error) for r in results]

    clean, results = as_user(NOBODY, run)
    assert clean is False
    assert (b"public", True, None) in results
    assert (b"secret", False, "EACCES: Permission denied") in results
    assert not (hp / "secret").exists() and internal_leftovers(hp) == []


def test_file_growing_during_its_copy_is_not_installed(pair, monkeypatch):
    dell, hp = pair
    write(dell / "growing.log", b"old", T0 - 100)
    synced(dell, hp)
    src_file = write(dell / "growing.log", b"x" * 100_000, T0)
    real_copy = fsutil.copy_data

    def copy_while_another_writer_appends(src_fd, dst_fd, cancelled=lambda: False, expected=None, sparse=False):
        n = real_copy(src_fd, dst_fd, cancelled, expected, sparse)
        with open(src_file, "ab") as f:  # a real write to the source, exactly mid-operation
            f.write(b"more")
        return n

    monkeypatch.setattr(fsutil, "copy_data", copy_while_another_writer_appends)
    results = []
    report, _ = run_sync(str(dell), str(hp), options(), "t", on_result=results.append)
    assert not report.clean
    assert "source changed during the copy" in results[0].error
    assert (hp / "growing.log").read_bytes() == b"old"
    assert internal_leftovers(hp) == []
    monkeypatch.undo()
    sync(dell, hp)  # the next run picks it up
    assert (hp / "growing.log").read_bytes() == b"x" * 100_000 + b"more"


@pytest.mark.slow
def test_process_killed_mid_copy_leaves_no_partial_file_and_next_run_converges(pair):
    dell, hp = pair
    big = dell / "big.bin"
    write(big, b"old content", T0)
    synced(dell, hp)
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(768):
            f.write(block)
    os.utime(big, (T0 + 100, T0 + 100))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hasync_pipeline.cli",
            *pair_args(dell, hp, "media"),
            "--log-dir",
            str(hp.parent / "logs"),
            "--no-dry-run",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while largest_temp_file(hp) <= 1 << 20:  # copy under way
        assert proc.poll() is None and time.monotonic() < deadline, "the copy finished before it was seen"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (hp / "big.bin").read_bytes() == b"old content"  # never a half-written file under the real name
    assert internal_leftovers(hp)  # the partial temp file is there...
    report, _ = sync(dell, hp)
    assert internal_leftovers(hp) == []  # ...and the next run removes it
    assert report.failed == 0
    assert (hp / "big.bin").stat().st_size == 768 << 20
    assert (hp / "big.bin").read_bytes() == big.read_bytes()


@pytest.fixture
def small_fs(tmp_path):
    """A real 4 MiB filesystem (tmpfs) when this machine lets us mount one; otherwise None."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_copies_that_do_not_fit_are_refused_up_front(tmp_path, small_fs):
    if small_fs is None:
        pytest.skip("cannot mount a tmpfs here; ENOSPC is covered by the injected variant below")
    src = tmp_path / "src"
    write(src / "big", os.urandom(6 << 20))
    write(small_fs / "existing", "e")
    before = snapshot(small_fs)
    with pytest.raises(SafetyRefusal, match="need .* bytes but .* free"):
        sync(src, small_fs)
    assert snapshot(small_fs) == before


def test_disk_filling_during_the_run_fails_those_copies_cleanly(tmp_path, small_fs, monkeypatch):
    """ENOSPC on a real small filesystem (filled by another writer after the plan) - or injected where no
    filesystem can be mounted."""
    src = tmp_path / "src"
    dest = small_fs or (tmp_path / "dest")
    dest.mkdir(exist_ok=True)
    write(src / "a", "old a", T0)
    synced(src, dest, free_space_reserve_bytes=0)
    write(src / "a", os.urandom(1 << 20), T0 + 100)
    write(src / "b", os.urandom(1 << 20), T0 + 100)

    def fill_disk(plan):
        if small_fs is None:

            def no_space(*a, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(fsutil, "copy_data", no_space)
        else:
            with open(dest / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        return True

    results = []
    report, _ = run_sync(
        str(src), str(dest), options(free_space_reserve_bytes=0), "t", on_result=results.append, on_plan=fill_disk
    )
    assert not report.clean and report.failed >= 1
    assert all("ENOSPC" in r.error for r in results if not r.ok)
    assert (dest / "a").read_text() == "old a"  # the old version is intact
    assert internal_leftovers(dest) == []
    (dest / "filler").unlink(missing_ok=True)
    monkeypatch.undo()
    report, _ = sync(src, dest, free_space_reserve_bytes=0)
    assert report.failed == 0 and (dest / "a").read_bytes() == (src / "a").read_bytes()


def _refusal_cases(tmp_path: Path):
    dell, hp = tmp_path / "dell", tmp_path / "hp"
    return {
        "missing source": (tmp_path / "nope", hp, {}, "does not exist"),
        "missing destination": (dell, tmp_path / "nope", {}, "does not exist"),
        "source is a file": (dell / "a-file", hp, {}, "not a directory"),
        "same folder": (dell, dell, {}, "same folder"),
        "nested": (dell, dell / "sub", {}, "inside"),
        "empty source": (tmp_path / "empty", hp, {}, "empty"),
        "too many deletes": (dell, hp, {"delete_missing": True}, "--max-delete"),
    }


@pytest.mark.parametrize("case", list(_refusal_cases(Path("/x"))))
def test_every_safety_refusal_leaves_the_destination_untouched(tmp_path, case):
    src, dest, opts, message = _refusal_cases(tmp_path)[case]
    for d in ("dell", "hp", "empty"):
        (tmp_path / d).mkdir()
    write(tmp_path / "dell" / "a-file", "a")
    write(tmp_path / "dell" / "sub" / "x", "x")
    for i in range(10):
        write(tmp_path / "hp" / f"only-in-hp-{i}", "precious")
    if case == "too many deletes":  # known to both sides, then deleted on the source
        for i in range(10):
            write(tmp_path / "dell" / f"only-in-hp-{i}", "precious")
        synced(tmp_path / "dell", tmp_path / "hp")
        for i in range(10):
            os.remove(tmp_path / "dell" / f"only-in-hp-{i}")
    before = {d: snapshot(tmp_path / d) for d in ("dell", "hp")}
    with pytest.raises(SafetyRefusal, match=message):
        sync(src, dest, **opts)
    assert {d: snapshot(tmp_path / d) for d in ("dell", "hp")} == before
    assert not (tmp_path / "hp" / ".hasync-trash").exists()


def test_destination_folder_that_is_a_symlink_is_a_conflict_not_a_path(pair, tmp_path):
    dell, hp = pair
    outside = tmp_path / "etc"
    outside.mkdir()
    write(dell / "docs" / "passwd", "evil")
    os.symlink(outside, hp / "docs")
    report, plan = sync(dell, hp)
    assert plan.conflicts == 1 and report.conflicts == 1  # folder against link: both kept, the link renamed
    assert list(outside.iterdir()) == []


def test_folder_swapped_for_a_symlink_during_the_run_cannot_redirect_a_write(pair, tmp_path):
    dell, hp = pair
    outside = tmp_path / "etc"
    outside.mkdir()
    write(dell / "docs" / "passwd", "evil")
    (hp / "docs").mkdir()

    def swap(plan):
        os.rmdir(hp / "docs")
        os.symlink(outside, hp / "docs")
        return True

    results = []
    report, _ = run_sync(str(dell), str(hp), options(), "t", on_result=results.append, on_plan=swap)
    assert list(outside.iterdir()) == []
    [failed] = [r for r in results if not r.ok]
    assert "symlink or not a directory" in failed.error


def test_file_changed_after_the_plan_is_left_for_the_next_run(pair):
    dell, hp = pair
    write(dell / "f", "original", T0)
    synced(dell, hp)
    write(dell / "f", "source", T0 + 100)

    def edit_dest(plan):
        write(hp / "f", "edited by a user meanwhile", T0 + 50)
        return True

    results = []
    run_sync(str(dell), str(hp), options(), "t", on_result=results.append, on_plan=edit_dest)
    assert "destination changed since the plan" in results[0].error
    assert (hp / "f").read_text() == "edited by a user meanwhile"
    assert internal_leftovers(hp) == []


def test_a_symlinked_trash_folder_is_never_followed(pair, tmp_path):
    """.hasync-trash swapped for a link to a folder outside the pair: no purge, no trash move goes there."""
    dell, hp = pair
    outside = tmp_path / "elsewhere"
    write(outside / "20200101T000000Z-old" / "precious", "not ours")  # looks like an old trash folder
    write(dell / "doc", "v1", T0)
    write(dell / "gone", "g", T0)
    synced(dell, hp)
    os.symlink(outside, hp / ".hasync-trash")
    write(dell / "doc", "v2", T0 + 100)
    os.remove(dell / "gone")
    report, _ = sync(dell, hp, delete_missing=True, trash_retain_days=1)
    assert (outside / "20200101T000000Z-old" / "precious").read_text() == "not ours"
    assert sorted(os.listdir(outside)) == ["20200101T000000Z-old"]  # nothing moved in either
    assert (hp / "doc").read_text() == "v1" and (hp / "gone").exists()  # their old versions had no safe trash
    assert report.failed == 2 and any("trash not purged" in e for e in report.errors)


def test_a_fifo_where_a_file_was_never_deletes_the_other_side_s_file(pair):
    dell, hp = pair
    write(dell / "data", "the real file", T0)
    write(dell / "other", "o", T0)
    synced(dell, hp)
    os.remove(dell / "data")
    os.mkfifo(dell / "data")  # replaced by a FIFO on the source
    report, plan = sync(dell, hp, delete_missing=True)
    assert plan.ops == [] and (hp / "data").read_text() == "the real file"
    assert any("data: special file" in e for e in report.errors)
    os.mkfifo(hp / "pipe")
    write(dell / "pipe", "a file where the other side has a FIFO", T0)
    report, plan = sync(dell, hp, delete_missing=True)
    assert plan.ops == [] and os.path.exists(hp / "pipe") and not os.path.isfile(hp / "pipe")


def test_a_deleted_folder_holding_only_excluded_names_is_kept_without_an_error(pair):
    """It once made every later run end in a partial failure (rmdir: not empty), forever."""
    dell, hp = pair
    write(dell / "build" / "out.bin", "synced", T0)
    write(dell / "README", "stays", T0)
    synced(dell, hp, excludes=["*.tmp"])
    write(hp / "build" / "scratch.tmp", "excluded: never synced, never deleted", T0)
    (dell / "build" / "out.bin").unlink()
    (dell / "build").rmdir()
    for _ in range(2):  # and again: the same answer, no error, nothing brought back
        report, plan = sync(dell, hp, excludes=["*.tmp"], delete_missing=True)
        assert report.clean and report.failed == 0, report.errors
        assert (hp / "build" / "scratch.tmp").exists() and not (hp / "build" / "out.bin").exists()
        assert any("build: deleted on the source; kept here, it holds excluded names" in n for n in plan.notes)
        report, plan = sync(hp, dell, excludes=["*.tmp"], delete_missing=True)
        assert report.clean and not (dell / "build").exists()  # the other direction does not resurrect it


@pytest.fixture
def mount_in_destination(pair):
    """A real tmpfs mounted inside the destination (root can; otherwise skipped)."""
    dell, hp = pair
    (hp / "mnt").mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(hp / "mnt")], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield dell, hp
    finally:
        subprocess.run(["umount", "-l", str(hp / "mnt")])


def test_a_mount_inside_the_destination_keeps_its_own_trash_and_moves_across_it_are_copies(mount_in_destination):
    """Replacing or deleting under it once failed with EXDEV (a rename into the root's trash), every run."""
    dell, hp = mount_in_destination
    write(dell / "mnt" / "db.sqlite", "v1", T0)
    write(dell / "mnt" / "old.log", "log", T0)
    write(dell / "top.txt", "top", T0)
    for i in range(4):
        write(dell / f"keep{i}", "k", T0)
    synced(dell, hp)
    write(dell / "mnt" / "db.sqlite", "v2", T0 + 100)  # replaced under the mount
    (dell / "mnt" / "old.log").unlink()  # deleted under the mount
    os.rename(dell / "top.txt", dell / "mnt" / "top.txt")  # moved into the mount: no rename can do that
    report, plan = sync(dell, hp, delete_missing=True, trash_retain_days=1)
    assert report.clean and report.failed == 0, report.errors
    assert not any(op.action == "move" for op in plan.ops)
    assert (hp / "mnt" / "db.sqlite").read_text() == "v2" and (hp / "mnt" / "top.txt").read_text() == "top"
    assert not (hp / "mnt" / "old.log").exists() and not (hp / "top.txt").exists()
    kept = sorted(p.relative_to(hp) for p in (hp / "mnt" / ".hasync-trash").rglob("*") if p.is_file())
    assert [p.name for p in kept] == ["db.sqlite", "old.log"]  # the old versions, on the mount's filesystem
    assert sorted(p.name for p in (hp / ".hasync-trash").rglob("*") if p.is_file()) == ["top.txt"]
    report, plan = sync(dell, hp, delete_missing=True, trash_retain_days=0)  # and the purge reaches it
    assert report.clean and plan.ops == []
    assert not any(p.is_file() for p in (hp / "mnt" / ".hasync-trash").rglob("*"))


@pytest.mark.parametrize("side", ["src", "dest"])
def test_a_symlinked_journal_folder_is_never_followed(pair, tmp_path, side):
    """.hasync (marker and journal) swapped for a link to a folder outside the pair: nothing is read from or
    written there, and the run refuses before any change."""
    dell, hp = pair
    write(dell / "doc", "v1", T0)
    write(dell / "keep", "k", T0)
    synced(dell, hp)
    root = dell if side == "src" else hp
    outside = tmp_path / "elsewhere"
    os.rename(root / ".hasync", outside)  # a real journal, out of the pair
    os.symlink(outside, root / ".hasync")
    before = snapshot(outside), {p.name: p.stat().st_mtime_ns for p in outside.iterdir()}
    write(dell / "doc", "v2", T0 + 100)
    with pytest.raises(SafetyRefusal, match=r"\.hasync"):
        sync(dell, hp, delete_missing=True)
    assert (snapshot(outside), {p.name: p.stat().st_mtime_ns for p in outside.iterdir()}) == before
    assert (hp / "doc").read_text() == "v1"
