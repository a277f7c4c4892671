"""The Dagster pipeline: real runs of the real jobs on temp folders (SQLite audit, local lease)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import select

from hasync_pipeline.audit import AuditStore
from hasync_pipeline.audit.schema import sync_iterations
from hasync_pipeline.definitions import defs, ha_sync
from hasync_pipeline.lease.local import acquire_local
from hasync_pipeline.pipeline.factory import CRONS
from hasync_pipeline_tests.conftest import snapshot, write

PAIRS = ["media", "photos", "owncloud", "games", "infra", "ai"]
REAL = {"ops": {"acquire_lease": {"config": {"dry_run": False}}}}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Dell and HP roots with one folder per pair, logs and work folders, all under tmp_path."""
    for side in ("dell", "hp"):
        for pair in PAIRS:
            (tmp_path / side / pair).mkdir(parents=True)
        monkeypatch.setenv(f"HA_SYNC_{side.upper()}_ROOT", str(tmp_path / side))
    monkeypatch.setenv("HA_SYNC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HA_SYNC_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "dell", tmp_path / "hp"


def run_job(name: str, run_config: dict | None = None, instance=None):
    instance = instance or dg.DagsterInstance.ephemeral()
    return defs.get_job_def(name).execute_in_process(
        run_config=run_config or {}, instance=instance, raise_on_error=False
    )


def iterations() -> list[dict]:
    store = AuditStore()
    store.ensure_schema()
    with store.engine.connect() as conn:
        rows = [r._asdict() for r in conn.execute(select(sync_iterations).order_by(sync_iterations.c.id))]
    store.dispose()
    return rows


def lease_is_free(pair: str) -> bool:
    from hasync_pipeline.lease import LeaseHeld
    from hasync_pipeline.settings import deployment

    try:
        acquire_local(deployment().state_dir, pair, "probe/run", 60).release()
        return True
    except LeaseHeld:
        return False


# ---- what exists ---------------------------------------------------------------------------------


def test_twelve_jobs_schedules_with_the_seed_crons_and_the_rest():
    repo = defs.get_repository_def()
    names = {f"{p}_{d}" for p in PAIRS for d in ("dell_to_hp", "hp_to_dell")}
    assert names <= {j.name for j in repo.get_all_jobs()}
    schedules = {s.name: s for s in repo.schedule_defs}
    for name in names:
        schedule = schedules[f"{name}_schedule"]
        assert schedule.cron_schedule == CRONS[name.split("_", 1)[1]]
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        assert schedule.job_name == name
    assert CRONS == {"dell_to_hp": "*/15 * * * *", "hp_to_dell": "7,22,37,52 * * * *"}
    assert {s.name for s in repo.sensor_defs} == {"ha_sync_failure_alert", "ha_sync_freshness", "ha_sync_change_feed"}
    keys = {"/".join(spec.key.path) for spec in defs.resolve_all_asset_specs()}
    assert {f"{side}/{p}" for side in ("dell", "hp") for p in PAIRS} <= keys
    assert "audit_maintenance" in {j.name for j in repo.get_all_jobs()}


def test_a_run_launched_without_config_takes_the_deployment_s_settings_when_it_starts(roots, monkeypatch):
    """The jobs carry no settings baked in at load time (a partitioned job launched without a partition key
    once ignored them and dry-ran): every field of the launchpad is unset, and the run resolves its settings
    from the environment and pairs.toml when it starts."""
    dell, hp = roots
    for pair in PAIRS:
        for direction in ("dell_to_hp", "hp_to_dell"):
            fields = defs.get_job_def(f"{pair}_{direction}").run_config_schema.config_type.fields
            op_fields = fields["ops"].config_type.fields["acquire_lease"].config_type.fields["config"]
            assert all(not f.is_required for f in op_fields.config_type.fields.values())
    write(dell / "media" / "a.txt", "a")
    assert run_job("media_dell_to_hp").success  # the table's default: a dry run
    assert not (hp / "media" / "a.txt").exists()
    monkeypatch.setenv("HA_SYNC_DRY_RUN", "false")  # the deployment says: real runs
    assert run_job("media_dell_to_hp").success
    assert (hp / "media" / "a.txt").read_text() == "a"
    write(dell / "media" / "b.txt", "b")
    assert run_job("media_dell_to_hp", {"ops": {"acquire_lease": {"config": {"dry_run": True}}}}).success
    assert not (hp / "media" / "b.txt").exists()  # and the run's own config wins
    monkeypatch.setenv("HA_SYNC_DRY_RUN", "perhaps")
    result = run_job("media_dell_to_hp")
    assert not result.success
    assert "HA_SYNC_DRY_RUN: 'perhaps' is not true/false" in str(result.all_events)


def test_schedules_ask_for_the_window_that_just_ended():
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    y, m, d = (int(x) for x in day.split("-"))
    for job, tick, partition in (
        ("media_dell_to_hp", datetime(y, m, d, 10, 15, tzinfo=UTC), f"{day}-10:00"),
        ("media_hp_to_dell", datetime(y, m, d, 10, 22, tzinfo=UTC), f"{day}-10:07"),
    ):
        schedule = defs.resolve_schedule_def(f"{job}_schedule")
        with dg.instance_for_test() as instance:
            ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
            [request] = schedule.evaluate_tick(ctx).run_requests
        assert request.partition_key == partition
        assert not request.run_config.get("ops")  # no settings baked in: the run resolves them when it starts


# ---- runs ----------------------------------------------------------------------------------------


def test_default_run_is_a_dry_run_recorded_and_observed(roots):
    dell, hp = roots
    write(dell / "media" / "new.txt", "n")
    result = run_job("media_dell_to_hp")
    assert result.success
    assert snapshot(hp / "media") == {}  # dry-run: nothing changed
    [it] = iterations()
    assert it["dry_run"] == 1 and it["status"] == "success" and it["files_created"] == 1
    assert it["dagster_run_id"] == result.run_id
    observed = {tuple(e.asset_key.path) for e in result.get_asset_observation_events()}
    assert observed == {("dell", "media"), ("hp", "media")}
    assert result.get_asset_materialization_events() == []  # a dry run changes no folder
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 1 and checks[0].passed is False  # a file is missing on the HP
    assert lease_is_free("media")


def test_real_run_syncs_and_a_second_round_changes_nothing(roots):
    dell, hp = roots
    write(dell / "media" / "a" / "b.txt", "b")
    write(hp / "media" / "from-hp.txt", "h")
    assert run_job("media_dell_to_hp", REAL).success
    assert run_job("media_hp_to_dell", REAL).success
    assert snapshot(dell / "media") == snapshot(hp / "media")
    again = run_job("media_dell_to_hp", REAL)
    checks = [e.event_specific_data for e in again.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks[0].passed is True
    assert [it["files_created"] for it in iterations()] == [2, 1, 0]


def test_held_lease_ends_the_run_skipped_and_successful(roots):
    from hasync_pipeline.settings import deployment
    from hasync_pipeline_tests.test_audit import make_opslog

    dell, hp = roots
    write(dell / "media" / "x", "x")
    logs = dell.parent / "logs"
    logs.mkdir()
    make_opslog(logs, "left-by-a-database-outage", 2)
    other = acquire_local(deployment().state_dir, "media", "someone/else", 60)
    instance = dg.DagsterInstance.ephemeral()
    result = run_job("media_dell_to_hp", REAL, instance)
    other.release()
    assert result.success
    assert instance.get_run_by_id(result.run_id).tags["ha-sync/skipped"] == "lease-held"
    assert any("held by someone/else" in r.user_message for r in instance.all_logs(result.run_id))
    assert snapshot(hp / "media") == {}
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert {"walk", "plan", "cleanup"} <= skipped
    assert [it["run_id"] for it in iterations()] == ["left-by-a-database-outage"]  # a skipped run cleans up too
    assert list(logs.glob("opslog-*")) == []


def test_already_current_dry_run_is_skipped_with_the_seed_message(roots):
    dell, _ = roots
    write(dell / "media" / "x", "x")
    instance = dg.DagsterInstance.ephemeral()
    assert run_job("media_dell_to_hp", instance=instance).success
    second = run_job("media_dell_to_hp", instance=instance)
    assert second.success
    assert instance.get_run_by_id(second.run_id).tags["ha-sync/skipped"] == "dry-run-current"
    messages = [r.user_message for r in instance.all_logs(second.run_id)]
    assert any("Dry-run already current as of" in m and "Nothing has changed." in m for m in messages)
    assert len(iterations()) == 1
    assert lease_is_free("media")


def test_a_failing_run_releases_the_lease_records_failure_and_alerts_once(roots, monkeypatch, received):
    dell, hp = roots
    write(dell / "media" / "x", "x")
    os.rmdir(hp / "media")  # the HP volume is not mounted
    monkeypatch.setenv("HA_SYNC_DAGSTER_URL", "https://dagster.example/")
    instance = dg.DagsterInstance.ephemeral()
    result = run_job("media_dell_to_hp", REAL, instance)
    assert not result.success
    assert lease_is_free("media")
    [it] = iterations()
    assert it["status"] == "failed" and "does not exist (is the volume mounted?)" in it["error_message"]
    sensor = defs.resolve_sensor_def("ha_sync_failure_alert")
    [failure] = [r.dagster_event for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
    for _ in range(2):  # the second failure within the hour is not alerted again
        ctx = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"ha_sync": ha_sync},
        )
        sensor(ctx.for_run_failure())
    assert len(received) == 1
    assert received[0]["key"] == "media" and "media_dell_to_hp failed" in received[0]["subject"]
    text = received[0]["text"]  # says which step failed, why, and where to look
    assert "Step walk:" in text and "does not exist (is the volume mounted?)" in text
    assert f"https://dagster.example/runs/{result.run_id}" in text


def test_partial_failure_fails_the_run_after_recording_everything(roots):
    dell, hp = roots
    os.mkfifo(dell / "media" / "a-fifo")
    write(dell / "media" / "fine", "ok")
    result = run_job("media_dell_to_hp", REAL)
    assert not result.success
    assert (hp / "media" / "fine").exists()
    [it] = iterations()
    assert it["status"] == "partial_failure" and it["files_created"] == 1
    assert "a-fifo: special file" in it["error_message"]
    assert lease_is_free("media")


@pytest.mark.slow
def test_a_conflict_keeps_both_versions_named_after_the_servers_and_the_run_says_so(roots):
    dell, hp = roots
    write(dell / "media" / "doc.txt", "first", 1_700_000_000)
    assert run_job("media_dell_to_hp", REAL).success and run_job("media_hp_to_dell", REAL).success
    write(dell / "media" / "doc.txt", "dell's edit", 1_700_000_100)
    write(hp / "media" / "doc.txt", "hp's edit, newer", 1_700_000_200)
    instance = dg.DagsterInstance.ephemeral()
    result = run_job("media_dell_to_hp", REAL, instance)
    assert result.success
    assert instance.get_run_by_id(result.run_id).tags["ha-sync/conflicts"] == "1"
    assert any("CONFLICT doc.txt" in r.user_message for r in instance.all_logs(result.run_id))
    assert run_job("media_hp_to_dell", REAL).success and run_job("media_dell_to_hp", REAL).success
    assert snapshot(dell / "media") == snapshot(hp / "media")
    [copy] = (hp / "media").glob("doc.sync-conflict-*-dell.txt")
    assert copy.read_text() == "dell's edit" and (hp / "media" / "doc.txt").read_text() == "hp's edit, newer"
    assert iterations()[2]["files_conflicted"] == 1


def test_freshness_sensor_alerts_on_pairs_without_a_recent_success(roots, monkeypatch):
    from hasync_pipeline.pairs import load_registry
    from hasync_pipeline.pipeline.sensors import stale_pairs

    assert run_job("games_dell_to_hp", REAL).success
    stale = stale_pairs(load_registry(), AuditStore(), datetime.now(UTC), intervals=4)
    assert [s.split()[0] for s in stale] == ["media", "photos", "owncloud", "infra", "ai"]
    later = datetime.now(UTC).replace(year=datetime.now().year + 1)
    assert "games" in " ".join(stale_pairs(load_registry(), AuditStore(), later, intervals=4))


def test_freshness_alerts_wait_one_window_after_deploy_cover_scheduled_pairs_and_survive_a_restart(
    roots, monkeypatch, received
):
    """On a fresh deploy every pair was 'never synced': it once alerted them all at once.  The rate limit
    lived in a file of the daemon's pod; it now lives in the audit database, so a restart does not repeat
    alerts."""
    from hasync_pipeline.pipeline.alerts import AuditAlertLog

    monkeypatch.setenv("HA_SYNC_SCHEDULED_PAIRS", "media,photos")
    sensor = defs.resolve_sensor_def("ha_sync_freshness")
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"ha_sync": ha_sync})
        first = sensor(ctx)
        assert "first interval" in first.skip_message and received == []  # just deployed: no alert
        hour_ago = datetime.now(UTC).timestamp() - 3600
        watched = json.dumps({pair: hour_ago for pair in PAIRS})  # an hour later (4 x 15 min have passed)
        result = sensor(dg.build_sensor_context(instance=instance, cursor=watched, resources={"ha_sync": ha_sync}))
        assert result.skip_message.startswith("stale: media (last success: never), photos")
        assert "alerted: media, photos" in result.skip_message
        assert sorted(r["key"] for r in received) == ["stale:media", "stale:photos"]  # scheduled pairs only
        AuditAlertLog.memory.clear()  # the daemon's pod restarted: its process memory is gone
        again = sensor(dg.build_sensor_context(instance=instance, cursor=watched, resources={"ha_sync": ha_sync}))
        assert "no alert sent" in again.skip_message and len(received) == 2


