"""Alembic migrations of the service's database schema (the only way the schema changes).

``core.db.migrate.upgrade`` runs them from code; ``alembic upgrade head`` at the repository
root runs them through ``alembic.ini``.
"""
