"""The CLI and a Dagster job run the same sequence: the same scenario through both ends with the same
operations, the same audit rows and the same outcome (engine/outcome.py)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, select

from hasync_pipeline import cli
from hasync_pipeline.audit import AuditStore
from hasync_pipeline.audit.schema import sync_iterations, sync_operations
from hasync_pipeline.definitions import defs
from hasync_pipeline.engine.outcome import EXIT_CODES, Status
from hasync_pipeline.lease.local import acquire_local
from hasync_pipeline.pipeline.ops import CONFLICTS_TAG, SKIP_TAG_VALUES, SKIPPED_TAG
from hasync_pipeline_tests.conftest import NOBODY, as_user, pair_args, snapshot, write

T0 = 1_700_000_000
VOLATILE = {"id", "started_at", "ended_at", "run_id", "dagster_run_id", "iteration_id"}


def fifo_in_source(dell: Path, hp: Path) -> None:
    write(dell / "a.txt", "a", T0)
    os.mkfifo(dell / "pipe")


def leftover_temp_file(dell: Path, hp: Path) -> None:
    write(dell / "a.txt", "a", T0)
    write(hp / "sub" / ".hasync-tmp-dead-0", "half a copy")


def unreadable_folder(dell: Path, hp: Path) -> None:
    write(dell / "private" / "a", "a", T0)
    write(dell / "public", "p", T0)
    os.chmod(dell / "private", 0)


def empty_source(dell: Path, hp: Path) -> None:
    write(hp / "precious", "keep me", T0)


def unreadable_file(dell: Path, hp: Path) -> None:
    write(dell / "secret", "s", T0)
    write(dell / "public", "p", T0)
    os.chmod(dell / "secret", 0)


def file_against_folder(dell: Path, hp: Path) -> None:
    write(dell / "clash", "a file", T0)
    write(hp / "clash" / "inside", "a folder", T0)
    write(dell / "fine", "ok", T0)


def new_file(dell: Path, hp: Path) -> None:
    write(dell / "new", "n", T0)


def hold_the_lease(state_dir: str) -> Callable[[], None]:
    holder = acquire_local(state_dir, "media", "someone/else", 600)
    return holder.release


SCENARIOS = {  # name: (tree, dry run, run the same twice (the second is compared), hold the lease)
    "fifo": (fifo_in_source, False, False, False),
    "leftover-temp-file": (leftover_temp_file, False, False, False),
    "unreadable-folder": (unreadable_folder, False, False, False),
    "refused-empty-source": (empty_source, False, False, False),
    "partial-failure": (unreadable_file, False, False, False),
    "conflict": (file_against_folder, False, False, False),
    "lease-held": (new_file, False, False, True),
    "already-current-dry-run": (new_file, True, True, False),
}


def audit_rows(dsn: str) -> tuple[list[dict], list[dict]]:
    AuditStore(dsn).ensure_schema()  # a run that wrote nothing (lease held) made no tables
    engine = create_engine(dsn)
    with engine.connect() as conn:
        its = [
            {k: v for k, v in r._asdict().items() if k not in VOLATILE}
            for r in conn.execute(select(sync_iterations).order_by(sync_iterations.c.id))
        ]
        ops = sorted(
            (
                {k: v for k, v in r._asdict().items() if k not in VOLATILE}
                for r in conn.execute(select(sync_operations))
            ),
            key=lambda o: (o["filepath"], o["operation"]),
        )
    engine.dispose()
    return its, [{k: _untimed(v) for k, v in op.items()} for op in ops]


def _untimed(value: object) -> object:
    """A conflict copy's name carries the second it was made: the two drivers' runs differ there only."""
    return re.sub(r"sync-conflict-\d{8}-\d{6}", "sync-conflict-T", value) if isinstance(value, str) else value


def through_cli(dell: Path, hp: Path, dry_run: bool) -> Status:
    """`ha-sync`'s main(), in this process (it may be running as an unprivileged user, who cannot start the
    interpreter from root's home here); the CLI tests run the real command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(
            [
                *pair_args(dell, hp, "media"),
                "--direction",
                "dell_to_hp",
                "--dry-run" if dry_run else "--no-dry-run",
            ]
        )
    if code == 0 and "Dry-run already current" in out.getvalue():
        return Status.ALREADY_CURRENT  # exit 0 like a success: the message tells them apart
    [status] = [
        status for status, exit_code in EXIT_CODES.items() if exit_code == code and status != Status.ALREADY_CURRENT
    ]
    return status


