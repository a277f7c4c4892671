"""The change feed's trigger in Dagster: a sensor that launches a pair's job in changes scope when a server's
change-log tip has moved.  It reads the tips from the audit database (feed_tips, published by `ha-sync watch
--server`), never from a share: the daemon mounts none, so a dead server cannot hang it, nor every sensor and
schedule with it.  A tip whose watcher reports nothing pending launches nothing (a run's own writes on the
destination, engine/echo.py).  One run key per (server, pair, tip); a pair with a run queued or under way
gets no second one (its tip is looked at again on the next tick, when the pair is free).  It also reports
each copy's replication lag to its folder asset's `replication_lag` check (lag_check.py) as it changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from ..audit import AuditStore, AuditUnavailable, DsnError
from ..feed.lag import Lag
from ..pairs import Registry
from .deployment import HaSyncDeployment
from .lag_check import lag_evaluation, lag_passed
from .ops import PAIR_TAG, SCOPE_TAG

DIRECTION_OF = {"dell": "dell_to_hp", "hp": "hp_to_dell"}  # a change on a server travels away from it
INTERVAL_SECONDS = 3  # half of it, on average, is what a change waits before its run is asked for
LAG_CURSOR = "lag"  # in the cursor, next to each tip: what each copy's replication_lag check last said
LAG_REPORT_EVERY = 60.0  # seconds between two reports of a lag that goes on
_PENDING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def pending_pairs(instance: dg.DagsterInstance) -> set[str]:
    """Pairs with a run that has not ended (queued included)."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=_PENDING), limit=200)
    return {r.dagster_run.tags[PAIR_TAG] for r in records if PAIR_TAG in r.dagster_run.tags}


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
    def change_feed(context: dg.SensorEvaluationContext, ha_sync: HaSyncDeployment) -> dg.SensorResult:
        settings = ha_sync.settings()
        now = datetime.now(UTC)
        try:
            store = AuditStore(settings.db_dsn, settings.db_timeout)
            try:
                tips, lags = store.tips(), store.lags(now)
            finally:
                store.dispose()
        except (AuditUnavailable, DsnError) as exc:
            return dg.SensorResult(skip_reason=f"cannot read the change-feed tips: {exc}")
        seen: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        reported: dict[str, list] = seen.pop(LAG_CURSOR, {})
        busy = pending_pairs(context.instance)
        requests = []
        for (server, pair), (epoch, seq, pending_since) in sorted(tips.items()):
            key = f"{server}/{pair}"
            if pair not in known or server not in DIRECTION_OF or seen.get(key) == [epoch, seq]:
                continue
            if key not in seen or pending_since is None:
                # first sight: what came before is the schedules' to carry; nothing pending: every record up
                # to this tip is carried already, or an echo of the other direction's own writes (echo.py)
                seen[key] = [epoch, seq]
                continue
            if pair in busy:
                continue  # not queued behind a pending run of the same pair: next tick
            busy.add(pair)
            seen[key] = [epoch, seq]
            requests.append(
                dg.RunRequest(
                    run_key=f"{key}:{epoch}:{seq}",
                    job_name=f"{pair}_{DIRECTION_OF[server]}",
                    run_config={"ops": {"acquire_lease": {"config": {"scope": "changes"}}}},
                    tags={SCOPE_TAG: "changes"},
                )
            )
        events = []
        for lag in lags:
            key = f"{lag.server}/{lag.pair}"
            if lag.pair in known and lag.server in DIRECTION_OF and _worth_reporting(lag, reported.get(key), now):
                events.append(lag_evaluation(lag.server, lag.pair, lag))
                reported[key] = [lag_passed(lag), lag.pending_since is not None, now.timestamp()]
        seen[LAG_CURSOR] = reported
        return dg.SensorResult(
            run_requests=requests,
            asset_events=events,
            cursor=json.dumps(seen),
            skip_reason=None if requests else "no change-log tip moved (or its pair has a run under way)",
        )

    return change_feed


def _worth_reporting(lag: Lag, last: list | None, now: datetime) -> bool:
    """A copy's lag goes to its check when its state changed (passing, or something waiting), and at most once
    a LAG_REPORT_EVERY while something waits (a point a minute, not one every tick)."""
    if last is None or [lag_passed(lag), lag.pending_since is not None] != last[:2]:
        return True
    return lag.pending_since is not None and now.timestamp() - float(last[2]) >= LAG_REPORT_EVERY
