"""Sensors: an alert when a sync run fails, and an alert when a pair has gone quiet (the classic failure of
cron-driven sync: it fails silently for days)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ..audit import AuditStore, AuditUnavailable, DsnError
from ..pairs import Registry
from ..settings import deployment
from .alerts import Alerter
from .ops import DIRECTION_TAG, PAIR_TAG

SCHEDULE_INTERVAL = timedelta(minutes=15)


def build_failure_sensor(jobs: list[dg.JobDefinition]) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="ha_sync_failure_alert",
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts (webhook / e-mail) when a sync run fails; at most one alert per pair per hour.",
    )
    def failure_alert(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        pair = run.tags.get(PAIR_TAG, run.job_name)
        subject = f"HA Sync: {run.job_name} failed"
        text = (
            f"Run {run.run_id} of {run.job_name} ({pair}, {run.tags.get(DIRECTION_TAG, '?')}) failed:\n"
            f"{context.failure_event.message or ''}"
        )
        sent = Alerter.from_settings(deployment()).send(pair, subject, text)
        context.log.info(f"{subject}: alert {'sent' if sent else 'not sent (rate-limited or no transport)'}")

    return failure_alert


def stale_pairs(registry: Registry, store: AuditStore, now: datetime, intervals: int) -> list[str]:
    """Pairs whose last successful sync is older than `intervals` schedule periods.  A pair that has had a
    real sync is judged on real syncs (a dry-run does not keep it fresh); one still in dry-run mode on any."""
    limit = now.replace(tzinfo=None) - intervals * SCHEDULE_INTERVAL
    last = store.last_successes()
    out = []
    for pair in registry.pairs:
        seen = last.get(pair.name, {})
        when = seen.get("real") or seen.get("any")
        if when is None or when < limit:
            out.append(
                f"{pair.name} (last success: {when.isoformat(timespec='minutes') + ' UTC' if when else 'never'})"
            )
    return out


def build_freshness_sensor(registry: Registry) -> dg.SensorDefinition:
    @dg.sensor(
        name="ha_sync_freshness",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts when a pair has had no successful sync for freshness_intervals "
        "(default 4) schedule intervals of 15 minutes.",
    )
    def freshness(context: dg.SensorEvaluationContext):
        settings = deployment()
        intervals = settings.freshness_intervals
        alerter = Alerter.from_settings(settings)
        try:
            store = AuditStore(settings.db_dsn, settings.db_timeout)
            stale = stale_pairs(registry, store, datetime.now(UTC), intervals)
            store.dispose()
        except (AuditUnavailable, DsnError) as exc:
            alerter.send("audit-db", "HA Sync: audit database unavailable", str(exc))
            return dg.SkipReason(f"cannot judge freshness: {exc}")
        if not stale:
            return dg.SkipReason("every pair synced recently")
        for entry in stale:
            alerter.send(
                f"stale:{entry.split()[0]}",
                f"HA Sync: {entry.split()[0]} has not synced",
                f"No successful sync for over {intervals} x 15 minutes: {entry}",
            )
        return dg.SkipReason("stale: " + ", ".join(stale))

    return freshness
