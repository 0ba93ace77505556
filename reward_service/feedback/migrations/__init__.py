"""Alembic migrations of the labeling database, applied by ``Database.migrate``."""
