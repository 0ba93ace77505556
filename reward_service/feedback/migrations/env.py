"""Alembic environment: migrations run on the connection ``Database.migrate`` hands over.

A schema change is a new file in ``versions/`` (next number, ``down_revision`` the previous
one) beside the change to ``models.py``; ``tests/feedback/test_db.py`` fails until the two agree
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from alembic import context

from reward_service.feedback.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
