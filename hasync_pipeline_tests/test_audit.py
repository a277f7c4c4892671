"""The audit trail against a real MariaDB server and SQLite: schema, flush exactly once, dead database,
crashed runs, corrupt files, odd paths, dry-run idempotency, retention."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from hasync_pipeline.audit import (
    AuditStore,
    AuditUnavailable,
    decode_path,
    encode_path,
    expire_old,
    expire_old_and_warn,
    flush_file,
    flush_pending,
)
from hasync_pipeline.audit.opslog import OpslogWriter, read_opslog
from hasync_pipeline.audit.schema import sync_iterations, sync_operations
from hasync_pipeline.devtools.mariadb import PASSWORD
from hasync_pipeline_tests.conftest import options, pair_args, run_cli, synced, write, write_deep

SEED_DDL = Path(__file__).parent / "data" / "seed_schema.sql"
T0 = time.time() - 10_000


def rows(dsn: str, table, *where):
    store = AuditStore(dsn)
    store.ensure_schema()
    with store.engine.connect() as conn:
        result = [r._asdict() for r in conn.execute(select(table).where(*where).order_by(table.c.id))]
    store.dispose()
    return result


def cli_sync(src, dest, logs, dsn, *extra, pair="media"):
    return run_cli(
        *pair_args(src, dest, pair),
        "--direction",
        "dell-to-hp",
        "--log-dir",
        str(logs),
        "--db-dsn",
        dsn,
        "--no-dry-run",
        *extra,
    )


# ---- schema --------------------------------------------------------------------------------------


def _describe(conn, db: str):
    cols = conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA "
            "FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = :db ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ),
        {"db": db},
    ).all()
    idx = conn.execute(
        text(
            "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = :db ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
        ),
        {"db": db},
    ).all()
    fks = conn.execute(
        text(
            "SELECT CONSTRAINT_NAME, TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
            "FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL"
        ),
        {"db": db},
    ).all()
    return set(map(tuple, cols)), set(map(tuple, idx)), set(map(tuple, fks))


def test_mysql_schema_is_the_seed_ddl_plus_documented_nullable_columns_and_indexes(mariadb):
    seed_db, ours_db = mariadb.new_database(), mariadb.new_database()
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(f"USE {seed_db}")
        for statement in SEED_DDL.read_text().split(";"):
            if statement.strip():
                cur.execute(statement)
    store = AuditStore(mariadb.go_dsn(ours_db))
    store.ensure_schema()
    with store.engine.connect() as conn:
        seed_cols, seed_idx, seed_fks = _describe(conn, seed_db)
        our_cols, our_idx, our_fks = _describe(conn, ours_db)
    store.dispose()
    ours_only = ("alembic_version", "sync_checks", "feed_tips", "alerts_sent")  # Alembic's; the documented extras
    extra_cols = {c for c in our_cols - seed_cols if c[0] not in ours_only}
    checks = {(c[1], c[3]) for c in our_cols if c[0] == "sync_checks"}
    assert checks == {("sync_pair", "NO"), ("direction", "NO"), ("checked_at", "NO"), ("iteration_id", "YES")}
    tips = {(c[1], c[3]) for c in our_cols if c[0] == "feed_tips"}
    assert tips == {(name, "NO") for name in ("server", "sync_pair", "epoch", "seq", "updated_at")} | {
        ("pending_since", "YES")
    }
    assert {(c[1], c[3]) for c in our_cols if c[0] == "alerts_sent"} == {("alert_key", "NO"), ("sent_at", "NO")}
    assert seed_cols <= our_cols  # every seed column, with the same type, nullability, default, extra
    assert {(c[1], c[3]) for c in extra_cols} == {
        ("run_id", "YES"),
        ("dagster_run_id", "YES"),
        ("files_conflicted", "YES"),
        ("reason", "YES"),
    }
    extra_idx = {i[1] for i in our_idx - seed_idx if i[0] not in ours_only}
    assert seed_idx <= our_idx and extra_idx == {"uq_run_id", "idx_pair_dry_started"}
    assert seed_fks == our_fks


def test_sqlite_schema_has_the_tables_indexes_and_foreign_key(tmp_path):
    store = AuditStore(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    store.ensure_schema()
    insp = inspect(store.engine)
    assert {i["name"] for i in insp.get_indexes("sync_iterations")} == {
        "idx_pair",
        "idx_started",
        "idx_dry_run",
        "uq_run_id",
        "idx_pair_dry_started",
    }
    assert {i["name"] for i in insp.get_indexes("sync_operations")} == {"idx_iteration"}
    assert insp.get_foreign_keys("sync_operations")[0]["referred_table"] == "sync_iterations"


# ---- real runs -----------------------------------------------------------------------------------


def test_a_run_is_recorded_truthfully(pair, tmp_path, db_dsn):
    dell, hp = pair
    write(dell / "same", "same bytes", T0)
    write(dell / "gone", "g")
    write(dell / "keep1", "k", T0)
    synced(dell, hp)  # known to both sides, then changed on the dell
    write(dell / "new.txt", "new")
    write(dell / "dir" / "f", "f")
    os.utime(dell / "same", (T0 + 100, T0 + 100))
    os.remove(dell / "gone")
    proc = cli_sync(dell, hp, tmp_path / "logs", db_dsn, "--delete-missing", "--max-delete", "100")
    assert proc.returncode == 0, proc.stderr
    [it] = rows(db_dsn, sync_iterations)
    assert (
        it["status"],
        it["dry_run"],
        it["files_created"],
        it["files_updated"],
        it["files_deleted"],
        it["files_skipped"],
        it["files_failed"],
    ) == ("success", 0, 3, 1, 1, 1, 0)
    assert it["total_bytes_transferred"] == 4 and it["src"] == str(dell) and it["direction"] == "dell-to-hp"
    assert it["started_at"] <= it["ended_at"] and it["started_at"].microsecond % 1000 == 0
    ops = {op["filepath"]: op for op in rows(db_dsn, sync_operations)}
    assert set(ops) == {"new.txt", "dir", "dir/f", "same", "gone"}
    assert ops["same"]["md5_before"] == ops["same"]["md5_after"] is not None  # computed: settled by MD5
    assert ops["new.txt"]["md5_before"] is None and ops["new.txt"]["size_after"] == 3
    assert ops["gone"]["operation"] == "delete" and ops["gone"]["size_before"] == 1
    assert all(op["status"] == "success" and op["iteration_id"] == it["id"] for op in ops.values())
    assert list((tmp_path / "logs").glob("opslog-*")) == []  # flushed, then deleted


def test_conflicts_are_recorded_with_their_reason_and_exit_7(pair, tmp_path, db_dsn):
    dell, hp = pair
    write(dell / "clash", "file", T0 + 100)
    write(hp / "clash" / "inner", "dir", T0)
    os.utime(hp / "clash", (T0, T0))
    write(dell / "ok", "ok")
    proc = cli_sync(dell, hp, tmp_path / "logs", db_dsn)
    assert proc.returncode == 7, proc.stderr
    assert "CONFLICT clash" in proc.stdout
    [it] = rows(db_dsn, sync_iterations)
    assert it["status"] == "success" and it["files_conflicted"] == 1 and it["files_failed"] == 0
    reasons = {op["filepath"]: op["reason"] for op in rows(db_dsn, sync_operations)}
    assert reasons["clash"].startswith("conflict: ") and reasons["ok"] is None
    assert (hp / "clash").read_text() == "file"
    [renamed] = [p for p in os.listdir(hp) if p.startswith("clash.sync-conflict-")]
    assert (hp / renamed / "inner").read_text() == "dir"


def test_entries_that_cannot_be_synced_make_a_partial_failure(pair, tmp_path, db_dsn):
    dell, hp = pair
    write(dell / "ok", "ok")
    os.mkfifo(dell / "a-fifo")
    proc = cli_sync(dell, hp, tmp_path / "logs", db_dsn)
    assert proc.returncode == 3, proc.stderr
    [it] = rows(db_dsn, sync_iterations)
    assert it["status"] == "partial_failure" and it["files_created"] == 1
    assert "a-fifo: special file" in it["error_message"]


def test_refusal_is_recorded_as_failed_with_the_reason(tmp_path, db_dsn):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "full" / "precious", "p")
    assert cli_sync(tmp_path / "empty", tmp_path / "full", tmp_path / "logs", db_dsn).returncode == 4
    [it] = rows(db_dsn, sync_iterations)
    assert it["status"] == "failed" and "refused" in it["error_message"] and "empty" in it["error_message"]


def test_non_utf8_and_4096_character_paths_round_trip(pair, tmp_path, db_dsn):
    dell, hp = pair
    odd = b"caf\xe9-\xff.txt"
    write(os.path.join(os.fsencode(dell), odd), "latin-1 name")
    dirs = [f"{i:02d}" + "x" * 128 for i in range(31)]  # 31 x 130 + 31 slashes = 4061 characters
    exact, longer = "e" * 35, "l" * 36  # -> paths of 4096 and 4097 characters
    write_deep(dell, dirs + [exact], b"exactly 4096")
    write_deep(dell, dirs + [longer], b"one more")
    assert cli_sync(dell, hp, tmp_path / "logs", db_dsn).returncode == 0
    paths = [op["filepath"] for op in rows(db_dsn, sync_operations)]
    [stored] = [p for p in paths if p.startswith("hasync-pct:")]
    assert decode_path(stored) == odd
    assert "/".join(dirs + [exact]) in paths  # exactly 4096 characters: stored whole
    assert "/".join(dirs + [longer])[:4093] + "..." in paths  # longer: cut, and marked as cut


def test_path_encoding_is_reversible_and_unambiguous():
    for raw in (b"plain/path", "ünï/日本".encode(), b"\xff\xfe", b"hasync-pct:literal", b"100% sure", b"a\nb"):
        assert decode_path(encode_path(raw)) == raw
    assert encode_path(b"plain") == "plain"


# ---- the database going away ---------------------------------------------------------------------


def dead_dsn() -> str:
    from hasync_pipeline.devtools.mariadb import free_port

    return f"u:{PASSWORD}@tcp(127.0.0.1:{free_port()})/nothing"


@pytest.mark.slow
def test_database_down_at_start_the_sync_completes_and_the_next_run_flushes_once(pair, tmp_path, db_dsn):
    dell, hp = pair
    logs = tmp_path / "logs"
    write(dell / "a", "a")
    proc = cli_sync(dell, hp, logs, dead_dsn())
    assert proc.returncode == 0, proc.stderr
    assert (hp / "a").read_text() == "a"
    assert "unavailable" in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    [kept] = list(logs.glob("opslog-*.jsonl"))
    write(dell / "b", "b")
    assert cli_sync(dell, hp, logs, db_dsn).returncode == 0
    its = rows(db_dsn, sync_iterations)
    assert [it["files_created"] for it in its] == [1, 1] and all(it["status"] == "success" for it in its)
    assert sorted(op["filepath"] for op in rows(db_dsn, sync_operations)) == ["a", "b"]
    assert not kept.exists()
    assert cli_sync(dell, hp, logs, db_dsn).returncode == 0  # nothing left to flush twice
    assert len(rows(db_dsn, sync_operations)) == 2


@pytest.mark.slow
def test_a_database_that_accepts_but_never_answers_costs_one_timeout_and_the_opslog_waits(pair, tmp_path):
    """It once held every run for two minutes (a 60 s read timeout, asked twice)."""
    dell, hp = pair
    write(dell / "a", "a")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept_and_stay_silent() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    dsn = f"u:{PASSWORD}@tcp(127.0.0.1:{listener.getsockname()[1]})/audit"
    try:
        proc = cli_sync(dell, hp, tmp_path / "logs", dsn, "--db-timeout", "1")
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stderr
    assert (hp / "a").read_text() == "a"
    assert len(accepted) == 1  # asked once, then the run went on without it
    assert "timed out" in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    assert len(list((tmp_path / "logs").glob("opslog-*.jsonl"))) == 1  # kept for the next run


def test_database_dying_mid_run_keeps_the_opslog_and_the_running_row_is_finished_later(pair, tmp_path, mariadb):
    from hasync_pipeline.audit import AuditTrail
    from hasync_pipeline.engine import SyncSession

    dell, hp = pair
    dsn = mariadb.go_dsn(mariadb.new_database())
    write(dell / "a", "a")
    store = AuditStore(dsn)
    trail = AuditTrail(
        store,
        str(tmp_path / "logs"),
        run_id="r-dies",
        pair="media",
        direction="x",
        src=str(dell),
        dest=str(hp),
        dry_run=False,
    )
    session = SyncSession(str(dell), str(hp), options(), "r-dies", trail=trail)
    session.preflight()
    session.walk()
    for batch in range(session.plan()):
        session.apply(batch)
    assert [r["status"] for r in rows(dsn, sync_iterations)] == ["running"]  # live row while running
    mariadb.stop_server()
    try:
        assert session.finish().status == "success"
        assert any("unavailable" in w for w in trail.warnings)
    finally:
        mariadb.start_server()
        session.close()
    store.dispose()
    outcomes, error = flush_pending(AuditStore(dsn), str(tmp_path / "logs"))
    assert error is None and [o.written for o in outcomes] == [True]
    [it] = rows(dsn, sync_iterations)
    assert it["status"] == "success" and it["files_created"] == 1
    assert len(rows(dsn, sync_operations)) == 1


def test_wrong_password_error_never_shows_the_password(mariadb):
    dsn = mariadb.go_dsn(mariadb.new_database()).replace(PASSWORD, "Secret-Wrong-9")
    with pytest.raises(AuditUnavailable) as info:
        AuditStore(dsn).ensure_schema()
    assert "Secret-Wrong-9" not in str(info.value) and "***" in str(info.value)
    assert "Access denied" in str(info.value)


# ---- flushing: exactly once ----------------------------------------------------------------------


def make_opslog(log_dir: Path, run_id: str, ops: int, summary: bool = True, pair: str = "media") -> str:
    header = {
        "run_id": run_id,
        "pair": pair,
        "direction": "dell-to-hp",
        "src": "/mnt/dell/media",
        "dest": "/mnt/hp/media",
        "started_at": "2026-11-01T10:00:00.123Z",
        "dry_run": 0,
    }
    writer = OpslogWriter(str(log_dir), {**header, "started_at": f"2026-11-01T10:00:{len(run_id) % 60:02d}.123Z"})
    op = {
        "type": "op",
        "dry_run": 0,
        "operation": "create",
        "size_before": None,
        "size_after": 10,
        "md5_before": None,
        "md5_after": None,
        "started_at": "2026-11-01T10:00:01.000Z",
        "ended_at": "2026-11-01T10:00:01.500Z",
        "status": "success",
        "error_message": None,
        "bytes": 10,
    }
    for i in range(ops):
        writer._line({**op, "filepath": f"dir/file{i:06d}"})
    writer.close(
        {
            "ended_at": "2026-11-01T10:05:00.000Z",
            "status": "success",
            "files_created": ops,
            "files_updated": 0,
            "files_deleted": 0,
            "files_skipped": 0,
            "files_failed": 0,
            "total_bytes_transferred": 10 * ops,
            "error_message": None,
        }
        if summary
        else None
    )
    return writer.path


def test_flushing_the_same_file_twice_never_duplicates(tmp_path, db_dsn):
    path = make_opslog(tmp_path, "run-twice", 50)
    copy = str(tmp_path / "copy")
    shutil.copy(path, copy)
    store = AuditStore(db_dsn)
    assert flush_file(store, path).written
    os.rename(copy, path)  # as if the process died after commit, before deleting the file
    outcome = flush_file(store, path)
    assert not outcome.written and not os.path.exists(path)
    assert len(rows(db_dsn, sync_iterations)) == 1 and len(rows(db_dsn, sync_operations)) == 50


def _flush_in_child(dsn: str, path: str, go_fd: int) -> int:
    pid = os.fork()
    if pid == 0:
        os.read(go_fd, 1)  # both children start together
        try:
            outcome = flush_file(AuditStore(dsn), path)
            os._exit(10 if outcome.written else 11)
        except BaseException:  # noqa: BLE001
            os._exit(12)
    return pid


def test_two_concurrent_flushes_of_one_file_insert_it_once(tmp_path, db_dsn):
    path = make_opslog(tmp_path, "run-race", 2000)
    copy = tmp_path / "second-copy"
    shutil.copy(path, copy)
    r, w = os.pipe()
    pids = [_flush_in_child(db_dsn, path, r), _flush_in_child(db_dsn, path, r)]
    os.write(w, b"gg")
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
    assert 12 not in codes and codes.count(10) == 1
    # and a stale copy of the same run, flushed later, is recognised too
    os.rename(copy, path)
    assert not flush_file(AuditStore(db_dsn), path).written
    assert len(rows(db_dsn, sync_iterations)) == 1 and len(rows(db_dsn, sync_operations)) == 2000


@pytest.mark.slow
def test_killed_mid_flush_rolls_back_and_reflushes_clean(tmp_path, mariadb):
    dsn = mariadb.go_dsn(mariadb.new_database())
    AuditStore(dsn).ensure_schema()
    path = make_opslog(tmp_path, "run-killed", 150_000)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from hasync_pipeline.audit import AuditStore, flush_file;"
            "flush_file(AuditStore(sys.argv[1]), sys.argv[2])",
            dsn,
            path,
        ]
    )
    deadline = time.monotonic() + 60
    with mariadb.root() as conn, conn.cursor() as cur:
        while True:  # wait until its INSERTs into sync_operations are under way
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO sync_operations%'"
            )
            if cur.fetchone()[0]:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the flush ended before it was seen"
            time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(path)
    assert rows(dsn, sync_iterations) == [] and AuditStore(dsn).count_operations() == 0  # rolled back
    assert flush_file(AuditStore(dsn), path).written
    assert AuditStore(dsn).count_operations() == 150_000


def test_crashed_run_file_becomes_a_failed_iteration(tmp_path, db_dsn):
    path = make_opslog(tmp_path, "run-crashed", 3, summary=False)
    with open(path, "a") as f:
        f.write('{"type":"op","dry_run":0,"operation":"cre')  # the writer died mid-line
    assert flush_file(AuditStore(db_dsn), path).written
    [it] = rows(db_dsn, sync_iterations)
    assert it["status"] == "failed" and it["files_created"] == 3
    assert "without a summary" in it["error_message"] and "cut off" in it["error_message"]
    assert len(rows(db_dsn, sync_operations)) == 3


def test_corrupt_file_is_quarantined_never_deleted(tmp_path, db_dsn):
    path = make_opslog(tmp_path, "run-corrupt", 3)
    lines = Path(path).read_text().splitlines()
    lines[2] = "{not json"
    Path(path).write_text("\n".join(lines) + "\n")
    outcome = flush_file(AuditStore(db_dsn), path)
    assert outcome.quarantined_to and "line 3" in outcome.error
    assert Path(outcome.quarantined_to).read_text().count("\n") == len(lines)
    assert rows(db_dsn, sync_iterations) == []


@pytest.mark.parametrize(
    "line, value",
    [
        (0, {"run_id": None}),  # a header without its run id
        (0, {"started_at": "yesterday"}),  # a start that is not a date
        (-1, {"ended_at": None}),  # a summary without its end
        (1, {"status": None}),  # an operation with no status
    ],
)
def test_valid_json_that_breaks_the_schema_is_quarantined_and_blocks_nothing(tmp_path, line, value):
    """Each of these once crashed every later run of every pair sharing the log folder."""
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    log_dir = tmp_path / "logs"
    bad = make_opslog(log_dir, "run-bad", 3)
    lines = [json.loads(x) for x in Path(bad).read_text().splitlines()]
    lines[line].update(value)
    Path(bad).write_text("".join(json.dumps(x) + "\n" for x in lines))
    make_opslog(log_dir, "run-good", 2)
    outcomes, db_error = flush_pending(AuditStore(dsn), str(log_dir))
    assert db_error is None
    [quarantined] = [o for o in outcomes if o.quarantined_to]
    assert os.path.exists(quarantined.quarantined_to) and not os.path.exists(bad)  # kept, out of the way
    assert "run-bad" not in str([r["run_id"] for r in rows(dsn, sync_iterations)])
    assert [r["run_id"] for r in rows(dsn, sync_iterations)] == ["run-good"]  # the other file went through
    assert flush_pending(AuditStore(dsn), str(log_dir)) == ([], None)  # and later runs are not bothered


def test_a_file_still_being_written_is_not_flushed(tmp_path, db_dsn):
    writer = OpslogWriter(
        str(tmp_path),
        {
            "run_id": "live",
            "pair": "media",
            "direction": "x",
            "src": "/a",
            "dest": "/b",
            "started_at": "2026-11-01T10:00:00.000Z",
            "dry_run": 0,
        },
    )
    pid = os.fork()  # another process (POSIX locks are per process)
    if pid == 0:
        outcome = flush_file(AuditStore(db_dsn), writer.path)
        os._exit(0 if outcome.skipped_live else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    writer.close(None)


def test_operation_records_reach_the_disk_in_bursts_of_at_most_256(tmp_path):
    """What a SIGKILLed run leaves behind: the header at once, then every completed burst of 256 records."""
    from hasync_pipeline.engine.plan import COPY, Op
    from hasync_pipeline.engine.walk import FILE, Entry
    from hasync_pipeline.engine.workers import OpResult

    writer = OpslogWriter(
        str(tmp_path),
        {
            "run_id": "burst",
            "pair": "media",
            "direction": "x",
            "src": "/a",
            "dest": "/b",
            "started_at": "2026-11-01T10:00:00.000Z",
            "dry_run": 0,
        },
    )

    def lines_on_disk() -> int:
        with open(writer.path, "rb") as f:  # another open file: sees only what reached the OS
            return f.read().count(b"\n")

    assert lines_on_disk() == 1
    now = time.time()
    for i in range(300):
        writer.record(
            OpResult(Op(COPY, b"f%d" % i, Entry(FILE, 1, 0, 0o644, 0, 0, 1, 0), None), True, None, 1, now, now)
        )
        if i == 254:
            assert lines_on_disk() == 1
        if i == 255:
            assert lines_on_disk() == 257
    assert lines_on_disk() == 257
    writer.close(None)
    assert lines_on_disk() == 301 and len(read_opslog(writer.path).rows) == 300


def test_old_opslogs_are_deleted_and_dropped_operations_counted(tmp_path):
    old = make_opslog(tmp_path, "old-run", 7)
    new = make_opslog(tmp_path, "new-run-x", 2)
    past = time.time() - 11 * 86400
    os.utime(old, (past, past))
    assert expire_old(str(tmp_path), 10) == (1, 7)
    assert not os.path.exists(old) and os.path.exists(new)
    assert expire_old_and_warn(str(tmp_path), 10) is None  # nothing old left
    os.utime(new, (past, past))
    assert expire_old_and_warn(str(tmp_path), 10) == (
        "deleted 1 opslogs older than 10 days that never reached the database: 2 operation records were dropped"
    )


def test_purge_operations_older_than_n_days(tmp_path, db_dsn):
    from datetime import datetime

    store = AuditStore(db_dsn)
    store.write_run(
        {
            "run_id": "p",
            "pair": "media",
            "direction": "x",
            "src": "/a",
            "dest": "/b",
            "started_at": "2026-01-01T00:00:00.000Z",
            "dry_run": 0,
        },
        read_opslog(make_opslog(tmp_path, "tmp", 25)).rows,
        {"status": "success"},
    )
    now = datetime(2026, 12, 15, tzinfo=UTC)  # the ops are from 2026-11-01
    assert store.purge_operations(older_than_days=60, now=now) == 0
    assert store.purge_operations(older_than_days=30, batch=10, now=now) == 25
    assert store.count_operations() == 0


# ---- dry-run idempotency -------------------------------------------------------------------------


@pytest.mark.slow
def test_dry_run_idempotency_both_ways(pair, tmp_path, db_dsn):
    dell, hp = pair
    logs = tmp_path / "logs"
    write(dell / "a", "a")
    first = cli_sync(dell, hp, logs, db_dsn, "--dry-run")
    assert first.returncode == 0 and "copy     a" in first.stdout
    second = cli_sync(dell, hp, logs, db_dsn, "--dry-run")
    assert second.returncode == 0
    assert "Dry-run already current as of " in second.stdout and "Nothing has changed." in second.stdout
    its = rows(db_dsn, sync_iterations)
    assert len(its) == 1 and its[0]["dry_run"] == 1
    assert all(op["dry_run"] == 1 for op in rows(db_dsn, sync_operations))
    assert not (hp / "a").exists()
    write(dell / "b", "b")  # a change on disk: the next dry-run writes again
    third = cli_sync(dell, hp, logs, db_dsn, "--dry-run")
    assert "already current" not in third.stdout
    assert len(rows(db_dsn, sync_iterations)) == 2
    # a real run is not affected by dry-run rows, and its rows say dry_run = 0
    assert cli_sync(dell, hp, logs, db_dsn).returncode == 0
    real = rows(db_dsn, sync_iterations, sync_iterations.c.dry_run == 0)
    assert len(real) == 1 and real[0]["files_created"] == 2
    # after the real run the would-be plan is empty: differs from the last dry-run, so written again
    assert "already current" not in cli_sync(dell, hp, logs, db_dsn, "--dry-run").stdout


def test_opslog_lines_carry_every_operation_field(pair, tmp_path):
    dell, hp = pair
    write(dell / "a", "abc")
    proc = cli_sync(dell, hp, tmp_path / "logs", "u:p@tcp(127.0.0.1:1)/x")  # dead DB: the file stays
    assert proc.returncode == 0
    [path] = (tmp_path / "logs").glob("opslog-media-dell-to-hp-*.jsonl")
    parsed = read_opslog(str(path))
    assert parsed.header["pair"] == "media" and parsed.summary["status"] == "success"
    op_line = json.loads(path.read_text().splitlines()[1])
    assert set(op_line) >= {c.name for c in sync_operations.columns} - {"id", "iteration_id"}
