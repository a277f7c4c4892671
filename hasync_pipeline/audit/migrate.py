"""Bring an audit database to the current schema with Alembic (the SQLAlchemy project's migration tool).

Called by AuditStore.ensure_schema() before the first use.  The fast path is two small queries (is there an
alembic_version, what does it say); Alembic is imported only when there is something to do.  On
MySQL/MariaDB a named lock (GET_LOCK) keeps two runs starting at once from migrating together (DDL commits
implicitly there); SQLite's BEGIN IMMEDIATE does the same."""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .migrations import HEAD

_LOCK_NAME, _LOCK_SECONDS = "ha_sync_schema_migration", 60


class MigrationError(Exception):
    """The schema could not be brought up to date (say, no ALTER privilege); the message says why."""


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None for a new database or one made before migrations existed."""
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, migrating: Callable[[], Engine] | None = None) -> None:
    """Upgrade to HEAD unless it is there already.  The check runs on `engine`; the upgrade itself on
    `migrating()` when given (a connection allowed to wait longer: an ALTER of a big table takes a while)."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD:
            return
    slow = migrating() if migrating is not None else engine
    try:
        _upgrade_on(slow)
    finally:
        if slow is not engine:
            slow.dispose()


def _upgrade_on(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", os.path.join(os.path.dirname(__file__), "migrations"))
    mysql = engine.dialect.name in ("mysql", "mariadb")
    with engine.begin() as conn:
        if mysql and not conn.execute(text("SELECT GET_LOCK(:n, :s)"), {"n": _LOCK_NAME, "s": _LOCK_SECONDS}).scalar():
            raise MigrationError(f"another process has been upgrading the audit schema for {_LOCK_SECONDS}s")
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        except (CommandError, SQLAlchemyError) as exc:  # e.g. no ALTER privilege
            raise MigrationError(str(getattr(exc, "orig", None) or exc)) from None
        finally:
            if mysql:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _LOCK_NAME})
