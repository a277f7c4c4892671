"""The change feed in Dagster: real watchers publish their tips to the audit database, the real sensor turns a
moved tip into a run request of that side's direction in changes scope, never a second one while the pair
has a run pending, and the run it asks for syncs the change (a real in-process run)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from hasync_pipeline.audit import AuditStore, FeedTip
from hasync_pipeline.cli_watch import Publisher
from hasync_pipeline.definitions import defs, ha_sync
from hasync_pipeline.engine.fingerprint import fingerprint
from hasync_pipeline.engine.paths import ExcludeMatcher
from hasync_pipeline.engine.walk import walk_tree
from hasync_pipeline.feed.watcher import Watcher
from hasync_pipeline.pipeline.ops import PAIR_TAG, SCOPE_TAG
from hasync_pipeline_tests.conftest import write
from hasync_pipeline_tests.test_pipeline import REAL, roots  # noqa: F401 - roots: a fixture

LAG_EVENTS: list[dg.AssetCheckEvaluation] = []  # what the last tick reported to the replication_lag checks


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    sensor = defs.resolve_sensor_def("ha_sync_change_feed")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"ha_sync": ha_sync})
    result = sensor.evaluate_tick(context)
    LAG_EVENTS[:] = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    return list(result.run_requests or []), result.cursor


def lag_reports() -> dict[str, tuple[bool, bool]]:
    """By server: (passed, something waits) as the last tick reported them."""
    return {e.asset_key.path[0]: (e.passed, "oldest waiting change" in e.metadata) for e in LAG_EVENTS}


@pytest.mark.slow  # three real Dagster runs
def test_a_moved_tip_launches_that_side_s_direction_in_changes_scope_once_the_pair_is_free(roots):  # noqa: F811
    dell, hp = roots
    write(dell / "media" / "old.mkv", "old")
    instance = dg.DagsterInstance.ephemeral()
    for job in ("media_dell_to_hp", "media_hp_to_dell"):
        assert defs.get_job_def(job).execute_in_process(run_config=REAL, instance=instance).success
    watchers = {side: Watcher([str(root / "media")]) for side, root in (("dell", dell), ("hp", hp))}
    publishers = {side: Publisher(side, [str(root / "media")]) for side, root in (("dell", dell), ("hp", hp))}
    try:

        def settle() -> None:
            for side, watcher in watchers.items():
                while watcher.step(0.01):
                    pass
                publishers[side].publish(watcher, force=True)

        settle()
        requests, cursor = tick(instance, None)
        assert requests == []  # the first sight of a tip only records it
        # the watchers just started: what changed while none ran waits for a run (of their epoch)
        assert lag_reports() == {"dell": (True, True), "hp": (True, True)}
        write(dell / "media" / "new.mkv", "frames")
        settle()
        [request], cursor = tick(instance, cursor)
        assert request.job_name == "media_dell_to_hp" and request.tags[SCOPE_TAG] == "changes"
        assert request.run_config["ops"]["acquire_lease"]["config"]["scope"] == "changes"
        assert tick(instance, cursor)[0] == []  # the same tip: no second request
        assert LAG_EVENTS == []  # the same lag state: not reported again within the minute
        pending = instance.create_run_for_job(
            defs.get_job_def("media_dell_to_hp"), tags={PAIR_TAG: "media"}, status=dg.DagsterRunStatus.NOT_STARTED
        )
        write(hp / "media" / "from-hp.txt", "hp")
        settle()
        requests, cursor = tick(instance, cursor)
        assert requests == []  # the pair has a run pending: nothing queued behind it
        instance.report_run_canceled(pending)
        [later], cursor = tick(instance, cursor)
        assert later.job_name == "media_hp_to_dell"
        config = {"ops": {"acquire_lease": {"config": {"dry_run": False, "scope": "changes"}}}}
        result = defs.get_job_def("media_dell_to_hp").execute_in_process(
            run_config=config, instance=instance, tags=request.tags
        )
        assert result.success and (hp / "media" / "new.mkv").read_text() == "frames"
        [made] = result.asset_materializations_for_node("flush_opslog")  # its touched folders listed, not a walk
        walked = walk_tree(str(hp / "media"), ExcludeMatcher(()), 4)
        assert made.tags["dagster/data_version"] == fingerprint(walked) and made.metadata["files"].value == 3
        settle()
        tick(instance, cursor)
        assert lag_reports()["dell"] == (True, False)  # carried: nothing waits on the dell any more
        assert instance.get_run_by_id(result.run_id).tags[SCOPE_TAG] == "changes"
    finally:
        for watcher in watchers.values():
            watcher.close()
        for publisher in publishers.values():
            publisher.close()


def test_a_moved_tip_with_nothing_pending_launches_nothing(roots):  # noqa: F811
    """A tip that moved only by the other direction's own writes (engine/echo.py: its watcher then reports
    nothing pending) is recorded as seen; one with something pending launches its direction."""
    instance, store, now = dg.DagsterInstance.ephemeral(), AuditStore(), datetime.now(UTC)
    try:
        store.publish_tips("hp", {"media": FeedTip("e" * 16, 3, None)}, now)
        _, cursor = tick(instance, None)  # first sight
        store.publish_tips("hp", {"media": FeedTip("e" * 16, 9, None)}, now)  # moved, nothing pending
        requests, cursor = tick(instance, cursor)
        assert requests == []
        store.publish_tips("hp", {"media": FeedTip("e" * 16, 9, now)}, now)  # the same tip, now waiting
        assert tick(instance, cursor)[0] == []  # seen already: the schedules' full runs remain for it
        store.publish_tips("hp", {"media": FeedTip("e" * 16, 12, now)}, now)
        [request], _ = tick(instance, cursor)
        assert request.job_name == "media_hp_to_dell" and request.run_key == "hp/media:" + "e" * 16 + ":12"
    finally:
        store.dispose()
