"""Alembic environment: runs on the connection the Store hands over (see Store.migrate)."""

from __future__ import annotations

from alembic import context

from bridge.store._tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
