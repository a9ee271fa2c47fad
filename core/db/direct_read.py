"""One row of a Core ``select``, read straight from the DBAPI cursor: for the hottest reads.

SQLAlchemy's execution and result machinery (execution context, cursor result, result
metadata, ``Row``) costs more CPU than a small primary-key query: for a run's record
(33 columns) about 150 µs of the ~350 µs that ``conn.execute(...).first()`` takes in the
API process on the benchmark machine (docs/benchmarks.md, issue #10). A status poll is the
service's most frequent request, so it reads this way; everything else uses
``conn.execute``.

What stays SQLAlchemy's:

- the connection: a ``Connection`` of an autocommit engine, with its pool and dialect;
- the SQL: compiled once per dialect and driver from the same Core statement, with its
  parameters' values and conversions as SQLAlchemy makes them;
- every value's conversion: each column's type's result processor (chosen from the
  driver's type of the column), so a row is what ``conn.execute(stmt).first()._mapping``
  gives;
- errors: when the driver raises, the statement runs again through ``conn.execute``, which
  turns the error into SQLAlchemy's (``OperationalError`` for a database that is down),
  invalidates a dead connection, or, for a passing fault, answers. That is safe only
  outside a transaction, hence autocommit connections only.

What it skips: the engine's cursor events and its SQL echo, which nothing here uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Dialect, Select
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass
class _Compiled:
    """The statement as one dialect and driver run it."""

    stmt: Select[Any]
    compiled: SQLCompiler
    keys: list[str]
    binds: Mapping[str, Processor]
    # Learnt from the first result's description: a processor may depend on the driver's
    # type of the column (a PostgreSQL float against a numeric), which is fixed per query.
    processors: list[Processor] | None = field(default=None)


class DirectRead:
    """``first(conn, params)``: the first row of the statement that ``build`` makes for a
    dialect (its name: ``postgresql``, ``sqlite``), as a dict of its columns' keys."""

    def __init__(self, build: Callable[[str], Select[Any]]) -> None:
        self._build = build
        self._compiled: dict[tuple[str, str, str], _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        found = self._compiled.get(key)
        if found is None:
            stmt = self._build(dialect.name)
            compiled = stmt.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            if compiled.post_compile_params:
                raise ValueError("a statement with expanding parameters (IN) is not supported")
            found = _Compiled(
                stmt=stmt,
                compiled=compiled,
                keys=list(stmt.selected_columns.keys()),
                binds={  # by the names the compiled statement uses (escaped ones too)
                    compiled.escaped_bind_names.get(name, name): bind.type.dialect_impl(
                        dialect
                    ).bind_processor(dialect)
                    for name, bind in compiled.binds.items()
                },
            )
            self._compiled[key] = found
        return found

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of the statement with ``params`` (values of its bind parameters, by
        name), or None when there is none. ``conn`` must be in autocommit, set as an
        execution option (as ``get_autocommit_engine`` does)."""
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            raise ValueError("DirectRead reads on autocommit connections only")
        plan = self._for(conn.dialect)
        values = plan.compiled.construct_params(dict(params))
        for name, process in plan.binds.items():
            if process is not None:
                values[name] = process(values[name])
        positions, escaped = plan.compiled.positiontup, plan.compiled.escaped_bind_names
        args: Any = (
            tuple(values[escaped.get(name, name)] for name in positions) if positions else values
        )
        try:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(plan.compiled.string, args)
                row = cursor.fetchone()
                description = cursor.description
            finally:
                cursor.close()
        except conn.dialect.loaded_dbapi.Error:
            found = conn.execute(plan.stmt, dict(params)).first()
            return None if found is None else dict(found._mapping)
        if row is None:
            return None
        processors = plan.processors
        if processors is None:
            processors = plan.processors = [
                type_.dialect_impl(conn.dialect).result_processor(conn.dialect, column[1])
                for type_, column in zip(
                    (c.type for c in plan.stmt.selected_columns), description, strict=True
                )
            ]
        return {
            key: (process(value) if process else value)
            for key, process, value in zip(plan.keys, processors, row, strict=True)
        }
