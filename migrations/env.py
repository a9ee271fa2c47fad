"""Alembic environment: where the migrations connect and what they compare against.

The database URL is, in order: a connection handed over in ``config.attributes["connection"]``
(used by tests and ``core.db.migrate``), the ``sqlalchemy.url`` main option of the Alembic
config, else ``core.settings.get_settings().database_url``. Plain ``postgresql://`` URLs are
normalised to psycopg 3. SQLite gets batch mode so that ALTERs work there too.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from core.db import migrate
from core.db.models import Base
from core.db.session import normalize_url
from core.settings import get_settings

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    # Keep the application's loggers alive when migrations run inside the service.
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return normalize_url(config.get_main_option("sqlalchemy.url") or get_settings().database_url)


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=dialect.startswith("sqlite"),
        compare_type=True,
        include_object=migrate.for_dialect(dialect.split("+")[0]),
        literal_binds=connection is None,
        dialect_opts={"paramstyle": "named"} if connection is None else {},
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) instead of running it."""
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
