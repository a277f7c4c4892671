"""The commands users type: `dg check defs`, `dg launch --job media_dell_to_hp`, `dagster definitions
validate`, `dagster job execute -j media_dell_to_hp` (superseded by dg, still working), and the web UI
(dagster-webserver answering GraphQL), each as a real process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from hasync_pipeline.devtools.mariadb import free_port
from hasync_pipeline_tests.conftest import snapshot, write

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow  # each test starts dagster processes


def dagster_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    for side in ("dell", "hp"):
        (tmp_path / side / "media").mkdir(parents=True)
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_MODULE_NAME": "hasync_pipeline.definitions",
        "HA_SYNC_DELL_ROOT": str(tmp_path / "dell"),
        "HA_SYNC_HP_ROOT": str(tmp_path / "hp"),
        "HA_SYNC_LOG_DIR": str(tmp_path / "logs"),
        "HA_SYNC_WORK_DIR": str(tmp_path / "work"),
    }


@pytest.mark.parametrize("command", [["dg", "check", "defs"], ["dagster", "definitions", "validate"]])
def test_the_definitions_validate_from_the_repo_root(command):
    proc = subprocess.run([BIN / command[0], *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "successful" in (proc.stdout + proc.stderr).lower()


def test_dagster_job_execute_media_dell_to_hp(tmp_path):
    env = dagster_env(tmp_path)
    write(tmp_path / "dell" / "media" / "film.mkv", "frames")
    proc = subprocess.run(
        [BIN / "dagster", "job", "execute", "-j", "media_dell_to_hp"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr
    assert snapshot(tmp_path / "hp" / "media") == {}  # a dry-run, as the seed's default
    real = tmp_path / "real.yaml"
    real.write_text("ops:\n  acquire_lease:\n    config:\n      dry_run: false\n")
    proc = subprocess.run(
        [BIN / "dagster", "job", "execute", "-j", "media_dell_to_hp", "-c", str(real)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hp" / "media" / "film.mkv").read_text() == "frames"
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_runs_count() == 2  # both runs are in the instance, so the UI shows them
    write(tmp_path / "dell" / "media" / "poster.jpg", "poster")  # the deployment says: real runs
    proc = subprocess.run(
        [BIN / "dagster", "job", "execute", "-j", "media_dell_to_hp"],
        cwd=tmp_path,
        env={**env, "HA_SYNC_DRY_RUN": "false"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hp" / "media" / "poster.jpg").read_text() == "poster"  # it once still dry-ran
    write(tmp_path / "dell" / "media" / "trailer.mkv", "more frames")  # and `dg launch`, from the project
    proc = subprocess.run(
        [BIN / "dg", "launch", "--job", "media_dell_to_hp"],
        cwd=REPO,
        env={**env, "HA_SYNC_DRY_RUN": "false"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hp" / "media" / "trailer.mkv").read_text() == "more frames"


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, children included."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  jobs { name } schedules { name cronSchedule scheduleState { status } } sensors { name }
  assetNodes { assetKey { path } } } } } }"""


PAIRS = ("media", "photos", "owncloud", "games", "infra", "ai")


def graphql_repository(port: int, proc: subprocess.Popen) -> dict:
    """Wait for the web UI on `port` to answer (code loading takes a few seconds), then ask it for the code
    location's jobs, schedules, sensors and assets."""
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the web UI did not come up"
            time.sleep(0.2)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", json.dumps({"query": QUERY}).encode(), {"Content-Type": "application/json"}
    )
    while True:  # the webserver may answer before its code location has loaded
        with urllib.request.urlopen(req, timeout=60) as resp:
            nodes = json.load(resp)["data"]["repositoriesOrError"].get("nodes")
        if nodes:
            return nodes[0]
        assert time.monotonic() < deadline, "no code location loaded"
        time.sleep(0.5)


