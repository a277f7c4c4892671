"""Weekly housekeeping of the audit database (the seed's open question: sync_operations grows without end)."""

import dagster as dg
import pydantic

from ..audit import AuditStore
from .deployment import HaSyncDeployment


class PurgeConfig(dg.Config):
    older_than_days: int | None = pydantic.Field(default=None, description="unset: the audit_retain_days setting")
    batch_size: int = 10_000


@dg.op(description="Delete sync_operations rows older than N days, in batches (short locks).")
def purge_audit_rows(context: dg.OpExecutionContext, config: PurgeConfig, ha_sync: HaSyncDeployment) -> int:
    settings = ha_sync.settings()
    days = config.older_than_days or settings.audit_retain_days
    store = AuditStore(settings.db_dsn, settings.db_timeout)
    try:
        deleted = store.purge_operations(days, config.batch_size)
    finally:
        store.dispose()
    context.add_output_metadata({"deleted_rows": deleted, "older_than_days": days})
    return deleted


@dg.job(
    name="audit_maintenance",
    executor_def=dg.in_process_executor,
    description="Deletes audit operation rows older than audit_retain_days (default 30; weekly).",
)
def audit_maintenance():
    purge_audit_rows()


audit_maintenance_schedule = dg.ScheduleDefinition(
    name="audit_maintenance_weekly",
    job=audit_maintenance,
    cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
