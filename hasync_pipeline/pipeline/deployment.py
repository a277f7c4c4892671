"""The deployment's settings as a Dagster resource, `ha_sync`: one field per setting that is neither a run
setting (those are the sync jobs' run config) nor read at load time, generated from the settings table.

Each field is bound to its `HA_SYNC_<NAME>` variable with `EnvVar` when the code location loads with it set,
so the UI's resource page shows which variables the runs and sensors will read (Dagster shows an EnvVar's
name, never its value: the DSN's password stays out of the UI); the launchpad can override a field for one
run.  The resource decides nothing: `settings()` hands its values to the settings table's one resolution
(settings.resolve), as the environment layer.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pydantic

from ..settings import SETTINGS, Setting, Settings, deployment

DEPLOYMENT_SETTINGS = tuple(s for s in SETTINGS if not s.run and not s.at_load)


def _field(s: Setting) -> tuple[Any, Any]:
    return str | None, pydantic.Field(default=None, description=f"{s.help} (${s.env}; unset: {s.env} or the default)")


_Fields: Any = pydantic.create_model(  # type: ignore[call-overload]  # a ConfigurableResource, from the table
    "_Fields", __base__=dg.ConfigurableResource, **{s.name: _field(s) for s in DEPLOYMENT_SETTINGS}
)


class HaSyncDeployment(_Fields):
    """Where HA Sync's data, lease, logs and alerts are: the deployment's settings (see the module docstring)."""

    @classmethod
    def from_environment(cls) -> Any:
        """Every field whose variable is set, bound to it by name (its value is read where the resource is used).
        Partial ("configure at launch"): the resources nesting it get the top-level one, launchpad included."""
        bound = {s.name: dg.EnvVar(s.env) for s in DEPLOYMENT_SETTINGS if os.environ.get(s.env, "").strip()}
        return cls.configure_at_launch(**bound)

    def environ(self) -> dict[str, str]:
        """The process environment, with this resource's fields (as set in the launchpad) over it."""
        fields = {s.env: getattr(self, s.name) for s in DEPLOYMENT_SETTINGS}
        # outside a run or sensor a bound field is still the EnvVar (its name): the environment has its value
        given = {env: value for env, value in fields.items() if value is not None and not isinstance(value, dg.EnvVar)}
        return {**os.environ, **given}

    def settings(self) -> Settings:
        """The settings that are not about one pair."""
        return deployment(self.environ())
