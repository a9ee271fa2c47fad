"""Locks that make admission checks exact under concurrency, on PostgreSQL and SQLite.

Two rules need them:

- An owner's active-run limit: "count the owner's active runs, then insert one" must not
  interleave with the same owner's other submits. On PostgreSQL a transaction-scoped
  advisory lock per owner serialises them; on SQLite the whole write is serialised anyway,
  once the transaction starts with ``BEGIN IMMEDIATE`` (a deferred one would read first and
  could not upgrade to a write later).
- "A run was accepted" and "its dataset was deleted" exclude each other: the submit reads
  the dataset row ``FOR SHARE`` and the delete locks it ``FOR UPDATE`` before it checks for
  active runs, so whichever comes second sees what the first one did.
- An owner's uploads of the same content make one dataset: "look for the owner's dataset
  with this SHA-256, else insert one" must not interleave with the same upload's twin. A
  transaction-scoped advisory lock per owner and digest serialises only such twins (other
  uploads, and the owner's submits, go on); on SQLite, ``BEGIN IMMEDIATE`` as above.
- A model name's versions are numbered 1, 2, … without gaps or twins: registrations (and
  the deletion) of one owner's name take turns, by an advisory lock per owner and name.
- "A run became a model's version" and "the run was deleted" exclude each other: the
  registration reads the run row ``FOR SHARE`` and the run's delete locks it ``FOR
  UPDATE`` before it looks for versions, as for datasets above.

On SQLite each function must come before the transaction's first write (it begins the
transaction); later calls in the same transaction are covered by the first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, Select, select, text

from core.db.models import Dataset, Run

# Classes of advisory locks (the first key of the two-key form), one per purpose.
OWNER_LOCK = 1
DISPATCH_LOCK = 2
DATASET_CONTENT_LOCK = 3
MODEL_NAME_LOCK = 4


def _begin_immediate(conn: Connection) -> None:
    # pysqlite starts no transaction for reads: this makes the transaction a writer at once.
    # Already a writer (an earlier lock of this transaction): the one lock covers both.
    if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _serialise(conn: Connection, lock_class: int, key: str) -> None:
    """Hold the lock ``(lock_class, key)`` until this transaction ends (SQLite: the
    database's one write lock)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))"),
            {"cls": lock_class, "key": key},
        )
    elif conn.dialect.name == "sqlite":
        _begin_immediate(conn)


def serialise_owner(conn: Connection, owner: str) -> None:
    """Until this transaction ends, no other transaction that called this for ``owner``
    runs (nor, on SQLite, any other writer)."""
    _serialise(conn, OWNER_LOCK, owner)


def serialise_dispatch(conn: Connection, task_queue: str) -> None:
    """One dispatcher of ``task_queue`` at a time, until this transaction ends."""
    _serialise(conn, DISPATCH_LOCK, task_queue)


def serialise_dataset_content(conn: Connection, owner: str, sha256: str) -> None:
    """Until this transaction ends, no other transaction that called this for the same
    ``owner`` and dataset digest ``sha256`` runs (nor, on SQLite, any other writer)."""
    _serialise(conn, DATASET_CONTENT_LOCK, f"{owner}:{sha256}")


def lock_dataset_for_delete(conn: Connection, dataset_id: str) -> None:
    """Wait for submits that read the dataset (``FOR SHARE``) to commit, and keep new ones
    waiting until this transaction ends."""
    if conn.dialect.name == "sqlite":
        _begin_immediate(conn)
    else:
        conn.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())


def serialise_model_name(conn: Connection, owner: str, name: str) -> None:
    """Until this transaction ends, no other transaction that called this for ``owner``'s
    model ``name`` runs (nor, on SQLite, any other writer)."""
    _serialise(conn, MODEL_NAME_LOCK, f"{owner}:{name}")


def lock_run_for_delete(conn: Connection, run_id: str) -> None:
    """Wait for registrations that read the run (``FOR SHARE``) to commit, and keep new
    ones waiting until this transaction ends."""
    if conn.dialect.name == "sqlite":
        _begin_immediate(conn)
    else:
        conn.execute(select(Run.id).where(Run.id == run_id).with_for_update())


def select_for_update(conn: Connection, stmt: Select[Any]) -> Row[Any] | None:
    """The first row of ``stmt``, locked until this transaction ends (``FOR UPDATE``; on
    SQLite the transaction takes the database's write lock first): a read-modify-write of
    that row cannot interleave with another."""
    if conn.dialect.name == "sqlite":
        _begin_immediate(conn)
        return conn.execute(stmt).first()
    return conn.execute(stmt.with_for_update()).first()
