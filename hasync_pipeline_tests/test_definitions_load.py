"""Every allowed value of every setting loads the code location: the definitions are built, and Dagster's own
loadability check passes, at each numeric setting's bounds and each choice (a fixed 30-minute warning window
against `15 x freshness_intervals` minutes once stopped the code location at HA_SYNC_FRESHNESS_INTERVALS=1)."""

from __future__ import annotations

import dagster as dg
import pytest

from hasync_pipeline.definitions import build_definitions
from hasync_pipeline.settings import SETTINGS, Setting

LARGE = 10**6  # a setting without a maximum: some large value stands for "no upper bound"


def allowed_values(setting: Setting) -> list[str]:
    if setting.choices:
        return list(setting.choices)
    if setting.kind in (int, float) and setting.minimum is not None:
        top = setting.maximum if setting.maximum is not None else LARGE
        return [str(setting.kind(setting.minimum)), str(setting.kind(top))]
    if setting.kind is bool:
        return ["true", "false"]
    return []


CASES = [(s.env, value) for s in SETTINGS for value in allowed_values(s)]


@pytest.mark.parametrize(("env", "value"), CASES, ids=[f"{env}={value}" for env, value in CASES])
def test_the_code_location_loads_at_every_bound_of_every_setting(env, value, monkeypatch):
    monkeypatch.setenv(env, value)
    defs, _ = build_definitions()
    dg.Definitions.validate_loadable(defs)
    assert len(defs.resolve_all_job_defs()) >= 12


def test_each_numeric_setting_is_covered():
    """A new numeric setting without a minimum would be left out of the cases above: give it one."""
    assert [s.name for s in SETTINGS if s.kind in (int, float) and s.minimum is None] == []
