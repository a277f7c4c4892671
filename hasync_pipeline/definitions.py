"""The Dagster code location: `defs`.  Found by `dagster dev` / `dagster-webserver` (workspace.yaml),
`dg` ([tool.dagster] in pyproject.toml) and `dagster job execute` ($DAGSTER_MODULE_NAME)."""

from __future__ import annotations

import gc
import sys

import dagster as dg

from .pairs import load_registry
from .pipeline.deployment import HaSyncDeployment
from .pipeline.factory import build_all
from .pipeline.feed_sensor import build_change_feed_sensor
from .pipeline.maintenance import audit_maintenance, audit_maintenance_schedule
from .pipeline.resources import SyncRun
from .pipeline.sensors import build_failure_sensor, build_freshness_sensor


def build_definitions() -> tuple[dg.Definitions, HaSyncDeployment]:
    """Every definition, from the pair registry and the settings read at load (Setting.at_load); a test
    builds them at each setting's bounds, so no allowed value can stop the code location from loading."""
    registry = load_registry()
    ha_sync = HaSyncDeployment.from_environment()
    sync_jobs, sync_schedules, folder_assets, folder_checks = build_all(registry)
    defs = dg.Definitions(
        jobs=[*sync_jobs, audit_maintenance],
        schedules=[*sync_schedules, audit_maintenance_schedule],
        sensors=[
            build_failure_sensor(sync_jobs),
            build_freshness_sensor(registry),
            build_change_feed_sensor(registry, sync_jobs),
        ],
        assets=folder_assets,
        asset_checks=folder_checks,
        resources={"sync": SyncRun(ha_sync=ha_sync), "ha_sync": ha_sync},
    )
    return defs, ha_sync


defs, ha_sync = build_definitions()

# Dagster's import leaves ~200k long-lived objects that the interpreter's last garbage collection walks at
# exit: 0.5 s of every run's process (measured: `python -c "import dagster"` 1.34 s, 0.84 s with this).
# Frozen, they are skipped; everything a run allocates later is collected as usual.  Not in the long-lived
# code server (`dagster api grpc`, which `dg dev` starts too): it never exits, and what it frees while it
# serves must stay collectable.
if sys.argv[1:3] != ["api", "grpc"]:
    gc.freeze()