def through_dagster(dell: Path, hp: Path, dry_run: bool, instance: dg.DagsterInstance | None = None) -> Status:
    instance = instance or dg.DagsterInstance.ephemeral()
    result = defs.get_job_def("media_dell_to_hp").execute_in_process(
        run_config={"ops": {"acquire_lease": {"config": {"dry_run": dry_run}}}}, instance=instance, raise_on_error=False
    )
    skipped = instance.get_run_by_id(result.run_id).tags.get(SKIPPED_TAG)
    if skipped:
        return {v: k for k, v in SKIP_TAG_VALUES.items()}[skipped]
    if result.success:
        conflicts = instance.get_run_by_id(result.run_id).tags.get(CONFLICTS_TAG)
        return Status.CONFLICTS if conflicts else Status.SUCCESS
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return Status(failure.step_failure_data.user_failure_data.metadata["status"].value)


def run_scenario(
    base: Path,
    driver: str,
    name: str,
    instance: dg.DagsterInstance | None = None,
) -> tuple[Status, tuple, dict]:
    """Lay the scenario's trees in `base` (always the same paths, so messages match), run it, return what
    happened: outcome, audit rows, and the destination afterwards."""
    tree, dry_run, twice, held = SCENARIOS[name]
    if base.exists():
        for root, dirs, _ in os.walk(base):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        shutil.rmtree(base)
    dell, hp = base / "dell" / "media", base / "hp" / "media"
    dell.mkdir(parents=True)
    hp.mkdir(parents=True)
    tree(dell, hp)
    dsn = f"sqlite:///{base / 'audit.sqlite3'}"
    env = {
        "HA_SYNC_DELL_ROOT": str(base / "dell"),
        "HA_SYNC_HP_ROOT": str(base / "hp"),
        "HA_SYNC_LOG_DIR": str(base / "logs"),
        "HA_SYNC_STATE_DIR": str(base / "state"),
        "HA_SYNC_DB_DSN": dsn,
    }
    os.environ.update(env)
    release = hold_the_lease(env["HA_SYNC_STATE_DIR"]) if held else (lambda: None)

    def run() -> Status:
        if driver == "cli":
            return through_cli(dell, hp, dry_run)
        return through_dagster(dell, hp, dry_run, instance)

    try:
        status = run()
        if twice:
            status = run()
    finally:
        release()
    return status, audit_rows(dsn), snapshot(hp)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_cli_and_dagster_end_the_same_scenario_the_same_way(tmp_path, monkeypatch, name):
    for var in ("HA_SYNC_DELL_ROOT", "HA_SYNC_HP_ROOT", "HA_SYNC_LOG_DIR", "HA_SYNC_DB_DSN"):
        monkeypatch.setenv(var, "")  # restored after the test; run_scenario sets them
    base = tmp_path / "case"
    if name in ("unreadable-folder", "partial-failure"):  # root reads anything: run as an unprivileged user
        for driver in ("cli", "dagster"):  # as root first, so that every module the run needs is imported
            run_scenario(tmp_path / "warm-up", driver, "fifo")
        os.chown(tmp_path, NOBODY, NOBODY)
        instance = dg.DagsterInstance.ephemeral()  # made here: its set-up reads files only root can
        cli, dagster = (as_user(NOBODY, run_scenario, base, driver, name, instance) for driver in ("cli", "dagster"))
    else:
        cli, dagster = (run_scenario(base, driver, name) for driver in ("cli", "dagster"))
    assert cli[0] == dagster[0]
    assert cli[1] == dagster[1]
    assert cli[2] == dagster[2]
    expected = {
        "fifo": Status.PARTIAL_FAILURE,
        "leftover-temp-file": Status.SUCCESS,
        "unreadable-folder": Status.PARTIAL_FAILURE,
        "refused-empty-source": Status.REFUSED,
        "partial-failure": Status.PARTIAL_FAILURE,
        "conflict": Status.CONFLICTS,
        "lease-held": Status.LEASE_HELD,
        "already-current-dry-run": Status.ALREADY_CURRENT,
    }[name]
    assert cli[0] == expected
    iterations, operations = cli[1]
    if name == "leftover-temp-file":
        assert not (base / "hp" / "media" / "sub" / ".hasync-tmp-dead-0").exists()
    if name == "fifo":
        assert "special file" in iterations[-1]["error_message"] and operations[0]["filepath"] == "a.txt"
    if name == "lease-held":
        assert iterations == [] and cli[2] == {}
    if name == "already-current-dry-run":
        assert len(iterations) == 1 and iterations[0]["dry_run"] == 1
    if name == "refused-empty-source":
        assert iterations[0]["status"] == "failed" and "empty" in iterations[0]["error_message"]
