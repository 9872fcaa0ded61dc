"""``workflow report``: instances per program and state, by province (one Engine call)."""

from __future__ import annotations

import click

from workflow.cli.context import Context, json_option, pass_ctx
from workflow.cli.render import render_report


@click.command()
@click.option("--program", help="Only this program.")
@click.option("--fiscal-year", help="Only this Buddhist-Era fiscal year.")
@json_option
@pass_ctx
def report(c: Context, program: str | None, fiscal_year: str | None, as_json: bool) -> None:
    """Instances per program and state, by province."""
    render_report(c.engine().report(program=program, fiscal_year=fiscal_year), as_json)
