"""`GET /metrics`: the audit trail in the Prometheus text format, for Prometheus and Grafana (the seed's
"future /metrics endpoint").  Made with the official prometheus_client (a collector built at each scrape,
not hand-formatted text), read from the audit database with the dashboard's own queries, never from a
share.  Labels are the pair, the direction, the server, a status or a reason: never a path, a message or a
secret.  A database that does not answer is `hasync_audit_db_up 0` (and nothing else), not an error page: the
alert on it is then Prometheus's to raise.

Cost: a grouped scan of sync_iterations (never sync_operations) and two "last per pair and direction"
lookups; bench/bench_dashboard.py times it over 50k iterations and 1M operations on MariaDB (README).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..audit import AuditStore, AuditUnavailable
from ..audit.schema import ITERATION_STATUS
from ..audit.store import read_lags
from ..engine.outcome import failure_reason
from . import queries

FILE_KINDS = ("created", "updated", "deleted", "failed", "conflicted")
DIRECTION_LABELS = ["pair", "direction"]


def _epoch(value: datetime | None) -> float:
    """A naive UTC datetime (as the audit database stores them) as seconds since the epoch."""
    return value.replace(tzinfo=UTC).timestamp() if value is not None else 0.0


def audit_metrics(conn: Connection, now: datetime) -> Iterator[Metric]:
    """Every series, from one connection."""
    totals = queries.totals_by_direction(conn)
    runs = CounterMetricFamily(
        "hasync_runs", "Real sync runs recorded, by their status", labels=[*DIRECTION_LABELS, "status"]
    )
    files = CounterMetricFamily("hasync_files", "Files a real run changed, by kind", labels=[*DIRECTION_LABELS, "kind"])
    transferred = CounterMetricFamily("hasync_transferred_bytes", "Bytes real runs copied", labels=DIRECTION_LABELS)
    refused = CounterMetricFamily(
        "hasync_failed_runs", "Real runs that ended failed, by reason", labels=[*DIRECTION_LABELS, "reason"]
    )
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    sent: dict[tuple[str, str], int] = {}
    for row in totals:
        key = (row.sync_pair, row.direction)
        runs.add_metric([*key, row.status], row.runs)
        for kind in FILE_KINDS:
            kinds.setdefault(key, dict.fromkeys(FILE_KINDS, 0))[kind] += int(getattr(row, kind))
        sent[key] = sent.get(key, 0) + int(row.bytes)
    for key, counts in sorted(kinds.items()):
        for kind, count in counts.items():
            files.add_metric([*key, kind], count)
        transferred.add_metric(list(key), sent[key])
    by_reason: dict[tuple[str, str, str], int] = {}
    for row in queries.failed_messages(conn):
        label = (row.sync_pair, row.direction, failure_reason(row.error_message or ""))
        by_reason[label] = by_reason.get(label, 0) + int(row.runs)
    for label, count in sorted(by_reason.items()):
        refused.add_metric(list(label), count)
    yield from (runs, files, transferred, refused)

    status = GaugeMetricFamily(
        "hasync_last_run_status",
        "1 for the last real run's status, 0 for the others",
        labels=[*DIRECTION_LABELS, "status"],
    )
    reason = GaugeMetricFamily(
        "hasync_last_run_failure_reason",
        "1 for the reason the last real run failed (none when it did not)",
        labels=[*DIRECTION_LABELS, "reason"],
    )
    duration = GaugeMetricFamily(
        "hasync_last_run_duration_seconds", "How long the last real run took", labels=DIRECTION_LABELS
    )
    ended = GaugeMetricFamily(
        "hasync_last_run_timestamp_seconds", "When the last real run started", labels=DIRECTION_LABELS
    )
    running = GaugeMetricFamily(
        "hasync_run_in_progress", "1 while a real run of this direction holds the pair's lease", labels=DIRECTION_LABELS
    )
    for row in queries.last_by_direction(conn):
        labels = [row.sync_pair, row.direction]
        for value in ITERATION_STATUS:
            status.add_metric([*labels, value], 1.0 if row.status == value else 0.0)
        if row.status == "failed":
            reason.add_metric([*labels, failure_reason(row.error_message or "")], 1.0)
        ended.add_metric(labels, _epoch(row.started_at))
        running.add_metric(labels, 1.0 if row.status == "running" else 0.0)
        if row.ended_at is not None:
            duration.add_metric(labels, max(0.0, _epoch(row.ended_at) - _epoch(row.started_at)))
    success = GaugeMetricFamily(
        "hasync_last_success_timestamp_seconds", "When the last successful real sync started", labels=DIRECTION_LABELS
    )
    for row in queries.last_by_direction(conn, status="success"):
        success.add_metric([row.sync_pair, row.direction], _epoch(row.started_at))
    yield from (status, reason, duration, ended, running, success)

    lag = GaugeMetricFamily(
        "hasync_replication_lag_seconds",
        "How long the oldest change on this server has waited for the other (the change feed)",
        labels=["pair", "server"],
    )
    silent = GaugeMetricFamily(
        "hasync_watcher_silent",
        "1 when this server's watcher has not published for 3 minutes",
        labels=["pair", "server"],
    )
    for one in read_lags(conn, now):
        silent.add_metric([one.pair, one.server], 1.0 if one.silent else 0.0)
        if one.seconds is not None:
            lag.add_metric([one.pair, one.server], one.seconds)
    yield from (lag, silent)


class AuditCollector(Collector):
    """The audit trail, read at each scrape."""

    def __init__(self, store: AuditStore):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hasync_audit_db_up", "1 when the audit database answered this scrape")
        try:
            self.store.ensure_schema()
            with self.store.engine.connect() as conn:
                found = list(audit_metrics(conn, datetime.now(UTC)))
        except (AuditUnavailable, SQLAlchemyError):
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from found


def render(store: AuditStore) -> bytes:
    """The text a scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuditCollector(store))
    return generate_latest(registry)
