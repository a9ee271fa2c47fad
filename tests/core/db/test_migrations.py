"""The Alembic migrations: they run on SQLite and PostgreSQL and build exactly the models."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool, select, text

from core.db import migrate
from core.db.models import Base, Run, RunTransition
from core.db.session import normalize_url
from core.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[3]
MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty, never migrated database of each kind."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_empty_url"
    return request.getfixturevalue(name)


def _head() -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _schema_diffs(url: str) -> list[object]:
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": migrate.for_dialect(conn.dialect.name),
                },
            )
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_head_builds_the_models_and_downgrade_base_removes_them(empty_url: str) -> None:
    assert migrate.current(empty_url) is None
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == _head()
    assert _tables(empty_url) == MODEL_TABLES | {"alembic_version"}
    assert _schema_diffs(empty_url) == []

    migrate.downgrade(empty_url, "base")
    assert migrate.current(empty_url) is None
    assert _tables(empty_url) <= {"alembic_version"}

    # And back up again: downgrade left nothing behind that blocks a new upgrade.
    migrate.upgrade(empty_url)
    assert _schema_diffs(empty_url) == []


def _partial_indexes(url: str) -> dict[str, str]:
    """Index name → the condition of each partial index, as the database stores it."""
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                rows = conn.execute(text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                ))  # fmt: skip
            else:
                rows = conn.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                )
            return {
                name: ddl.split(" WHERE ", 1)[1].strip("() ")
                for name, ddl in rows
                if ddl is not None and " WHERE " in ddl
            }
    finally:
        engine.dispose()


def test_partial_indexes_are_partial_in_a_migrated_database(empty_url: str) -> None:
    """compare_metadata does not compare an index's condition: the catalog does."""
    dialect = "postgresql" if empty_url.startswith("postgresql") else "sqlite"
    wanted = {
        index.name: str(index.dialect_options[dialect]["where"])
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if index.dialect_options[dialect]["where"] is not None
    }
    assert "ix_runs_owner_loss" in wanted and "ix_runs_sweep_id" in wanted
    migrate.upgrade(empty_url)
    stored = _partial_indexes(empty_url)
    assert set(stored) == set(wanted)
    for name, condition in wanted.items():
        assert stored[name].lower() == condition.lower(), name


