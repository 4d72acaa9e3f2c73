"""Alembic revisions of the store (run by ../migrate.py; no env.py, no alembic.ini)."""
