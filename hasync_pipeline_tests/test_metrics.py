"""GET /metrics over rows written by real `ha-sync` runs (SQLite and MariaDB), parsed back with prometheus_client's
own parser; the alert rules checked by `promtool check rules` and evaluated by `promtool test rules` against
the scraped samples (a failing pair fires, a healthy one does not); the Grafana dashboard references only
exported series."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from hasync_pipeline.audit import AuditStore
from hasync_pipeline.dashboard.app import create_app
from hasync_pipeline.engine.outcome import FAILURE_REASONS, failure_reason
from hasync_pipeline.feed.lag import LAG_WARN_SECONDS
from hasync_pipeline.pipeline.sensors import SCHEDULE_INTERVAL
from hasync_pipeline.settings import BY_NAME
from hasync_pipeline_tests.conftest import write

MONITORING = Path(__file__).resolve().parent.parent / "k8s" / "components" / "monitoring"
SERIES = re.compile(r"\bhasync_[a-z_]+\b")


def run(job: str, tmp_path: Path, dsn: str) -> int:
    """`ha-sync job <job> --no-dry-run`, a real process, the roots under tmp_path."""
    env = {
        **os.environ,
        "HA_SYNC_DB_DSN": dsn,
        "HA_SYNC_DELL_ROOT": str(tmp_path / "dell"),
        "HA_SYNC_HP_ROOT": str(tmp_path / "hp"),
        "HA_SYNC_LOG_DIR": str(tmp_path / "logs"),
    }
    command = [sys.executable, "-m", "hasync_pipeline.cli", "job", job, "--no-dry-run"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120).returncode


def scrape(dsn: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = TestClient(create_app(dsn)).get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def audited(tmp_path, db_dsn):
    """Real runs: media synced twice (a file, then nothing), photos failed (its destination is not there)."""
    dell, hp = tmp_path / "dell", tmp_path / "hp"
    write(dell / "media" / "film.mkv", "frames")
    write(dell / "media" / "poster.jpg", "poster")
    (hp / "media").mkdir(parents=True)
    assert run("media_dell_to_hp", tmp_path, db_dsn) == 0
    assert run("media_dell_to_hp", tmp_path, db_dsn) == 0
    write(dell / "photos" / "a.jpg", "a")
    assert run("photos_dell_to_hp", tmp_path, db_dsn) != 0
    return db_dsn, scrape(db_dsn)


def test_the_endpoint_tells_each_direction_s_runs_files_and_last_status_from_real_runs(audited):
    _, samples = audited
    media = {"pair": "media", "direction": "dell_to_hp"}
    assert value(samples, "hasync_audit_db_up") == 1
    assert value(samples, "hasync_runs_total", **media, status="success") == 2
    assert value(samples, "hasync_files_total", **media, kind="created") == 2
    assert value(samples, "hasync_files_total", **media, kind="conflicted") == 0
    assert value(samples, "hasync_transferred_bytes_total", **media) == len("frames") + len("poster")
    assert value(samples, "hasync_last_run_status", **media, status="success") == 1
    assert value(samples, "hasync_last_run_status", **media, status="failed") == 0
    assert abs(value(samples, "hasync_last_success_timestamp_seconds", **media) - time.time()) < 300
    photos = {"pair": "photos", "direction": "dell_to_hp"}
    assert value(samples, "hasync_last_run_status", **photos, status="failed") == 1
    assert value(samples, "hasync_last_run_failure_reason", **photos, reason="refused") == 1  # not mounted
    assert value(samples, "hasync_failed_runs_total", **photos, reason="refused") == 1
    assert value(samples, "hasync_last_success_timestamp_seconds", **photos) is None  # never synced
    for _, labels in samples:
        for _, text in labels:  # no path, message or secret in a label
            assert "/" not in text and " " not in text, labels


def test_a_run_under_way_shows_as_in_progress_and_is_not_counted_until_it_ends(audited):
    dsn, _ = audited
    store = AuditStore(dsn)
    now = datetime.now(UTC).isoformat()
    header = {"run_id": "r-under-way", "pair": "media", "direction": "dell_to_hp", "src": "a", "dest": "b"}
    store.start_iteration({**header, "started_at": now})  # the row a run writes when it starts
    store.dispose()
    samples = scrape(dsn)
    media = {"pair": "media", "direction": "dell_to_hp"}
    assert value(samples, "hasync_run_in_progress", **media) == 1
    assert value(samples, "hasync_last_run_status", **media, status="running") == 1
    assert value(samples, "hasync_runs_total", **media, status="running") is None  # a counter never goes down
    assert value(samples, "hasync_runs_total", **media, status="success") == 2


def test_a_dead_database_is_a_zero_not_an_error_page(tmp_path):
    samples = scrape("mysql+pymysql://ha:secret@127.0.0.1:9/audit")
    assert samples == {("hasync_audit_db_up", ()): 0.0}


def test_failure_reasons_are_read_from_the_words_the_engine_writes():
    assert failure_reason("dell (192.168.2.100:/data/media) stopped answering: no reply for 60 s") == (
        "server_not_answering"
    )
    assert failure_reason("refused, nothing changed: the destination is empty") == "refused"
    assert failure_reason("interrupted by SIGTERM; changes stopped, temp files removed") == "interrupted"
    assert failure_reason("lease lost") == "other" and set(FAILURE_REASONS) >= {"other", "refused"}


def rules() -> dict:
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]


def test_every_series_the_rules_and_the_dashboard_name_is_exported(audited):
    _, samples = audited
    exported = {name for name, _ in samples}
    in_rules = {m for group in rules()["groups"] for rule in group["rules"] for m in SERIES.findall(rule["expr"])}
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"]["query"])
    in_dashboard = {m for e in exprs for m in SERIES.findall(e)}
    assert in_rules and in_dashboard
    # the lag series appear once a watcher publishes (test_lag covers them)
    missing = (in_rules | in_dashboard) - exported - {"hasync_replication_lag_seconds", "hasync_watcher_silent"}
    assert missing == set()


def test_the_rules_thresholds_follow_the_freshness_sensor_and_the_lag_check():
    by_name = {rule["alert"]: rule for group in rules()["groups"] for rule in group["rules"]}
    stale = SCHEDULE_INTERVAL.total_seconds() * BY_NAME["freshness_intervals"].default
    assert by_name["HaSyncPairNotSynced"]["expr"].endswith(f"> {stale:.0f}")
    assert by_name["HaSyncReplicationLag"]["expr"].endswith(f"> {LAG_WARN_SECONDS:.0f}")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed (.ci/install-system-packages installs Debian's prometheus)")
    return found


def test_the_rules_pass_promtool_and_fire_for_the_failing_pair_only(audited, tmp_path):
    _, samples = audited
    spec = rules()
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # the expressions are under test, not the wording
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    evaluated_at = 70 * 60  # promtool's clock starts at 0: a timestamp is "this long before the evaluation"
    series = []
    for (name, labels), v in samples.items():
        if name == "hasync_last_success_timestamp_seconds":
            v = evaluated_at - (time.time() - v)
        text = ",".join(f'{k}="{val}"' for k, val in labels)
        series.append({"series": f"{name}{{{text}}}", "values": f"{v:.0f}+0x80"})
    stale = 'hasync_last_success_timestamp_seconds{direction="dell_to_hp",pair="games"}'  # two hours ago
    series.append({"series": stale, "values": f"{evaluated_at - 7200}+0x80"})
    photos = {"pair": "photos", "direction": "dell_to_hp"}
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "70m",
                        "alertname": "HaSyncRunFailed",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "status": "failed", **photos}}],
                    },
                    {
                        "eval_time": "70m",
                        "alertname": "HaSyncPairNotSynced",  # media synced a minute ago: only the stale one
                        "exp_alerts": [
                            {"exp_labels": {"severity": "warning", "pair": "games", "direction": "dell_to_hp"}}
                        ],
                    },
                    {"eval_time": "70m", "alertname": "HaSyncServerNotAnswering", "exp_alerts": []},
                    {"eval_time": "70m", "alertname": "HaSyncAuditDatabaseDown", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool(), "test", "rules", str(tmp_path / "tests.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