def test_upgrade_is_idempotent(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    migrate.upgrade(sqlite_url)
    assert migrate.current(sqlite_url) == _head()


def test_one_head_and_files_named_by_date_and_slug() -> None:
    script = ScriptDirectory(str(migrate.MIGRATIONS_DIR))
    assert len(script.get_heads()) == 1
    files = sorted(p.name for p in (migrate.MIGRATIONS_DIR / "versions").glob("*.py"))
    files.remove("__init__.py")
    assert files, "no migration scripts found"
    for name in files:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{4}_[a-z0-9_]+\.py", name), name


def test_upgrade_works_from_another_working_directory(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    migrate.upgrade(sqlite_url)
    assert MODEL_TABLES <= _tables(sqlite_url)


@pytest.fixture
def settings_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "from_settings.db"
    monkeypatch.setenv("BACKPROP_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_upgrade_without_url_uses_the_settings(settings_url: Path) -> None:
    assert not settings_url.exists()
    migrate.upgrade()
    assert MODEL_TABLES <= _tables(f"sqlite:///{settings_url}")


def test_repo_alembic_ini_finds_the_migrations(
    settings_url: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `alembic upgrade head` at the repository root would, minus the logging setup
    # (fileConfig would reconfigure the test process's loggers).
    monkeypatch.chdir(REPO_ROOT)
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    assert MODEL_TABLES <= _tables(f"sqlite:///{settings_url}")
    assert Path(cfg.get_main_option("script_location") or "").resolve() == migrate.MIGRATIONS_DIR


def test_postgresql_url_is_accepted_without_driver(pg_empty_url: str) -> None:
    assert pg_empty_url.startswith("postgresql://")
    migrate.upgrade(pg_empty_url)
    assert migrate.current(pg_empty_url) == _head()


def test_migration_files_sort_in_revision_order() -> None:
    # File names start with their creation time; reading the folder in name order must
    # walk the revisions from the first to the head.
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    by_file = sorted(script.walk_revisions(), key=lambda rev: Path(rev.path).name)
    chain = list(reversed(list(script.walk_revisions())))
    assert [rev.revision for rev in by_file] == [rev.revision for rev in chain]
    for rev in by_file:
        stamp = Path(rev.path).name[:15]  # 2026-11-30-1710
        assert (
            f"Create Date: {stamp[:10]} {stamp[11:13]}:{stamp[13:15]}" in Path(rev.path).read_text()
        )


def test_runs_stored_before_timelines_get_one_from_their_times(empty_url: str) -> None:
    """0005 gives every existing run the timeline its columns can tell, in order."""
    migrate.upgrade(empty_url, "0004")
    engine = create_engine(normalize_url(empty_url), poolclass=pool.NullPool)
    insert_run = text(
        "INSERT INTO runs (id, owner, dataset_id, network, training, status, epoch, epochs, "
        "metrics, cancel_requested, attempts, created_at, started_at, finished_at, updated_at) "
        "VALUES (:id, 'me', 'd', '{}', '{}', :status, 0, 5, '{}', false, :attempts, "
        ":created, :started, :finished, :created)"
    )
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    minutes = [t0 + timedelta(minutes=k) for k in range(4)]
    try:
        with engine.begin() as conn:
            conn.execute(insert_run, [
                {"id": "waiting", "status": "queued", "attempts": 0, "created": minutes[0],
                 "started": None, "finished": None},
                {"id": "done", "status": "succeeded", "attempts": 2, "created": minutes[1],
                 "started": minutes[2], "finished": minutes[3]},
            ])  # fmt: skip
        migrate.upgrade(empty_url)
        with engine.connect() as conn:  # through the model: its type reads SQLite's times
            rows = conn.execute(
                select(RunTransition.run_id, RunTransition.status, RunTransition.at,
                       RunTransition.reason, RunTransition.attempt, RunTransition.worker)
                .order_by(RunTransition.id)
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    by_run: dict[str, list[tuple[object, ...]]] = {}
    for run_id, *rest in rows:
        by_run.setdefault(run_id, []).append(tuple(rest))
    note = " (recorded before run timelines existed)"
    assert by_run == {
        "waiting": [("queued", minutes[0], "submitted" + note, 0, None)],
        "done": [
            ("queued", minutes[1], "submitted" + note, 0, None),
            ("running", minutes[2], "started" + note, 2, None),
            ("succeeded", minutes[3], "succeeded" + note, 2, None),
        ],
    }


def test_0008_fills_the_metric_columns_of_stored_runs_and_keeps_their_tags(empty_url: str) -> None:
    """Runs stored before 0008 get their sort columns from ``metrics`` (finite numbers;
    anything else NULL), and their tags (JSONB on PostgreSQL from then on) stay as they were;
    the lists then sort them by those columns."""
    migrate.upgrade(empty_url, "0007")
    engine = create_engine(normalize_url(empty_url), poolclass=pool.NullPool)
    insert_run = text(
        "INSERT INTO runs (id, owner, dataset_id, network, training, status, epoch, epochs, "
        "metrics, cancel_requested, attempts, created_at, updated_at, tags) "
        "VALUES (:id, 'me', 'd', '{}', '{}', 'succeeded', 5, 5, :metrics, false, 1, "
        ":created, :created, :tags)"
    )
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    stored = {
        "full": {"loss": 0.5, "val_loss": 0.75, "accuracy": 0.8, "val_accuracy": 1},
        "partial": {"loss": 2.0, "val_loss": None},
        "none yet": {"loss": None},
        "odd": {"loss": "0.1", "val_loss": True, "accuracy": [1]},
        "empty": {},
    }
    # More runs than one backfill batch, so that the batches are walked too.
    many = {f"bulk-{k:04d}": {"loss": k / 1000} for k in range(1500)}
    try:
        with engine.begin() as conn:
            conn.execute(insert_run, [
                {"id": run_id, "metrics": json.dumps(metrics), "created": t0,
                 "tags": json.dumps({"project": run_id}) if run_id in stored else None}
                for run_id, metrics in {**stored, **many}.items()
            ])  # fmt: skip
        migrate.upgrade(empty_url)
        with engine.connect() as conn:
            rows = {
                row.id: row
                for row in conn.execute(
                    select(Run.id, Run.loss, Run.val_loss, Run.accuracy, Run.val_accuracy, Run.tags)
                )
            }
    finally:
        engine.dispose()
    values = {k: (r.loss, r.val_loss, r.accuracy, r.val_accuracy) for k, r in rows.items()}
    assert values["full"] == (0.5, 0.75, 0.8, 1.0)
    assert values["partial"] == (2.0, None, None, None)
    assert values["none yet"] == values["odd"] == values["empty"] == (None, None, None, None)
    assert all(values[k] == (m["loss"], None, None, None) for k, m in many.items())
    assert {k: rows[k].tags for k in stored} == {k: {"project": k} for k in stored}
    assert rows["bulk-0000"].tags is None


def test_0010_stores_no_tags_as_sql_null(empty_url: str) -> None:
    """An edit before 0010 stored "no tags" as JSON ``null``; after it, such rows are SQL
    NULL (no entry in the partial index of tags), and real tags stay."""
    migrate.upgrade(empty_url, "0009")
    engine = create_engine(normalize_url(empty_url), poolclass=pool.NullPool)
    insert_run = text(
        "INSERT INTO runs (id, owner, dataset_id, network, training, status, epoch, epochs, "
        "metrics, cancel_requested, attempts, created_at, updated_at, tags) "
        "VALUES (:id, 'me', 'd', '{}', '{}', 'succeeded', 1, 1, '{}', false, 1, "
        ":created, :created, :tags)"
    )
    cast = "jsonb" if empty_url.startswith("postgresql") else "text"
    try:
        with engine.begin() as conn:
            conn.execute(
                text(insert_run.text.replace(":tags)", f"CAST(:tags AS {cast}))")),
                [
                    {"id": "json-null", "created": datetime.now(UTC), "tags": "null"},
                    {"id": "tagged", "created": datetime.now(UTC), "tags": '{"a": "1"}'},
                    {"id": "never", "created": datetime.now(UTC), "tags": None},
                ],
            )
        migrate.upgrade(empty_url)
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT id, tags IS NULL FROM runs")).all())
    finally:
        engine.dispose()
    assert stored == {"json-null": True, "tagged": False, "never": True}
