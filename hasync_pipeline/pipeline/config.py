"""The run config of a sync job, generated from the settings table: one field per run setting, same name,
same default, the setting's help as its description (what the launchpad shows).

A job's default run config is its pair's resolved settings (Registry.settings_for): table default < pairs.toml
[defaults] < [pairs.<pair>.settings] < HA_SYNC_<NAME>; what a run's config says wins over all of them.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pydantic

from ..settings import RUN_SETTINGS, Setting


def _field(s: Setting) -> tuple[Any, Any]:
    annotation: Any = list[str] if s.kind is list else s.kind
    default = list(s.default) if s.kind is list else s.default
    return annotation, pydantic.Field(default=default, description=f"{s.help} ({s.env})")


_RunSettings: Any = pydantic.create_model(  # type: ignore[call-overload]  # a dg.Config subclass, from the table
    "_RunSettings", __base__=dg.Config, **{s.name: _field(s) for s in RUN_SETTINGS}
)


class SyncConfig(_RunSettings):
    """Every run setting of HA Sync (see the README's settings table)."""