@pytest.mark.slow
def test_sides_agree_runs_on_its_own_with_the_pair_s_settings(roots, tmp_path, monkeypatch):
    """The check a user runs from the UI (no sync run around it) walks both folders with the pair's excludes:
    a file excluded on one side only is not a disagreement; a file on one side only is."""
    from hasync_pipeline.pairs import load_registry
    from hasync_pipeline.pipeline.factory import build_sides_agree_check, folder_specs

    dell, hp = roots
    pairs = tmp_path / "pairs.toml"
    pairs.write_text('[pairs.media]\ndescription = "Movies"\n[pairs.media.settings]\nexclude = ["*.part"]\n')
    monkeypatch.setenv("HA_SYNC_PAIRS_FILE", str(pairs))
    registry = load_registry()
    media = registry.get("media")
    check_job = dg.define_asset_job("check_media", selection=dg.AssetSelection.all_asset_checks())
    check_defs = dg.Definitions(
        assets=folder_specs(registry, media),
        asset_checks=[build_sides_agree_check(registry, media)],
        jobs=[check_job],
        resources={"ha_sync": ha_sync},
    )

    def evaluation() -> dg.AssetCheckEvaluation:
        with dg.instance_for_test() as instance:
            result = check_defs.resolve_job_def("check_media").execute_in_process(instance=instance)
            [only] = result.get_asset_check_evaluations()
            return only

    for side in (dell, hp):
        write(side / "media" / "film.mkv", "frames")
        os.utime(side / "media" / "film.mkv", (1_700_000_000, 1_700_000_000))
    write(dell / "media" / "film.mkv.part", "half a download")  # excluded by the pair's settings
    assert evaluation().passed
    write(hp / "media" / "only-here.txt", "new")
    failed = evaluation()
    assert not failed.passed and failed.metadata["hp_files"].value == 2 and failed.metadata["dell_files"].value == 1


