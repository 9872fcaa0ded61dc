"""The storage contract (tests/persistence.py) run on each backend, beside the engine contract.

One subclass per backend gives ``StoreContract`` the URL of an empty database: SQLite a file in
``tmp_path`` (not yet created), PostgreSQL the session's scratch database with a fresh, empty
``public`` schema (the ``postgres`` marker, so ``WORKFLOW_REQUIRE_POSTGRES=1`` counts it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import empty_postgres
from persistence import StoreContract


class TestSQLiteStore(StoreContract):
    """The contract on SQLite: a database file in a temporary directory."""

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'workflow.db'}"


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    """The contract on PostgreSQL: the scratch database, emptied for each test."""

    @pytest.fixture
    def url(self, postgres_scratch: str) -> str:
        empty_postgres(postgres_scratch)
        return postgres_scratch
