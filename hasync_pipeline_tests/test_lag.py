"""The replication lag: how long the oldest change on a server has waited for the other one.  A real watcher on
real folders, real runs (full, dry-run, changes scope), its tips published to a real database (SQLite and
MariaDB), read back as the dashboard and the folder assets' check read them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from starlette.testclient import TestClient

from hasync_pipeline.audit import AuditStore, FeedTip
from hasync_pipeline.cli_watch import Publisher
from hasync_pipeline.dashboard.app import create_app
from hasync_pipeline.engine.changelog import Position
from hasync_pipeline.feed.lag import SILENT_AFTER
from hasync_pipeline.feed.watcher import Waiting, Watcher
from hasync_pipeline_tests.conftest import sync, write


def settle(watcher: Watcher) -> None:
    while watcher.step(0.01):
        pass


def test_a_change_waits_from_when_it_was_seen_until_a_clean_run_carries_it(tmp_path, db_dsn, monkeypatch):
    monkeypatch.setenv("HA_SYNC_DB_DSN", db_dsn)
    dell, hp = tmp_path / "dell" / "media", tmp_path / "hp" / "media"
    write(dell / "a.txt", "a")
    hp.mkdir(parents=True)
    sync(dell, hp, delete_missing=True)
    sync(hp, dell, delete_missing=True)
    watcher = Watcher([str(dell), str(hp)])
    publishers = {"dell": Publisher("dell", [str(dell)]), "hp": Publisher("hp", [str(hp)])}
    store = AuditStore(db_dsn)
    on_dell, on_hp = watcher.roots
    try:
        # a watcher that just started cannot know what changed while none ran: that waits for a run
        assert on_dell.pending_since() is not None and on_hp.pending_since() is not None
        sync(dell, hp, delete_missing=True)  # a full run records both logs' tips from before its walk
        assert on_dell.pending_since() is None  # the dell's changes are on the hp
        assert on_hp.pending_since() is not None  # the hp's travel with hp -> dell, which has not run
        sync(hp, dell, delete_missing=True)
        assert on_hp.pending_since() is None

        before = time.time()
        write(dell / "new.txt", "new")
        settle(watcher)
        seen = on_dell.pending_since()
        assert seen is not None and before <= seen <= time.time()
        sync(dell, hp, dry_run=True)  # a dry run carries nothing
        assert on_dell.pending_since() == seen
        for publisher in publishers.values():
            publisher.publish(watcher, force=True)
        now = datetime.now(UTC)
        lags = {lag.server: lag for lag in store.lags(now)}
        assert lags["dell"].pair == "media" and lags["dell"].pending_since is not None
        assert abs(lags["dell"].pending_since.timestamp() - seen) < 0.01  # the time the change was seen
        assert lags["dell"].seconds == (now - lags["dell"].pending_since).total_seconds()
        assert lags["hp"].pending_since is None and lags["hp"].seconds == 0 and lags["hp"].ok

        api = TestClient(create_app(db_dsn)).get("/api/pairs").json()
        feed = {f["server"]: f for f in next(p for p in api["pairs"] if p["pair"] == "media")["feed"]}
        assert feed["dell"]["pending_since"] is not None and feed["hp"]["pending_since"] is None
        assert "waited" in feed["dell"]["text"] and not feed["dell"]["silent"]

        report, _ = sync(dell, hp, scope="changes", delete_missing=True)
        assert any(n.startswith("changes only:") for n in report.notes), report.notes
        assert (hp / "new.txt").read_text() == "new" and on_dell.pending_since() is None
        publishers["dell"].publish(watcher, force=True)
        assert {lag.server: lag.pending_since for lag in store.lags(datetime.now(UTC))}["dell"] is None
    finally:
        watcher.close()
        store.dispose()
        for publisher in publishers.values():
            publisher.close()


def test_a_watcher_that_stops_publishing_shows_as_silent_with_its_lag_unknown(tmp_path):
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    now = datetime.now(UTC)
    heard = now - timedelta(seconds=SILENT_AFTER + 1)
    store.publish_tips("hp", {"photos": FeedTip("e" * 16, 7, None)}, heard)
    store.publish_tips("dell", {"photos": FeedTip("f" * 16, 9, now - timedelta(seconds=30))}, now)
    lags = {lag.server: lag for lag in store.lags(now)}
    store.dispose()
    assert lags["hp"].silent and lags["hp"].seconds is None and not lags["hp"].ok
    assert "silent since" in lags["hp"].describe()
    assert not lags["dell"].silent and round(lags["dell"].seconds or 0) == 30 and lags["dell"].ok


def test_a_long_backlog_is_kept_bounded_and_its_lag_can_only_come_out_too_long():
    waiting = Waiting(Position("e", 0))
    t0 = waiting.batches[0][1]
    for seq in range(1, 20_001):
        waiting.add(Position("e", seq), t0 + seq)  # the record `seq` was seen `seq` s after the start
    assert len(waiting.batches) <= Waiting.MAX_BATCHES
    for carried in (0, 1, 777, 12_345, 19_999):
        told = waiting.oldest_after(carried)
        assert told is not None and told <= t0 + carried + 1  # never later than the oldest waiting change
        assert told > t0 + carried - 40  # and not far off
    assert waiting.oldest_after(20_000) is None
    waiting.add(Position("other epoch", 3), 5.0)
    assert waiting.batches == [(3, 5.0)]


def test_the_folder_assets_check_asks_the_database_and_warns_of_a_silent_watcher(tmp_path, monkeypatch):
    import dagster as dg

    from hasync_pipeline.definitions import ha_sync
    from hasync_pipeline.pairs import load_registry
    from hasync_pipeline.pipeline.lag_check import build_lag_check

    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    monkeypatch.setenv("HA_SYNC_DB_DSN", dsn)
    store = AuditStore(dsn)
    store.publish_tips("hp", {"media": FeedTip("e" * 16, 7, None)}, datetime.now(UTC) - timedelta(hours=1))
    store.dispose()
    check = build_lag_check(next(p for p in load_registry().pairs if p.name == "media"))
    result = dg.materialize([check], resources={"ha_sync": ha_sync}, selection=dg.AssetSelection.all_asset_checks())
    told = {e.asset_key.path[0]: e for e in result.get_asset_check_evaluations()}
    assert not told["hp"].passed and told["hp"].severity == dg.AssetCheckSeverity.WARN
    assert "silent since" in told["hp"].metadata["status"].value
    assert told["dell"].passed and "no watcher publishes" in told["dell"].metadata["change feed"].value
