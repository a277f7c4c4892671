"""Alembic's environment: always handed an open connection by hasync_pipeline.audit.migrate."""

from alembic import context

from hasync_pipeline.audit.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
