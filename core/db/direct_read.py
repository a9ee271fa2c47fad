"""One row of a Core ``select``, read straight from the DBAPI cursor: for the hottest reads.

SQLAlchemy's execution and result machinery (execution context, cursor result, result
metadata, ``Row``) costs more CPU than a small primary-key query: for a run's record
(33 columns) about 150 µs of the ~350 µs that ``conn.execute(...).first()`` takes in the
API process on the benchmark machine (docs/benchmarks.md, issue #10). A status poll is the
service's most frequent request, so it reads this way; everything else uses
``conn.execute``.

What stays SQLAlchemy's:

- the connection: a ``Connection`` of an engine, with its pool, autocommit and dialect;
- the SQL: compiled once per dialect from the same Core statement;
- every value's conversion: each column's type's result processor (chosen from the
  driver's type of the column), so a row is what ``conn.execute(stmt).first()._mapping``
  gives;
- errors: when the driver raises, the statement runs again through ``conn.execute``, which
  turns the error into SQLAlchemy's (``OperationalError`` for a database that is down),
  invalidates a dead connection, or, for a passing fault, answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Dialect, Select

Processor = Callable[[Any], Any] | None


@dataclass
class _Compiled:
    """The statement as one dialect runs it."""

    sql: str
    keys: list[str]
    positions: Sequence[str] | None  # the parameters' order, for a positional paramstyle
    binds: Mapping[str, Processor]
    types: list[Any]
    # Learnt from the first result's description: a processor may depend on the driver's
    # type of the column (a PostgreSQL float against a numeric), which is fixed per query.
    processors: list[Processor] | None = field(default=None)


class DirectRead:
    """``first(conn, params)``: the first row of ``stmt`` as a dict of its columns' keys."""

    def __init__(self, stmt: Select[Any]) -> None:
        self._stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._stmt.compile(dialect=dialect)
            binds = {
                name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                for name, bind in compiled.binds.items()
            }
            found = _Compiled(
                sql=compiled.string,
                keys=list(self._stmt.selected_columns.keys()),
                positions=compiled.positiontup if compiled.positional else None,
                binds=binds,
                types=[column.type for column in self._stmt.selected_columns],
            )
            self._compiled[dialect.name] = found
        return found

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of the statement with ``params`` (values of its bind parameters, by
        name), or None when there is none."""
        plan = self._for(conn.dialect)
        values = {
            name: (process(params[name]) if process else params[name])
            for name, process in plan.binds.items()
        }
        args: Any = tuple(values[name] for name in plan.positions) if plan.positions else values
        dbapi = conn.dialect.loaded_dbapi
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(plan.sql, args)
            row = cursor.fetchone()
            description = cursor.description
        except dbapi.Error:
            cursor.close()
            found = conn.execute(self._stmt, dict(params)).first()
            return None if found is None else dict(found._mapping)
        cursor.close()
        if row is None:
            return None
        processors = plan.processors
        if processors is None:
            processors = plan.processors = [
                type_.dialect_impl(conn.dialect).result_processor(conn.dialect, column[1])
                for type_, column in zip(plan.types, description, strict=True)
            ]
        return {
            key: (process(value) if process else value)
            for key, process, value in zip(plan.keys, processors, row, strict=True)
        }
