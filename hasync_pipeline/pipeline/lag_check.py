"""The folder assets' `replication_lag` check: how long the oldest change on that copy has waited for the
other one (feed/lag.py, from the audit database; never a share).  The change-feed sensor reports it as it
changes; executing the check in the UI asks the database now.  A warning, never an error: the schedules'
full runs still carry every change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from ..audit import AuditStore
from ..feed.lag import LAG_WARN_SECONDS, Lag
from ..pairs import Pair
from .deployment import HaSyncDeployment
from .ops import folder_key

CHECK_NAME = "replication_lag"
SIDES = ("dell", "hp")


def lag_metadata(lag: Lag | None) -> dict[str, dg.MetadataValue]:
    if lag is None:
        return {"change feed": dg.MetadataValue.text("no watcher publishes for this copy: the schedules carry it")}
    meta: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(lag.describe()),
        "watcher last heard": dg.MetadataValue.timestamp(lag.heard_at),
    }
    if lag.seconds is not None:
        meta["lag_seconds"] = dg.MetadataValue.float(round(lag.seconds, 1))
    if lag.pending_since is not None:
        meta["oldest waiting change"] = dg.MetadataValue.timestamp(lag.pending_since)
    return meta


def lag_passed(lag: Lag | None) -> bool:
    return lag is None or lag.ok


def lag_evaluation(server: str, pair: str, lag: Lag | None) -> dg.AssetCheckEvaluation:
    """What the sensor reports for one copy."""
    return dg.AssetCheckEvaluation(
        asset_key=folder_key(server, pair),
        check_name=CHECK_NAME,
        passed=lag_passed(lag),
        metadata=lag_metadata(lag),
        severity=dg.AssetCheckSeverity.WARN,
        description=f"lag over {LAG_WARN_SECONDS:.0f} s, or the watcher silent, warns",
    )


def build_lag_check(pair: Pair) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=folder_key(side, pair.name),
            description=f"How long the oldest change on this copy has waited for the other one (the change "
            f"feed); warns past {LAG_WARN_SECONDS:.0f} s or when the server's watcher is silent.",
        )
        for side in SIDES
    ]

    @dg.multi_asset_check(specs=specs, name=f"{pair.name}_{CHECK_NAME}")
    def replication_lag(ha_sync: HaSyncDeployment) -> Iterator[dg.AssetCheckResult]:
        settings = ha_sync.settings()
        store = AuditStore(settings.db_dsn, settings.db_timeout)
        try:
            lags = {(lag.server, lag.pair): lag for lag in store.lags(datetime.now(UTC))}
        finally:
            store.dispose()
        for side in SIDES:
            lag = lags.get((side, pair.name))
            yield dg.AssetCheckResult(
                asset_key=folder_key(side, pair.name),
                check_name=CHECK_NAME,
                passed=lag_passed(lag),
                metadata=lag_metadata(lag),
                severity=dg.AssetCheckSeverity.WARN,
            )

    return replication_lag
