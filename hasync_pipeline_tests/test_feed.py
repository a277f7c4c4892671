"""The change feed's first half: the change log's contract (every doubt is a full walk, saying why) and the
watcher on real inotify, real folders: each kind of change is named, or its subtree rescanned."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hasync_pipeline.engine.changelog import CHANGES_DIR, ChangeLogWriter, Position, read_since
from hasync_pipeline.feed.watcher import Watcher
from hasync_pipeline_tests.conftest import write


def test_records_round_trip_any_name_and_a_reader_gets_exactly_what_came_after_its_position(tmp_path):
    log = ChangeLogWriter(str(tmp_path))
    start = log.tip
    odd = [b"photos/a.jpg", b"caf\xe9/\xff\xfe.bin", b"new\nline", b"with space/and%percent"]
    log.append(odd[:2])
    middle = log.tip
    log.append(odd[2:], rescans=[b"music"])
    changes = read_since(str(tmp_path), start)
    assert (changes.full, changes.paths, changes.subtrees) == ("", set(odd), {b"music"})
    assert changes.tip == log.tip
    later = read_since(str(tmp_path), middle)
    assert (later.paths, later.subtrees) == (set(odd[2:]), {b"music"})
    assert read_since(str(tmp_path), log.tip).nothing


def test_every_doubt_is_a_full_walk_that_says_why(tmp_path):
    root = str(tmp_path)
    assert "no change log" in read_since(root, None).full
    log = ChangeLogWriter(root, segment_bytes=64, max_segments=2)
    assert "no position recorded" in read_since(root, None).full
    assert "whole root" in read_since(root, Position(log.epoch, 0)).full  # a new epoch begins with a rescan
    first = log.tip
    for i in range(20):  # many small segments: the oldest are dropped
        log.append([f"f{i}".encode()])
    assert "no longer holds" in read_since(root, first).full
    assert "behind the last sync" in read_since(root, Position(log.epoch, log.seq + 5)).full
    restarted = ChangeLogWriter(root)  # the watcher restarted: what happened meanwhile is unknown
    assert "new epoch" in read_since(root, log.tip).full
    [segment] = [n for n in os.listdir(tmp_path / CHANGES_DIR) if restarted.epoch in n]
    tip = restarted.tip
    restarted.append([b"x"])
    with open(tmp_path / CHANGES_DIR / segment, "ab") as f:
        f.write(b"garbage here\n")
    assert "damaged" in read_since(root, tip).full


def test_a_half_written_last_line_is_left_for_the_next_reader(tmp_path):
    log = ChangeLogWriter(str(tmp_path))
    tip = log.tip
    log.append([b"whole"])
    [segment] = os.listdir(tmp_path / CHANGES_DIR)
    with open(tmp_path / CHANGES_DIR / segment, "ab") as f:
        f.write(b"99 p half")  # no newline yet: the watcher is writing it
    changes = read_since(str(tmp_path), tip)
    assert (changes.full, changes.paths) == ("", {b"whole"})


@pytest.fixture
def watched(tmp_path):
    root = tmp_path / "root"
    write(root / "photos" / "a.jpg", "a")
    write(root / "doc.txt", "doc")
    watcher = Watcher([str(root)])
    yield root, watcher
    watcher.close()


def seen(root: Path, watcher: Watcher, since: Position, paths: set[bytes], subtrees: set[bytes] = frozenset()):
    """Step the watcher until the change log names `paths` and `subtrees` since `since` (bounded)."""
    deadline = time.monotonic() + 10
    while True:
        changes = read_since(str(root), since)
        if paths <= changes.paths and subtrees <= changes.subtrees:
            return changes
        assert time.monotonic() < deadline, (changes.paths, changes.subtrees)
        watcher.step(0.5)


def test_each_kind_of_change_is_named(watched, tmp_path):
    root, watcher = watched
    since = watcher.roots[0].log.tip
    write(root / "new.txt", "new")  # created
    write(root / "doc.txt", "edited")  # written
    os.rename(root / "photos" / "a.jpg", root / "photos" / "b.jpg")  # moved: both names
    os.remove(root / "new.txt")  # deleted
    os.chmod(root / "doc.txt", 0o600)  # attribute only
    changes = seen(root, watcher, since, {b"new.txt", b"doc.txt", b"photos/a.jpg", b"photos/b.jpg"})
    assert changes.full == "" and not changes.subtrees


def test_folders_made_or_moved_in_are_watched_and_rescanned_moved_out_named(watched, tmp_path):
    root, watcher = watched
    since = watcher.roots[0].log.tip
    write(tmp_path / "outside" / "album" / "x.jpg", "x")
    os.rename(tmp_path / "outside" / "album", root / "album")  # moved in: its contents arrive unseen
    (root / "made").mkdir()
    changes = seen(root, watcher, since, {b"album", b"made"}, {b"album", b"made"})
    after = watcher.roots[0].log.tip
    write(root / "made" / "deep" / "y.txt", "y")  # inside a new folder: watched now
    write(root / "album" / "z.jpg", "z")
    seen(root, watcher, after, {b"made/deep", b"album/z.jpg"})
    last = watcher.roots[0].log.tip
    os.rename(root / "photos", tmp_path / "photos-gone")  # moved out
    changes = seen(root, watcher, last, {b"photos"})
    assert changes.full == ""


@pytest.mark.slow  # real processes / 10k files: the fast set stays under a minute
def test_a_burst_of_ten_thousand_files_is_named_file_by_file_or_rescanned(watched):
    root, watcher = watched
    since = watcher.roots[0].log.tip
    names = {f"burst/f{i:05d}".encode() for i in range(10_000)}
    (root / "burst").mkdir()
    for name in names:
        (root / os.fsdecode(name)).write_bytes(b"b")
    deadline = time.monotonic() + 30
    while True:
        watcher.step(0.5)
        changes = read_since(str(root), since)
        covered = {n for n in names if n in changes.paths or any(n.startswith(s + b"/") for s in changes.subtrees)}
        if covered == names or changes.full:
            break
        assert time.monotonic() < deadline, len(names - covered)
    assert covered == names or "rescan" in changes.full


def test_a_queue_overflow_is_a_rescan_of_the_whole_root(watched):
    root, watcher = watched
    since = watcher.roots[0].log.tip
    for each in watcher.roots:  # what the watcher does on IN_Q_OVERFLOW (max_queued_events needs root to lower)
        each.rescans.add(b"")
        each.flush()
    assert "rescan of the whole root" in read_since(str(root), since).full


@pytest.mark.slow  # real processes / 10k files: the fast set stays under a minute
def test_ha_sync_watch_runs_until_sigterm_and_its_log_names_a_write(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hasync_pipeline.cli", "watch", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("ha-sync watch: watching")  # its watches are in place
        start = read_since(str(root), None).tip
        write(root / "film.mkv", "frames")
        deadline = time.monotonic() + 10
        while b"film.mkv" not in read_since(str(root), start).paths:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)  # polling the change log the watcher appends to, bounded
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    bad = subprocess.run(
        [sys.executable, "-m", "hasync_pipeline.cli", "watch", str(tmp_path / "unmounted")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a folder" in bad.stderr
    shutil.rmtree(root)


@pytest.mark.slow
def test_ha_sync_follow_carries_a_write_to_the_other_side_in_seconds_in_changes_scope(tmp_path):
    """The whole outside-Kubernetes feed, as real processes: a watcher per server, a follower, real runs."""
    dell, hp = tmp_path / "dell", tmp_path / "hp"
    write(dell / "media" / "old.mkv", "old")
    (hp / "media").mkdir(parents=True)
    env = {
        **os.environ,
        "HA_SYNC_DELL_ROOT": str(dell),
        "HA_SYNC_HP_ROOT": str(hp),
        "HA_SYNC_LOG_DIR": str(tmp_path / "logs"),
    }
    ha_sync = [sys.executable, "-m", "hasync_pipeline.cli"]
    for job in ("media_dell_to_hp", "media_hp_to_dell"):  # in sync first, as the timers leave it
        assert subprocess.run([*ha_sync, "job", job, "--no-dry-run"], env=env, capture_output=True).returncode == 0
    started = []
    try:
        for args in (["watch", str(dell / "media"), str(hp / "media")], ["follow", "--pair", "media", "--no-dry-run"]):
            proc = subprocess.Popen(
                [*ha_sync, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            started.append(proc)
            assert proc.stdout.readline().startswith(f"ha-sync {args[0]}:")  # watching / following
        write(dell / "media" / "new.mkv", "frames")
        written = time.monotonic()
        deadline = written + 60
        while not (hp / "media" / "new.mkv").exists():
            assert all(p.poll() is None for p in started) and time.monotonic() < deadline
            time.sleep(0.05)  # polling the other side for the file, bounded
        assert (hp / "media" / "new.mkv").read_text() == "frames"
        said = []
        while not said or not said[-1].startswith("ha-sync follow: "):  # the run's own lines, then the follower's
            said.append(started[1].stdout.readline())
        assert said[-1].startswith("ha-sync follow: media_dell_to_hp ended with exit code 0"), said
        assert any(line.startswith(("changes only:", "a full walk: ")) for line in said), said
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.communicate()
    assert [p.returncode for p in started] == [0, 0]


def test_a_changes_run_lists_each_changed_path_s_folder_and_walks_only_the_outermost_subtrees():
    from hasync_pipeline.engine.changelog import Changes
    from hasync_pipeline.engine.incremental import scope_of

    dell = Changes(None, paths={b"a/b/f.jpg", b"a/b", b"top.txt"}, subtrees={b"x"})
    hp = Changes(None, paths={b"x/y/z.txt", b"a/c.txt"})
    scope = scope_of((dell, hp))
    assert scope.subtrees == {b"a/b", b"top.txt", b"x", b"a/c.txt"}  # a/b/f.jpg and x/y/z.txt: inside others
    assert scope.folders == {b"a", b""}  # the folders of a/b, a/c.txt and top.txt; a/b's and x/y's are walked
    # a folder the journal knows (its attributes changed: a run set its mtime) is listed, not walked
    known = scope_of((Changes(None, paths={b"", b"a/b", b"a/new"}), Changes(None)), known={b"", b"a", b"a/b"})
    assert known.folders == {b"", b"a", b"a/b"} and known.subtrees == {b"a/new"}
    burst = Changes(None, paths={f"big/f{i:05d}".encode() for i in range(10_000)} | {b"big"})
    assert scope_of((burst, Changes(None))).subtrees == {b"big"}  # one set lookup per ancestor: instant