def ui_repository(command: Callable[[int], list], env: dict[str, str]) -> dict:
    """Start a web UI (`command(port)`, from the repository), ask it for the code location, stop it."""
    port = free_port()
    proc = subprocess.Popen(
        command(port),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return graphql_repository(port, proc)
    finally:
        stop_group(proc)


def test_webserver_serves_the_jobs_schedules_sensors_and_assets(tmp_path):
    env = dagster_env(tmp_path)
    del env["DAGSTER_MODULE_NAME"]  # it counts as -m, and the webserver takes one of -w / -m
    repo = ui_repository(
        lambda port: [
            BIN / "dagster-webserver",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env,
    )
    jobs = {j["name"] for j in repo["jobs"]}
    assert {f"{p}_{d}" for p in PAIRS for d in ("dell_to_hp", "hp_to_dell")} <= jobs
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert schedules["media_hp_to_dell_schedule"]["cronSchedule"] == "7,22,37,52 * * * *"
    assert schedules["media_dell_to_hp_schedule"]["scheduleState"]["status"] == "RUNNING"
    assert {s["name"] for s in repo["sensors"]} == {"ha_sync_failure_alert", "ha_sync_freshness", "ha_sync_change_feed"}
    assert ["hp", "photos"] in [a["assetKey"]["path"] for a in repo["assetNodes"]]


def test_terminated_run_releases_the_lease_and_leaves_no_temp_files(tmp_path):
    from hasync_pipeline_tests.conftest import internal_leftovers

    env = dagster_env(tmp_path)
    block = os.urandom(1 << 20)
    for i in range(3):
        with open(tmp_path / "dell" / "media" / f"big{i}", "wb") as f:
            for _ in range(256):
                f.write(block)
    real = tmp_path / "real.yaml"
    real.write_text("ops:\n  acquire_lease:\n    config:\n      dry_run: false\n")
    proc = subprocess.Popen(
        [BIN / "dagster", "job", "execute", "-j", "media_dell_to_hp", "-c", str(real)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hp = tmp_path / "hp" / "media"
    deadline = time.monotonic() + 120
    while not internal_leftovers(hp):  # the copy is under way
        assert proc.poll() is None and time.monotonic() < deadline, "the copy was not seen"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert internal_leftovers(hp) == []
    lease = Path(os.environ["HA_SYNC_STATE_DIR"]) / "leases" / "ha-sync-media.json"
    assert lease.read_text() == ""  # released
    installed = [p for p in hp.iterdir() if not p.name.startswith(".hasync")]
    assert all(p.stat().st_size == 256 << 20 for p in installed), [(p, p.stat().st_size) for p in installed]


def test_the_readme_demo_command_syncs_both_ways_and_records_both_runs(tmp_path):
    """README set-up command 1 (after the install): `python3 -m hasync_pipeline.demo`, run from a fresh folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_SYNC_", "DAGSTER_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "hasync_pipeline.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    demo = tmp_path / "demo"
    assert snapshot(demo / "dell" / "media") == snapshot(demo / "hp" / "media")
    assert (demo / "dell" / "media" / "notes.txt").read_text() == "newer notes, edited on the HP\n"
    [kept] = (demo / "hp" / "media").glob("notes.sync-conflict-*-dell.txt")  # the other version, kept
    assert kept.read_text() == "old notes\n"
    assert (demo / "hp" / "media" / "movies" / "holiday.txt").exists()
    with sqlite3.connect(demo / "state" / "ha-sync-audit.sqlite3") as db:
        runs = db.execute("SELECT direction, status, dry_run FROM sync_iterations ORDER BY id").fetchall()
    assert runs == [("dell_to_hp", "success", 0), ("hp_to_dell", "success", 0), ("dell_to_hp", "success", 0)], runs
    assert "source me" in (demo / "env.sh").read_text()
    # the README's next step: `. demo/env.sh && dg dev` from the repository, the web UI with the daemon
    repo = ui_repository(lambda port: ["bash", "-c", f". {demo / 'env.sh'} && exec {BIN / 'dg'} dev -p {port}"], env)
    jobs = {j["name"] for j in repo["jobs"]}
    assert {f"{p}_{d}" for p in PAIRS for d in ("dell_to_hp", "hp_to_dell")} <= jobs  # all 12
    running = {s["name"] for s in repo["schedules"] if s["scheduleState"]["status"] == "RUNNING"}
    assert running == {"media_dell_to_hp_schedule", "media_hp_to_dell_schedule", "audit_maintenance_weekly"}
