"""The change feed's trigger in Dagster: a sensor that launches a pair's job in changes scope when a server's
change-log tip has moved.  It reads the tips from the audit database (feed_tips, published by `ha-sync watch
--server`), never from a share: the daemon mounts none, so a dead server cannot hang it, nor every sensor and
schedule with it.  One run key per (server, pair, tip); a pair with a run queued or under way gets no second
one (its tip is looked at again on the next tick, when the pair is free)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg

from ..audit import AuditStore, AuditUnavailable, DsnError
from ..pairs import Registry
from .deployment import HaSyncDeployment
from .ops import PAIR_TAG, SCOPE_TAG

DIRECTION_OF = {"dell": "dell_to_hp", "hp": "hp_to_dell"}  # a change on a server travels away from it
INTERVAL_SECONDS = 5
_PENDING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def pending_pairs(instance: dg.DagsterInstance) -> set[str]:
    """Pairs with a run that has not ended (queued included)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=_PENDING), limit=200)
    return {run.tags[PAIR_TAG] for run in runs if PAIR_TAG in run.tags}


def build_change_feed_sensor(registry: Registry, jobs: list[dg.JobDefinition]) -> dg.SensorDefinition:
    known = {pair.name for pair in registry.pairs}

    @dg.sensor(
        name="ha_sync_change_feed",
        jobs=jobs,
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs a pair's job in changes scope when a server's change log (ha-sync watch) has moved; "
        "reads the tips from the audit database, never a share. The schedules' full runs stay the safety net.",
    )
    def change_feed(
        context: dg.SensorEvaluationContext, ha_sync: HaSyncDeployment
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        settings = ha_sync.settings()
        try:
            store = AuditStore(settings.db_dsn, settings.db_timeout)
            try:
                tips = store.tips()
            finally:
                store.dispose()
        except (AuditUnavailable, DsnError) as exc:
            yield dg.SkipReason(f"cannot read the change-feed tips: {exc}")
            return
        seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
        busy = pending_pairs(context.instance)
        launched = []
        for (server, pair), (epoch, seq) in sorted(tips.items()):
            key = f"{server}/{pair}"
            if pair not in known or server not in DIRECTION_OF or seen.get(key) == [epoch, seq]:
                continue
            if key not in seen:  # first sight: what came before is the schedules' to carry
                seen[key] = [epoch, seq]
                continue
            if pair in busy:
                continue  # not queued behind a pending run of the same pair: next tick
            busy.add(pair)
            seen[key] = [epoch, seq]
            job = f"{pair}_{DIRECTION_OF[server]}"
            launched.append(job)
            yield dg.RunRequest(
                run_key=f"{key}:{epoch}:{seq}",
                job_name=job,
                run_config={"ops": {"acquire_lease": {"config": {"scope": "changes"}}}},
                tags={SCOPE_TAG: "changes"},
            )
        context.update_cursor(json.dumps(seen))
        if not launched:
            yield dg.SkipReason("no change-log tip moved (or its pair has a run under way)")

    return change_feed
