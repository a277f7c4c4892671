"""The one settings table: every layer in its order, and a clear refusal of what does not fit, wherever it
came from."""

from __future__ import annotations

import pytest

from hasync_pipeline.cli import build_parser, settings_from_args
from hasync_pipeline.pairs import RegistryError, load_registry
from hasync_pipeline.pipeline.config import SyncConfig
from hasync_pipeline.settings import RUN_SETTINGS, SETTINGS, SettingError, resolve
from hasync_pipeline_tests.conftest import pair_args, run_cli

PAIRS = """
[defaults]
workers = 2
exclude = ["*.part"]

[pairs.media]
settings = {{ workers = 3{extra} }}

[pairs.photos]
"""


def registry(tmp_path, monkeypatch, extra: str = ""):
    path = tmp_path / "pairs.toml"
    path.write_text(PAIRS.format(extra=extra))
    monkeypatch.setenv("HA_SYNC_PAIRS_FILE", str(path))
    return load_registry()


def test_each_layer_wins_over_the_one_before(tmp_path, monkeypatch):
    reg = registry(tmp_path, monkeypatch)
    assert resolve().workers == 0 and resolve().source("workers") == "default"  # 0: chosen per destination
    assert reg.settings_for("photos").workers == 2  # [defaults]
    assert reg.settings_for("media").workers == 3  # the pair's section
    monkeypatch.setenv("HA_SYNC_WORKERS", "5")
    assert reg.settings_for("media").workers == 5 and reg.settings_for("media").source("workers") == "environment"
    args = build_parser().parse_args(["--src", "/a", "--dest", "/b", "--pair", "media", "--workers", "6"])
    assert settings_from_args(args).workers == 6  # the flag
    assert reg.settings_for("media", overrides={"workers": 7}).workers == 7  # run config
    assert reg.settings_for("media").exclude == ["*.part"]


def test_every_run_setting_is_a_flag_and_a_run_config_field_of_the_same_name():
    fields = SyncConfig.model_fields
    assert [s.name for s in RUN_SETTINGS] == list(fields)
    help_text = build_parser().format_help()
    for s in SETTINGS:
        assert (s.flag in help_text) == s.cli, s.name
        if s.run:  # unset: the run takes the deployment's value when it starts
            assert fields[s.name].default is None and s.env in fields[s.name].description


@pytest.mark.parametrize(
    "extra, message",
    [
        (", max_delete = 150", r"\[pairs.media.settings\]: max_delete must be at most 100%"),
        (", lock_ttl = 'four'", r"lock_ttl must be a whole number, not 'four'"),
        (", colour = 'red'", r"unknown settings \['colour'\]"),
        (", db_dsn = 'sqlite:///x'", r"\['db_dsn'\] cannot be set here"),
    ],
)
def test_a_pairs_file_value_that_does_not_fit_is_refused_naming_where(tmp_path, monkeypatch, extra, message):
    with pytest.raises(RegistryError, match=message):
        registry(tmp_path, monkeypatch, extra)


def test_environment_values_that_do_not_fit_are_refused_naming_the_variable():
    for env, message in (
        ({"HA_SYNC_WORKERS": "-1"}, "HA_SYNC_WORKERS: workers must be at least 0"),
        ({"HA_SYNC_MTIME_THRESHOLD": "soon"}, "HA_SYNC_MTIME_THRESHOLD: 'soon' is not a number"),
        ({"HA_SYNC_DELETE_MISSING": "perhaps"}, "HA_SYNC_DELETE_MISSING: 'perhaps' is not true/false"),
        ({"HA_SYNC_LOCK_TTL": "nan"}, "HA_SYNC_LOCK_TTL: 'nan' is not a whole number"),
    ):
        with pytest.raises(SettingError, match=message):
            resolve(environ=env)


def test_the_cli_refuses_a_bad_variable_in_one_line_and_changes_nothing(pair, tmp_path):
    dell, hp = pair
    (dell / "a").write_text("a")
    proc = run_cli(
        *pair_args(dell, hp, "media"),
        "--no-dry-run",
        env={"HA_SYNC_MAX_DELETE": "200", "HA_SYNC_LOG_DIR": str(tmp_path / "logs")},
    )
    assert proc.returncode == 2
    assert proc.stderr == "ha-sync: HA_SYNC_MAX_DELETE: max_delete must be at most 100%\n"
    assert list(hp.iterdir()) == []


def test_the_cli_dry_runs_unless_told_otherwise(pair, tmp_path):
    dell, hp = pair
    (dell / "a").write_text("a")
    proc = run_cli(*pair_args(dell, hp, "media"), "--log-dir", str(tmp_path / "logs"))
    assert proc.returncode == 0 and "copy     a" in proc.stdout and "Dry-run success" in proc.stdout
    assert list(hp.iterdir()) == []
