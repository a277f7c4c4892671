"""Alembic migrations of the audit schema, applied at start by AuditStore.ensure_schema().

Revision 0001 is the seed's DDL (what the Go tool made); each later one is additive and nullable.  A database
made by the Go tool, or by this project before migrations existed (no alembic_version table), is upgraded in
place: each revision creates only what is missing.  HEAD is checked against Alembic's own idea of the head
by a test; the fast path compares it with the database's alembic_version without importing Alembic.
"""

HEAD = "0006"
