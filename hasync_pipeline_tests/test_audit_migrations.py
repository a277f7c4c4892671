"""The audit schema reaches every database through Alembic: one made by the Go tool (the seed's exact DDL),
one made by the first wave's create_all(), a new one; all end at the same schema, rows kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from hasync_pipeline.audit import AuditStore, AuditUnavailable
from hasync_pipeline.audit.migrations import HEAD
from hasync_pipeline.audit.schema import metadata
from hasync_pipeline_tests.conftest import pair_args, run_cli, write
from hasync_pipeline_tests.test_audit import _describe

DATA = Path(__file__).parent / "data"
GO_ROW = (
    "INSERT INTO sync_iterations (sync_pair, direction, src, dest, started_at, status, dry_run) "
    "VALUES ('media', 'dell-to-hp', '/mnt/dell/media', '/mnt/hp/media', '2026-01-02 03:04:05.678', 'success', 0)"
)


def run_ddl(conn, path: Path) -> None:
    sql = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("--"))
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(text(statement))


def revision(dsn: str) -> str:
    engine = AuditStore(dsn).engine
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def test_head_is_alembic_head_and_a_new_database_matches_the_declared_tables(tmp_path):
    script = ScriptDirectory.from_config(_config())
    assert script.get_current_head() == HEAD
    store = AuditStore(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    store.ensure_schema()
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def _config() -> Config:
    import hasync_pipeline.audit.migrate as migrate

    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    return config


@pytest.mark.slow
def test_a_go_tool_database_is_upgraded_in_place_and_the_cli_flushes_into_it(mariadb, pair, tmp_path):
    """The issue's case: a general_db made with the seed's exact DDL.  The first run upgrades it, keeps the Go
    tool's rows, and its own opslog reaches the database (none left waiting)."""
    go_db, fresh_db = mariadb.new_database(), mariadb.new_database()
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(f"USE {go_db}")
        for statement in (DATA / "seed_schema.sql").read_text().split(";"):
            if statement.strip():
                cur.execute(statement)
        cur.execute(GO_ROW)
        conn.commit()
    dell, hp = pair
    write(dell / "a.txt", "a")
    logs = tmp_path / "logs"
    proc = run_cli(
        *pair_args(dell, hp, "media"),
        "--log-dir",
        str(logs),
        "--db-dsn",
        mariadb.go_dsn(go_db),
        "--no-dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert "unavailable" not in proc.stderr and list(logs.glob("opslog-*")) == []
    assert revision(mariadb.go_dsn(go_db)) == HEAD
    AuditStore(mariadb.go_dsn(fresh_db)).ensure_schema()
    engine = AuditStore(mariadb.go_dsn(go_db)).engine
    with engine.connect() as conn:
        assert _describe(conn, go_db) == _describe(conn, fresh_db)  # same columns, indexes, keys
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []  # = the declared tables
        rows = conn.execute(text("SELECT sync_pair, started_at, files_created FROM sync_iterations ORDER BY id")).all()
    assert [r.files_created for r in rows] == [0, 1] and str(rows[0].started_at) == "2026-01-02 03:04:05.678000"


@pytest.mark.slow
def test_a_first_wave_mysql_database_is_stamped_and_kept(mariadb):
    old_db, fresh_db = mariadb.new_database(), mariadb.new_database()
    engine = create_engine(AuditStore(mariadb.go_dsn(old_db)).url)
    with engine.begin() as conn:
        run_ddl(conn, DATA / "first_wave_schema_mysql.sql")
        conn.execute(text(GO_ROW))
    AuditStore(mariadb.go_dsn(old_db)).ensure_schema()
    AuditStore(mariadb.go_dsn(fresh_db)).ensure_schema()
    assert revision(mariadb.go_dsn(old_db)) == HEAD
    with engine.connect() as conn:
        assert _describe(conn, old_db) == _describe(conn, fresh_db)
        assert conn.execute(text("SELECT COUNT(*) FROM sync_iterations")).scalar() == 1


def test_a_first_wave_sqlite_database_is_stamped_and_kept(tmp_path):
    dsn = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(dsn)
    with engine.begin() as conn:
        run_ddl(conn, DATA / "first_wave_schema_sqlite.sql")
        conn.execute(text(GO_ROW))
    store = AuditStore(dsn)
    store.ensure_schema()
    assert revision(dsn) == HEAD
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.execute(text("SELECT COUNT(*) FROM sync_iterations")).scalar() == 1


@pytest.mark.slow
def test_a_database_that_cannot_be_altered_says_so(mariadb):
    """No ALTER privilege on a Go tool database: a clear message saying what to do, not 'unavailable'."""
    db = mariadb.new_database()
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(f"USE {db}")
        for statement in (DATA / "seed_schema.sql").read_text().split(";"):
            if statement.strip():
                cur.execute(statement)
        cur.execute("CREATE USER IF NOT EXISTS 'narrow'@'127.0.0.1' IDENTIFIED BY 'narrow-pw'")
        cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {db}.* TO 'narrow'@'127.0.0.1'")
    store = AuditStore(f"narrow:narrow-pw@tcp(127.0.0.1:{mariadb.port})/{db}")
    with pytest.raises(AuditUnavailable, match="schema could not be upgraded .*grant ALTER") as info:
        store.ensure_schema()
    assert "narrow-pw" not in str(info.value)
