"""Without Kubernetes: the systemd units verify, their timers keep the seed's crons, and what they run
(`ha-sync job <pair>_<direction>`) syncs that job's folders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hasync_pipeline_tests.conftest import run_cli, snapshot, write

UNITS = Path(__file__).resolve().parent.parent / "hasync_pipeline" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_units_verify_and_the_timers_keep_the_seeds_crons(tmp_path):
    for unit in ("ha-sync@.service", "ha-sync-dell-to-hp@.timer", "ha-sync-hp-to-dell@.timer", "ha-sync-watch.service"):
        shutil.copy(UNITS / unit, tmp_path / unit)
    fake = tmp_path / "ha-sync"  # verify checks that ExecStart's program exists
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    for unit in ("ha-sync@.service", "ha-sync-watch.service"):
        service = (tmp_path / unit).read_text().replace("/usr/local/bin/ha-sync", str(fake))
        (tmp_path / unit).write_text(
            service.replace("EnvironmentFile=/etc/ha-sync/env", "EnvironmentFile=-/etc/ha-sync/env")
        )
    watch = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "ha-sync-watch.service")],
        capture_output=True,
        text=True,
    )
    assert watch.returncode == 0, watch.stderr
    for name in (
        "ha-sync@media_dell_to_hp.service",
        "ha-sync-dell-to-hp@media.timer",
        "ha-sync-hp-to-dell@media.timer",
    ):
        template = name.split("@")[0] + "@." + name.rsplit(".", 1)[1]
        (tmp_path / name).symlink_to(tmp_path / template)
        proc = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True
        )
        assert proc.returncode == 0, (name, proc.stderr)
    for timer, minutes in (("ha-sync-dell-to-hp@.timer", "00,15,30,45"), ("ha-sync-hp-to-dell@.timer", "07,22,37,52")):
        calendar = next(line for line in (UNITS / timer).read_text().splitlines() if line.startswith("OnCalendar="))
        assert calendar == f"OnCalendar=*-*-* *:{minutes}:00"
        normalized = subprocess.run(
            ["systemd-analyze", "calendar", calendar.split("=", 1)[1]], capture_output=True, text=True
        )
        assert normalized.returncode == 0, normalized.stderr
    installed = tmp_path / "units"
    installed.mkdir()
    proc = subprocess.run(
        ["sh", str(UNITS / "install.sh"), "media"],
        env={
            "PATH": "/usr/bin:/bin",
            "UNIT_DIR": str(installed),
            "ETC_DIR": str(tmp_path / "etc"),
            "NO_SYSTEMCTL": "1",
        },
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in installed.iterdir()) == [
        "ha-sync-dell-to-hp@.timer",
        "ha-sync-hp-to-dell@.timer",
        "ha-sync-watch.service",
        "ha-sync@.service",
    ]
    assert "HA_SYNC_DRY_RUN=true" in (tmp_path / "etc" / "env").read_text()


def test_ha_sync_job_syncs_that_job_s_folders(tmp_path):
    env = {"HA_SYNC_DELL_ROOT": str(tmp_path / "dell"), "HA_SYNC_HP_ROOT": str(tmp_path / "hp")}
    write(tmp_path / "dell" / "photos" / "cat.jpg", "meow")
    (tmp_path / "hp" / "photos").mkdir(parents=True)
    proc = run_cli("job", "photos_dell_to_hp", "--no-dry-run", "--log-dir", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(tmp_path / "hp" / "photos") == snapshot(tmp_path / "dell" / "photos")
    bad = run_cli("job", "photos_sideways", env=env)
    assert bad.returncode == 2 and "is not <pair>_dell_to_hp or <pair>_hp_to_dell" in bad.stderr
