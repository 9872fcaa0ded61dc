"""Alembic migrations of workflow's schema, shipped inside the package.

``workflow init`` calls :func:`upgrade`, which runs Alembic programmatically on an open
connection; there is no alembic.ini, the script location is this folder. To write a new
migration in a checkout::

    python -c "from alembic import command; from workflow.storage import migrations; \
               command.revision(migrations.config(), message='...')"
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

HERE = Path(__file__).parent


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema on ``connection`` to ``revision`` (and commit)."""
    command.upgrade(config(connection), revision)


def head() -> str:
    """The newest revision the shipped migrations know."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(config()).get_heads()
    return str(heads[0])
