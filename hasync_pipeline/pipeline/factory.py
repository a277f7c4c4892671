"""Everything Dagster shows, built from the pair registry: 12 jobs (pair x direction), their schedules,
the 12 folders as observable assets, one asset check per pair.

Backfills: every job is partitioned by 15-minute windows aligned to its own cron, so the partition view
is a per-window sync-health timeline and a backfill re-runs missed or failed windows.  A run always syncs
the *current* state (a window is a slot, not a snapshot), so a window that a later successful run already
covered ends at once, skipped as "superseded" (ops.superseded_by): a backfill over N windows does one sync,
not N.  The partitions start at `partitions_start` (a fixed day, so every process that loads the code sees the
same set: ~96 windows a day per job, which Dagster lists lazily).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import dagster as dg

from ..engine.fingerprint import fingerprint
from ..engine.liveness import Deadlines, Side, SideStopped
from ..engine.session import walk_pair
from ..pairs import DIRECTIONS, SERVERS, Pair, Registry, sides
from ..settings import BY_NAME, SettingError, deployment
from .deployment import HaSyncDeployment
from .lag_check import build_lag_check
from .ops import (
    DIRECTION_TAG,
    PAIR_TAG,
    acquire_lease,
    apply_batch_op,
    cleanup,
    flush_opslog,
    folder_key,
    plan,
    walk,
)

CRONS = {"dell_to_hp": "*/15 * * * *", "hp_to_dell": "7,22,37,52 * * * *"}
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_PARTITIONS_START = "2026-12-01"  # the first release: every process agrees on it


@dg.graph(description="One sync of one folder pair in one direction.")
def sync_graph():
    batches, planned = plan(walked=walk(started=acquire_lease()))
    applied = batches.map(lambda batch: apply_batch_op(batch=batch, planned=planned)).collect()
    cleanup(flushed=flush_opslog(planned=planned, batches=applied))


def partitions_start(setting: str) -> str:
    """The first window: the `partitions_start` day, else DEFAULT_PARTITIONS_START.  Never "now minus some
    days": the daemon, the webserver and each run pod load the code at different times, and their partition
    sets would differ (a run's partition unknown to the process that checks it)."""
    try:
        day = datetime.strptime(setting or DEFAULT_PARTITIONS_START, "%Y-%m-%d")
    except ValueError:
        raise SettingError(f"{BY_NAME['partitions_start'].env}: {setting!r} is not a day like 2026-12-01") from None
    return day.strftime("%Y-%m-%d-00:00")


def partitions_for(direction: str, start: str) -> dg.TimeWindowPartitionsDefinition:
    return dg.TimeWindowPartitionsDefinition(
        start=start, fmt=PARTITION_FORMAT, cron_schedule=CRONS[direction], timezone="UTC"
    )


def job_name(pair: str, direction: str) -> str:
    return f"{pair}_{direction}"


def build_sync_job(registry: Registry, pair: Pair, direction: str) -> dg.JobDefinition:
    settings = registry.settings_for(pair.name)
    src, dest = pair.endpoints(direction, settings)
    return sync_graph.to_job(
        name=job_name(pair.name, direction),
        description=f"Sync {pair.name} ({pair.description}) {direction.replace('_', ' ')}: {src} -> {dest}. "
        f"Dry-run until run config dry_run is turned off.",
        tags={PAIR_TAG: pair.name, DIRECTION_TAG: direction},
        executor_def=dg.in_process_executor,
        partitions_def=partitions_for(direction, partitions_start(deployment().partitions_start)),
    )


def build_schedule(job: dg.JobDefinition, running: bool = True) -> dg.ScheduleDefinition:
    status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
    schedule = dg.build_schedule_from_partitioned_job(job, name=f"{job.name}_schedule", default_status=status)
    assert isinstance(schedule, dg.ScheduleDefinition)  # a job's (not an asset selection's)
    return schedule


def folder_specs(registry: Registry, pair: Pair) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            folder_key(side, pair.name),
            group_name="folders",
            description=f"{pair.description}: the {side.upper()} copy ({SERVERS[side]}:/data/{pair.name})",
            metadata={
                "path": pair.folder(side, registry.settings_for(pair.name)),
                "server": SERVERS[side],
                "pair": pair.name,
            },
            kinds={"nfs"},
            # every sync run into this folder materializes it; a pair without a success for this long is stale
            freshness_policy=freshness_policy(deployment().freshness_intervals),
        )
        for side in ("dell", "hp")
    ]


def freshness_policy(intervals: int) -> dg.FreshnessPolicy:
    """Stale after `intervals` 15-minute intervals without a sync (freshness_intervals, as the freshness
    sensor's alert), a warning one interval before, at most two in (none when one interval is the limit:
    Dagster wants the warning strictly before the failure)."""
    fail = timedelta(minutes=15 * intervals)
    warn = timedelta(minutes=15 * min(2, intervals - 1))
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn if warn else None)


def build_sides_agree_check(registry: Registry, pair: Pair) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=folder_key("dell", pair.name),
        name="sides_agree",
        description=f"Walks both copies of {pair.name} and passes when they hold the same files "
        "(paths, sizes, mtimes). Every sync run also reports it.",
    )
    def sides_agree(ha_sync: HaSyncDeployment) -> dg.AssetCheckResult:
        settings = registry.settings_for(pair.name, environ=ha_sync.environ())  # the pair's excludes apply
        folders = (pair.folder("dell", settings), pair.folder("hp", settings))
        opts = dataclasses.replace(settings.sync_options(), dry_run=True)  # only reads: nothing need be writable
        deadlines = Deadlines(
            [Side.of(side, folder) for side, folder in zip(("dell", "hp"), folders, strict=True)], opts.stall_timeout
        )
        try:
            dell, hp = walk_pair(*folders, opts, deadlines)
        except SideStopped as exc:
            raise dg.Failure(description=str(exc)) from None
        fp_dell, fp_hp = fingerprint(dell), fingerprint(hp)
        return dg.AssetCheckResult(
            passed=fp_dell == fp_hp,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "dell_files": dell.files,
                "hp_files": hp.files,
                "dell_fingerprint": fp_dell,
                "hp_fingerprint": fp_hp,
            },
        )

    return sides_agree


def build_all(registry: Registry) -> tuple[list, list, list, list]:
    scheduled = set(deployment().scheduled_pairs) or {pair.name for pair in registry.pairs}
    jobs, schedules = [], []
    for pair in registry.pairs:
        for direction in DIRECTIONS:
            job = build_sync_job(registry, pair, direction)
            jobs.append(job)
            schedules.append(build_schedule(job, running=pair.name in scheduled))
    assets = [spec for pair in registry.pairs for spec in folder_specs(registry, pair)]
    checks = [build_sides_agree_check(registry, pair) for pair in registry.pairs]
    checks += [build_lag_check(pair) for pair in registry.pairs]
    return jobs, schedules, assets, checks


__all__ = ["build_all", "CRONS", "job_name", "sides"]
