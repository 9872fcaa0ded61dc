"""Alembic environment: runs on the connection workflow hands over (see __init__.upgrade)."""

from __future__ import annotations

from alembic import context

from workflow.storage.schema import VERSION_TABLE, Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only for `alembic revision --autogenerate` by hand
    raise SystemExit("run migrations through `workflow init` (or pass a connection)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    transactional_ddl=True,
    # SQLite cannot ALTER most things in place; batch mode recreates tables when needed.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two `workflow init` on two hosts at once must not race each other's DDL.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7201952701)")
    context.run_migrations()
if connection.in_transaction():
    connection.commit()
