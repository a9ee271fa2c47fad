"""Apply the Alembic migrations from code, from any working directory.

The Alembic config is built here rather than read from ``alembic.ini``: the migrations
package is found through its ``__file__``, so this works from an installed package too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool
from sqlalchemy.schema import SchemaItem

import migrations
from core.db.session import normalize_url
from core.settings import get_settings

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the migrations package and ``url`` (default: settings)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "file_template",
        "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s",
    )
    cfg.set_main_option("timezone", "UTC")
    db_url = normalize_url(url or get_settings().database_url)
    # ConfigParser interpolation: a literal "%" (URL-encoded passwords) must be doubled.
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    return cfg


def for_dialect(dialect: str) -> Callable[[SchemaItem, str | None, str, bool, Any], bool]:
    """An Alembic ``include_object`` for comparing the models with a ``dialect`` database:
    it leaves out the indexes the models create only on other dialects
    (``Index(...).ddl_if(dialect=...)``, such as the GIN index of PostgreSQL)."""

    def include(
        obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        if type_ == "index" and condition is not None and condition.dialect is not None:
            return bool(condition.dialect == dialect)
        return True

    return include


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: ``BACKPROP_DATABASE_URL``) up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (default: an empty schema)."""
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The revision the database at ``url`` is at, or None when it was never migrated."""
    db_url = normalize_url(url or get_settings().database_url)
    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
