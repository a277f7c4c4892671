"""The echo: a run's own writes on the destination, as that side's watcher logs them, must not look like a change
waiting to travel back (each would launch a second run behind every real one), while a change anyone else
made there - even to a file the run just wrote - must.  A real watcher on its own thread, as `ha-sync watch`
runs it, real runs; the reader's fence (changelog.fence) is the only synchronisation."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hasync_pipeline.cli_follow import read_tip
from hasync_pipeline.engine.changelog import FENCE_PREFIX, fence, tip
from hasync_pipeline.engine.incremental import consumed
from hasync_pipeline.feed.watcher import RootWatch, Watcher
from hasync_pipeline_tests.conftest import sync, write

CHANGES = {"scope": "changes", "delete_missing": True}


class Watching:
    """A real watcher stepping on its own thread for the length of a test."""

    def __init__(self, roots: list[Path]):
        self.watcher = Watcher([str(root) for root in roots])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.watcher.step(0.02)

    def root(self, i: int) -> RootWatch:
        return self.watcher.roots[i]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.watcher.close()


@pytest.fixture
def watched(tmp_path) -> Iterator[tuple[Path, Path, Watching]]:
    dell, hp = tmp_path / "dell" / "media", tmp_path / "hp" / "media"
    write(dell / "album" / "a.jpg", "a")
    hp.mkdir(parents=True)
    sync(dell, hp, delete_missing=True)
    sync(hp, dell, delete_missing=True)
    watching = Watching([dell, hp])
    for root in (dell, hp):
        assert fence(str(root), timeout=10)  # the watcher is up: its epoch's first records are logged
    sync(dell, hp, delete_missing=True)  # full runs record where both logs stand
    sync(hp, dell, delete_missing=True)
    yield dell, hp, watching
    watching.close()


def waiting_on(root: Path) -> bool:
    """Something in `root`'s change log not yet carried away from it (what the watcher and follow report)."""
    now = tip(str(root))
    assert now is not None
    done = consumed(str(root), now.epoch)
    return done is None or done < now.seq


def test_a_runs_own_writes_leave_nothing_waiting_but_a_later_edit_of_the_same_file_waits(watched):
    dell, hp, watching = watched
    assert not waiting_on(dell) and not waiting_on(hp)
    write(dell / "album" / "new.jpg", "new photo")
    write(dell / "album" / "a.jpg", "edited on the dell")
    os.chmod(dell / "album", 0o750)
    assert fence(str(dell), timeout=10)
    before = tip(str(hp))
    report, plan = sync(dell, hp, **CHANGES)
    assert sorted(op.path for op in plan.ops) == [b"album", b"album/a.jpg", b"album/new.jpg"], plan.ops
    assert fence(str(hp), timeout=10)
    assert tip(str(hp)) > before  # the copies are in the hp's log...
    assert not waiting_on(hp)  # ...as echoes: nothing for hp -> dell to carry
    assert watching.root(1).pending_since() is None
    answered, _, waiting = read_tip(str(hp))
    assert answered and not waiting  # `ha-sync follow` launches nothing for them

    write(hp / "album" / "new.jpg", "edited on the hp after the copy")  # the same file, by someone else
    assert fence(str(hp), timeout=10)
    report, plan = sync(dell, hp, **CHANGES)  # a run that writes nothing still looks: this one is no echo
    assert plan.ops == [] and report.clean
    assert waiting_on(hp) and watching.root(1).pending_since() is not None
    assert read_tip(str(hp))[2]
    report, plan = sync(hp, dell, **CHANGES)
    assert [op.path for op in plan.ops] == [b"album/new.jpg"]
    assert (dell / "album" / "new.jpg").read_text() == "edited on the hp after the copy"
    assert fence(str(dell), timeout=10)
    assert not waiting_on(hp) and not waiting_on(dell)  # carried, and its copy on the dell an echo in turn


def test_a_folder_the_run_made_is_no_echo_it_cannot_vouch_for(watched):
    dell, hp, _ = watched
    write(dell / "trip" / "x.jpg", "x")
    assert fence(str(dell), timeout=10)
    sync(dell, hp, **CHANGES)
    assert (hp / "trip" / "x.jpg").read_text() == "x"
    assert fence(str(hp), timeout=10)
    assert waiting_on(hp)  # a folder made is a rescan record: hp -> dell goes ahead, and finds nothing
    _, plan = sync(hp, dell, **CHANGES)
    assert plan.ops == [] and not waiting_on(hp)


def test_a_fence_returns_once_the_watcher_has_logged_what_came_before_and_alone_gives_up(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    watching = Watching([root])
    try:
        assert fence(str(root), timeout=10)
        write(root / "f.txt", "x")
        assert fence(str(root), timeout=10)
        log = b"".join(p.read_bytes() for p in sorted((root / ".hasync" / "changes").iterdir()))
        assert b" p f.txt\n" in log
    finally:
        watching.close()
    assert not fence(str(root), timeout=0.05)  # no watcher: it gives up, and leaves no fence behind
    assert not [p for p in (root / ".hasync").iterdir() if p.name.startswith(FENCE_PREFIX)]
