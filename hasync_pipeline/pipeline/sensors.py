"""Sensors: an alert when a sync run fails, and an alert when a pair has gone quiet (the classic failure of
cron-driven sync: it fails silently for days)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from ..audit import AuditStore, AuditUnavailable, DsnError
from ..pairs import Registry
from .alerts import Alerter
from .deployment import HaSyncDeployment
from .ops import DIRECTION_TAG, NOT_ANSWERING_TAG, PAIR_TAG

SCHEDULE_INTERVAL = timedelta(minutes=15)


def failure_text(run: dg.DagsterRun, failures: list[dg.DagsterEvent], fallback: str, dagster_url: str) -> str:
    """What failed, said so a person can act: the step, its error, and where to look."""
    lines = [
        f"Run {run.run_id} of {run.job_name} ({run.tags.get(PAIR_TAG, '?')}, {run.tags.get(DIRECTION_TAG, '?')}) "
        "failed."
    ]
    for event in failures[:5]:
        error = event.step_failure_data.error if event.step_failure_data else None
        message = error.message.strip() if error is not None else (event.message or "")
        lines.append(f"Step {event.step_key}: {message}")
    if not failures:
        lines.append(fallback)
    if dagster_url:
        lines.append(f"{dagster_url.rstrip('/')}/runs/{run.run_id}")
    return "\n".join(lines)


def build_failure_sensor(jobs: list[dg.JobDefinition]) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="ha_sync_failure_alert",
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts (webhook / e-mail) when a sync run fails, naming the step and its error; at most "
        "one alert per pair per hour.",
    )
    def failure_alert(context: dg.RunFailureSensorContext, ha_sync: HaSyncDeployment):
        run = context.dagster_run
        pair = run.tags.get(PAIR_TAG, run.job_name)
        settings = ha_sync.settings()
        down = run.tags.get(NOT_ANSWERING_TAG)  # set by the step that found a server dead (ops._report_end)
        subject = f"HA Sync: {run.job_name} failed" + (f": {down.replace(',', ' and ')} not answering" if down else "")
        failures = list(context.get_step_failure_events())
        text = failure_text(run, failures, context.failure_event.message or "", settings.dagster_url)
        sent = Alerter.from_settings(settings).send(pair, subject, text)
        context.log.info(f"{subject}: alert {'sent' if sent else 'not sent (rate-limited or no transport)'}")

    return failure_alert


def stale_pairs(
    registry: Registry,
    store: AuditStore,
    now: datetime,
    intervals: int,
    watched_since: dict[str, float] | None = None,
    scheduled: set[str] | None = None,
) -> list[str]:
    """Pairs whose last successful sync is older than `intervals` schedule periods.  A pair that has had a
    real sync is judged on real syncs (a dry-run does not keep it fresh); one still in dry-run mode on any.
    Only scheduled pairs are judged, and none before `intervals` periods have passed since it was first
    watched (`watched_since`: a fresh deployment, or a pair just added, is not 'never synced')."""
    window = intervals * SCHEDULE_INTERVAL
    limit = now.replace(tzinfo=None) - window
    last = store.last_successes()
    out = []
    for pair in registry.pairs:
        if scheduled is not None and pair.name not in scheduled:
            continue
        since = (watched_since or {}).get(pair.name)
        if since is not None and now.timestamp() - since < window.total_seconds():
            continue
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
        description="Alerts when a scheduled pair has had no successful sync for freshness_intervals "
        "(default 4) schedule intervals of 15 minutes; not before that long after the sensor first saw it.",
    )
    def freshness(context: dg.SensorEvaluationContext, ha_sync: HaSyncDeployment):
        settings = ha_sync.settings()
        intervals = settings.freshness_intervals
        now = datetime.now(UTC)
        watched: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
        for pair in registry.pairs:
            watched.setdefault(pair.name, now.timestamp())
        context.update_cursor(json.dumps(watched))  # when each pair was first watched: the grace period
        scheduled = set(settings.scheduled_pairs) or {pair.name for pair in registry.pairs}
        alerter = Alerter.from_settings(settings)
        try:
            store = AuditStore(settings.db_dsn, settings.db_timeout)
            stale = stale_pairs(registry, store, now, intervals, watched, scheduled)
            store.dispose()
        except (AuditUnavailable, DsnError) as exc:
            sent = alerter.send("audit-db", "HA Sync: audit database unavailable", str(exc))
            return dg.SkipReason(f"cannot judge freshness: {exc}" + ("; alert sent" if sent else ""))
        if not stale:
            return dg.SkipReason("every scheduled pair synced recently (or is still in its first interval)")
        alerted = [
            entry.split()[0]
            for entry in stale
            if alerter.send(
                f"stale:{entry.split()[0]}",
                f"HA Sync: {entry.split()[0]} has not synced",
                f"No successful sync for over {intervals} x 15 minutes: {entry}",
            )
        ]
        said = f"; alerted: {', '.join(alerted)}" if alerted else "; no alert sent (rate-limited or no transport)"
        return dg.SkipReason("stale: " + ", ".join(stale) + said)

    return freshness