def test_the_deployment_resource_names_its_variables_and_the_launchpad_can_override_one(roots, tmp_path, monkeypatch):
    """The UI's resource page shows which HA_SYNC_* variables runs read (names, never values: the DSN holds a
    password); a run whose launchpad sets the resource's hp_root syncs into that folder."""
    from hasync_pipeline.pipeline.deployment import HaSyncDeployment

    monkeypatch.setenv("HA_SYNC_DB_DSN", "mysql+pymysql://ha:hunter2secret@db.example/ha_sync")
    shown = HaSyncDeployment.from_environment().data  # what the resource page lists
    assert shown["db_dsn"] == dg.EnvVar("HA_SYNC_DB_DSN") and shown["log_dir"] == dg.EnvVar("HA_SYNC_LOG_DIR")
    assert isinstance(shown["db_dsn"], dg.EnvVar) and "hunter2secret" not in repr(shown)
    monkeypatch.delenv("HA_SYNC_DB_DSN")

    dell, hp = roots
    write(dell / "media" / "film.mkv", "frames")
    elsewhere = tmp_path / "other-hp"
    (elsewhere / "media").mkdir(parents=True)
    result = run_job("media_dell_to_hp", {**REAL, "resources": {"ha_sync": {"config": {"hp_root": str(elsewhere)}}}})
    assert result.success
    assert (elsewhere / "media" / "film.mkv").read_text() == "frames" and snapshot(hp / "media") == {}


