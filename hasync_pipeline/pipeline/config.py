"""The run config of a sync job, generated from the settings table: one field per run setting, same name,
the setting's help as its description (what the launchpad shows).

Every field defaults to None, "the deployment's value": a run resolves its settings when it starts
(Registry.settings_for: table default < pairs.toml [defaults] < [pairs.<pair>.settings] < HA_SYNC_<NAME>
in the run's environment), and only what the run's config sets wins over them.  So `dagster job execute`,
`dg launch`, the launchpad, schedules and backfills all get the deployment's settings (a default written
into the job at load time did not reach a partitioned job launched without a partition key).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pydantic

from ..settings import RUN_SETTINGS, Setting


def _field(s: Setting) -> tuple[Any, Any]:
    annotation: Any = list[str] if s.kind is list else s.kind
    default = ",".join(s.default) if s.kind is list else s.default
    return annotation | None, pydantic.Field(
        default=None, description=f"{s.help} ({s.env}; unset: the deployment's value, default {default!r})"
    )


_RunSettings: Any = pydantic.create_model(  # type: ignore[call-overload]  # a dg.Config subclass, from the table
    "_RunSettings", __base__=dg.Config, **{s.name: _field(s) for s in RUN_SETTINGS}
)


class SyncConfig(_RunSettings):
    """Every run setting of HA Sync (see the README's settings table); unset ones take the deployment's."""

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}
