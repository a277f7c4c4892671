"""Runs in `changes` scope: only what the watchers' change logs name is looked at.  Real inotify on real folders
(feed/watcher.py), real runs; after each cycle a full dry-run of each direction must find nothing to do (no
drift from what full runs would have left) and no version may be lost."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hasync_pipeline.engine import incremental
from hasync_pipeline.feed.watcher import Watcher
from hasync_pipeline_tests.conftest import snapshot, sync, write
from hasync_pipeline_tests.test_two_way import T0, _everything, _mutate

pytestmark = pytest.mark.slow  # real watchers and many real runs each: the fast set stays under a minute
CHANGES = {"scope": "changes", "delete_missing": True}


def settle(watcher: Watcher) -> None:
    """Append every event already queued (the kernel queues them as the writes happen) to the change logs."""
    while watcher.step(0.01):
        pass


def to_hp(dell: Path, hp: Path, **opts):
    return sync(dell, hp, labels=("dell", "hp"), **opts)


def to_dell(dell: Path, hp: Path, **opts):
    return sync(hp, dell, labels=("hp", "dell"), **opts)


@contextlib.contextmanager
def stepping(watcher: Watcher) -> Iterator[None]:
    """The watcher steps on a thread meanwhile, as `ha-sync watch` does beside a run: the run's fence is
    answered and its own writes are logged as it makes them (engine/echo.py)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            watcher.step(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def cycle(dell: Path, hp: Path, watcher: Watcher, **opts):
    settle(watcher)
    with stepping(watcher):
        first = to_hp(dell, hp, **opts)
    settle(watcher)
    with stepping(watcher):
        return first, to_dell(dell, hp, **opts)


def no_drift(dell: Path, hp: Path) -> None:
    """A full run of each direction finds nothing to do: the changes runs left what full runs would have."""
    for run in (to_hp, to_dell):
        _, plan = run(dell, hp, dry_run=True, delete_missing=True)
        assert plan.ops == [], [(op.action, op.path) for op in plan.ops]


@pytest.fixture
def watched(pair):
    dell, hp = pair
    for i in range(6):
        write(dell / f"album{i % 2}" / f"p{i}.jpg", f"photo {i}", T0 + i)
    write(dell / "docs" / "deep" / "a.txt", "a", T0)
    to_hp(dell, hp, delete_missing=True)
    to_dell(dell, hp, delete_missing=True)
    watcher = Watcher([str(dell), str(hp)])
    yield dell, hp, watcher
    watcher.close()


def test_the_first_changes_run_walks_everything_and_says_why_then_only_what_changed(watched):
    dell, hp, watcher = watched
    (r1, _), _ = cycle(dell, hp, watcher, **CHANGES)
    assert any("a full walk" in n and "no position recorded" in n for n in r1.notes), r1.notes
    write(dell / "album0" / "new.jpg", "new photo")
    (r2, p2), (r3, p3) = cycle(dell, hp, watcher, **CHANGES)
    assert any(n.startswith("changes only:") for n in r2.notes), r2.notes
    assert [(op.action, op.path) for op in p2.ops] == [("copy", b"album0/new.jpg")]
    assert (hp / "album0" / "new.jpg").read_text() == "new photo" and p3.ops == []
    no_drift(dell, hp)


def test_each_kind_of_change_travels_in_changes_scope_both_ways(watched, tmp_path):
    dell, hp, watcher = watched
    cycle(dell, hp, watcher, **CHANGES)  # positions recorded
    write(dell / "docs" / "deep" / "a.txt", "edited on the dell", T0 + 50)
    os.rename(dell / "album1" / "p1.jpg", dell / "album1" / "renamed.jpg")
    os.remove(dell / "album0" / "p0.jpg")
    os.chmod(dell / "album0" / "p2.jpg", 0o600)
    write(hp / "from-hp" / "made.txt", "made on the hp")  # a new folder, on the other side
    write(tmp_path / "outside" / "trip" / "x.jpg", "x")
    os.rename(tmp_path / "outside" / "trip", dell / "trip")  # a folder moved in, its contents unseen
    shutil.rmtree(hp / "docs")  # a folder deleted on the hp... and its file edited on the dell: the edit wins
    cycle(dell, hp, watcher, **CHANGES)
    cycle(dell, hp, watcher, **CHANGES)
    assert (hp / "docs" / "deep" / "a.txt").read_text() == "edited on the dell"
    assert (dell / "from-hp" / "made.txt").read_text() == "made on the hp"
    assert (hp / "trip" / "x.jpg").read_text() == "x" and (hp / "album1" / "renamed.jpg").exists()
    assert not (hp / "album0" / "p0.jpg").exists() and (hp / "album0" / "p2.jpg").stat().st_mode & 0o777 == 0o600
    assert snapshot(dell) == snapshot(hp)
    no_drift(dell, hp)


def test_a_restarted_watcher_or_a_lost_change_log_means_a_full_walk(watched):
    dell, hp, watcher = watched
    cycle(dell, hp, watcher, **CHANGES)
    watcher.close()
    restarted = Watcher([str(dell), str(hp)])  # a new epoch: what happened meanwhile is unknown
    write(dell / "while-down.txt", "written while no watcher ran")
    try:
        (report, plan), _ = cycle(dell, hp, restarted, **CHANGES)
        assert any("new epoch" in n for n in report.notes), report.notes
        assert [op.path for op in plan.ops] == [b"while-down.txt"]  # found by the full walk
        shutil.rmtree(dell / ".hasync" / "changes")
        write(dell / "after-loss.txt", "x")
        report, plan = to_hp(dell, hp, **CHANGES)
        assert any("a full walk" in n for n in report.notes) and [op.path for op in plan.ops] == [b"after-loss.txt"]
    finally:
        restarted.close()


def test_a_run_that_did_not_end_clean_keeps_its_positions_so_the_next_one_looks_again(watched):
    dell, hp, watcher = watched
    cycle(dell, hp, watcher, **CHANGES)
    recorded = _positions(dell)
    os.mkfifo(dell / "album0" / "a-pipe")  # a FIFO: reported and skipped, so the run is not clean
    write(dell / "album0" / "p2.jpg", "edited", T0 + 500)
    settle(watcher)
    report, _ = to_hp(dell, hp, **CHANGES)
    assert any("special file" in e for e in report.errors) and _positions(dell) == recorded
    assert (hp / "album0" / "p2.jpg").read_text() == "edited"
    os.remove(dell / "album0" / "a-pipe")
    settle(watcher)
    report, _ = to_hp(dell, hp, **CHANGES)
    assert report.clean and _positions(dell) != recorded  # clean again: it moves on


def _positions(root: Path) -> dict:
    """Each direction's (source, destination) positions (the journal generation they go with left out)."""
    import json

    path = root / ".hasync" / incremental.POSITIONS
    data = json.loads(path.read_text()) if path.exists() else {}
    return {key: (entry["src"], entry["dest"]) for key, entry in data.items()}


@pytest.mark.parametrize("seed", range(1, 7))
def test_random_changes_through_changes_runs_only_never_drift_and_lose_nothing(pair, seed):
    rnd = random.Random(seed)
    dell, hp = pair
    for i in range(20):
        write(dell / f"d{i % 3}" / f"s{i % 2}" / f"f{i}.txt", f"v0 of f{i}", T0 + rnd.randint(0, 100))
    opts = {**CHANGES, "max_delete_percent": 100}
    to_hp(dell, hp, **opts)
    to_dell(dell, hp, **opts)
    watcher = Watcher([str(dell), str(hp)])
    try:
        cycle(dell, hp, watcher, **opts)  # positions recorded
        counter = 0
        for _ in range(6):
            for root in (dell, hp):
                for _ in range(rnd.randint(1, 5)):
                    counter += 1
                    _mutate(rnd, root, counter)
            before = _everything(dell) | _everything(hp)
            started = time.monotonic()
            runs = [*cycle(dell, hp, watcher, **opts), *cycle(dell, hp, watcher, **opts)]  # a conflict copy: 2nd
            walked = [n for report, _ in runs for n in report.notes if n.startswith("a full walk")]
            assert walked == [], walked
            assert before <= _everything(dell) | _everything(hp)  # nothing that existed is gone (at worst: trash)
            assert snapshot(dell) == snapshot(hp), time.monotonic() - started
            no_drift(dell, hp)
    finally:
        watcher.close()