def test_audit_maintenance_job_runs(roots):
    assert run_job("audit_maintenance").success


def media_dell_to_hp() -> dg.JobDefinition:
    """For dg.reconstructable: re-execution loads the job again by name."""
    return defs.get_job_def("media_dell_to_hp")


@pytest.mark.slow
def test_re_execute_from_failure_finishes_the_sync_with_one_audit_iteration_per_attempt(roots, monkeypatch, tmp_path):
    """The lease and the opslog live in the run's resource, not in the first run's process: a re-execution
    (a new run that skips the steps that succeeded) rebuilds them and does what is left."""
    from hasync_pipeline.engine.ports import LeaseLost
    from hasync_pipeline.engine.session import SyncSession

    dell, hp = roots
    for i in range(5):
        write(dell / "media" / f"f{i}", f"{i}")
    real_apply = SyncSession.apply

    def lease_taken_over(self, index):
        raise LeaseLost("ha-sync-media was taken over by someone/else")

    monkeypatch.setattr(SyncSession, "apply", lease_taken_over)
    with dg.instance_for_test() as instance:
        first = dg.execute_job(dg.reconstructable(media_dell_to_hp), instance, run_config=REAL)
        assert not first.success
        failed_steps = {e.step_key for e in first.all_events if e.event_type_value == "STEP_FAILURE"}
        assert failed_steps == {"apply_batch_op[batch_0000]"}
        assert snapshot(hp / "media") == {} and lease_is_free("media")
        monkeypatch.setattr(SyncSession, "apply", real_apply)  # the cause is fixed
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        second = dg.execute_job(dg.reconstructable(media_dell_to_hp), instance, reexecution_options=options)
        assert second.success
        ran = {e.step_key for e in second.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert "acquire_lease" not in ran and "apply_batch_op[batch_0000]" in ran  # it really re-executed
    assert snapshot(hp / "media") == snapshot(dell / "media")
    assert [(it["status"], it["files_created"]) for it in iterations()] == [("failed", 0), ("success", 5)]
    assert lease_is_free("media")


def test_a_step_that_fails_ends_the_sync_and_later_batches_do_not_start_another(roots, monkeypatch):
    """Batch 0 raising must not let batch 1 (which Dagster still runs) build a new session - take the lease,
    walk and apply everything again; the one audit iteration names the failed step."""
    from hasync_pipeline.engine import session as session_module

    dell, hp = roots
    for i in range(4):
        write(dell / "media" / f"f{i}", f"{i}")
    real_split, real_apply = session_module.split_batches, session_module.SyncSession.apply
    monkeypatch.setattr(session_module, "split_batches", lambda ops, _max_ops, max_bytes: real_split(ops, 2, max_bytes))
    applied = []

    def first_batch_breaks(self, index):
        if index == 0:
            raise RuntimeError("the staging folder vanished")
        applied.append(index)
        return real_apply(self, index)

    monkeypatch.setattr(session_module.SyncSession, "apply", first_batch_breaks)
    result = run_job("media_dell_to_hp", REAL)
    assert not result.success
    failures = {e.step_key: str(e.event_specific_data.error.cause) for e in result.all_events if e.is_step_failure}
    assert set(failures) >= {"apply_batch_op[batch_0000]", "apply_batch_op[batch_0001]"}
    assert "an earlier step failed" in failures["apply_batch_op[batch_0001]"]
    assert applied == [] and snapshot(hp / "media") == {}
    assert [(it["status"], "apply_batch_op[batch_0000]" in it["error_message"]) for it in iterations()] == [
        ("failed", True)
    ]
    assert lease_is_free("media")


@pytest.mark.slow
def test_a_step_retry_after_a_failure_starts_the_sync_again_and_finishes_it(roots, monkeypatch):
    """A retried step (a RetryPolicy a user adds) is the one step allowed to start a new session after its own
    failure ended the first: one failed and one successful audit iteration, the destination in sync."""
    from hasync_pipeline.engine import session as session_module
    from hasync_pipeline.pipeline.factory import sync_graph
    from hasync_pipeline.pipeline.resources import SyncRun

    dell, hp = roots
    for i in range(3):
        write(dell / "media" / f"f{i}", f"{i}")
    real_apply, calls = session_module.SyncSession.apply, []

    def fails_once(self, index):
        calls.append(index)
        if len(calls) == 1:
            raise RuntimeError("a transient fault")
        return real_apply(self, index)

    monkeypatch.setattr(session_module.SyncSession, "apply", fails_once)
    job = sync_graph.to_job(
        name="media_dell_to_hp",
        tags=dict(defs.get_job_def("media_dell_to_hp").tags),
        executor_def=dg.in_process_executor,
        resource_defs={"sync": SyncRun(ha_sync=ha_sync), "ha_sync": ha_sync},
        op_retry_policy=dg.RetryPolicy(max_retries=1),
    )
    result = job.execute_in_process(run_config=REAL, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    assert snapshot(hp / "media") == snapshot(dell / "media")
    assert [it["status"] for it in iterations()] == ["failed", "success"]
    assert lease_is_free("media")


def test_partitions_start_on_a_fixed_day_that_every_process_agrees_on(monkeypatch):
    from hasync_pipeline.pairs import load_registry
    from hasync_pipeline.pipeline.factory import build_all
    from hasync_pipeline.settings import SettingError

    [first_job, *_] = build_all(load_registry())[0]
    assert first_job.partitions_def.get_first_partition_key() == "2026-12-01-00:00"  # not "now" at load
    monkeypatch.setenv("HA_SYNC_PARTITIONS_START", "2026-11-30")
    [first_job, *_] = build_all(load_registry())[0]
    assert first_job.partitions_def.get_first_partition_key() == "2026-11-30-00:00"
    monkeypatch.setenv("HA_SYNC_PARTITIONS_START", "last tuesday")
    with pytest.raises(SettingError, match="HA_SYNC_PARTITIONS_START: 'last tuesday' is not a day"):
        build_all(load_registry())


def test_a_backfill_syncs_once_and_the_windows_a_later_run_covered_end_at_once_as_superseded(roots):
    dell, hp = roots
    write(dell / "media" / "a", "a")
    job = defs.get_job_def("media_dell_to_hp")
    *older, newest = job.partitions_def.get_partition_keys()[-3:]
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(run_config=REAL, instance=instance, partition_key=newest)
    assert result.success and (hp / "media" / "a").exists()
    for key in older:  # what a backfill over the last three windows also asks for
        result = job.execute_in_process(run_config=REAL, instance=instance, partition_key=key)
        assert result.success
        tags = instance.get_run_by_id(result.run_id).tags
        assert tags["ha-sync/skipped"] == "superseded" and tags["ha-sync/mode"] == "real"
        assert any("is already covered by run" in r.user_message for r in instance.all_logs(result.run_id))
    assert len(iterations()) == 1  # one sync, not three
    assert lease_is_free("media")


def test_a_real_run_materializes_its_destination_with_the_content_as_data_version(roots):
    from hasync_pipeline.engine.fingerprint import fingerprint
    from hasync_pipeline.engine.walk import walk_tree

    dell, hp = roots
    write(dell / "media" / "a.txt", "a")
    instance = dg.DagsterInstance.ephemeral()
    versions = []
    for _ in range(2):  # a sync, then a run with nothing to do: the same content, the same version
        result = run_job("media_dell_to_hp", REAL, instance)
        [event] = result.get_asset_materialization_events()
        materialization = event.step_materialization_data.materialization
        assert tuple(materialization.asset_key.path) == ("hp", "media")
        versions.append(materialization.tags["dagster/data_version"])
    assert versions[0] == versions[1] == fingerprint(walk_tree(str(hp / "media")))
    first_run = instance.get_runs(limit=2)[-1].run_id
    messages = [r.user_message for r in instance.all_logs(first_run)]  # the batch's progress, said once at its end
    assert "1/1 operations done (0 failed), 1 B of 1 B copied" in messages
    assert instance.get_latest_materialization_event(dg.AssetKey(["hp", "media"])) is not None
    specs = {tuple(spec.key.path): spec for spec in defs.resolve_all_asset_specs()}
    assert specs[("hp", "media")].freshness_policy is not None  # the UI shows fresh or stale


def test_the_alert_rate_limit_lives_in_the_audit_database_and_holds_while_it_is_dead(roots, received):
    from hasync_pipeline.pipeline.alerts import Alerter, AuditAlertLog
    from hasync_pipeline.settings import deployment

    alerter = Alerter.from_settings(deployment())
    assert alerter.send("media", "HA Sync: media failed", "first")
    assert AuditStore().alert_sent_at("media") is not None  # in the database, not only in this process
    AuditAlertLog.memory.clear()  # a restarted daemon
    assert not alerter.send("media", "HA Sync: media failed", "again, within the hour")
    assert alerter.send("media", "later", "an hour on", now=datetime.now(UTC).timestamp() + 3601)
    dead = Alerter(AuditAlertLog("mysql+pymysql://ha:secret@127.0.0.1:9/audit", 1.0), webhook=alerter.webhook)
    assert dead.send("audit-db", "HA Sync: audit database unavailable", "down")  # a dead database: still sent
    assert not dead.send("audit-db", "HA Sync: audit database unavailable", "down")  # ...once, not every tick
    assert [r["key"] for r in received] == ["media", "media", "audit-db"]
