"""``workflow init``: create or upgrade the database schema (Engine.init, run by Alembic)."""

from __future__ import annotations

import click

from workflow.cli.context import Context, pass_ctx
from workflow.cli.render import say


@click.command()
@pass_ctx
def init(c: Context) -> None:
    """Create or upgrade the database schema (safe to run again)."""
    before, after = c.engine().init()
    if before == after:
        say(f"schema already at revision {after}: {c.engine().store.safe_url}")
    elif before is None:
        say(f"created schema revision {after}: {c.engine().store.safe_url}")
    else:
        say(f"upgraded schema {before} -> {after}: {c.engine().store.safe_url}")
