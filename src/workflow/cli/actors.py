"""``workflow actors``: grant, revoke and list who may act in which role, where and on what.

Each command makes one Engine call (``grant``, ``revoke``, ``grants``) and prints the Grant
records; ``actors list --json`` groups them by actor, as the contract's JSON has it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from workflow.cli.context import Context, json_option, pass_ctx
from workflow.cli.render import emit_json, say, show_time, table

if TYPE_CHECKING:
    from workflow.access.policy import Grant

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def actors() -> None:
    """Grant, revoke and list who may act in which role, where and on what."""


def _scope_options(f: F) -> F:
    f = click.option("--program", help="Only this program (default: every program).")(f)
    f = click.option("--area", help="This area and everything inside it (default: everywhere).")(f)
    return click.option("--by", help="Who grants (recorded; default: the OS user).")(f)


@actors.command("grant")
@click.argument("name")
@click.argument("role")
@_scope_options
@click.option(
    "--until",
    metavar="DATE",
    help="The grant expires at the end of DATE (CE or BE, Thai time); grant again to renew.",
)
@json_option
@pass_ctx
def actors_grant(
    c: Context,
    name: str,
    role: str,
    by: str | None,
    area: str | None,
    program: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Let NAME act as ROLE (in --area and inside it, on --program)."""
    g = c.engine().grant(name, role, area=area, program=program, by=by, until=until)
    if as_json:
        emit_json(g.to_dict())
    else:
        ends = f" until {show_time(g.expires_at, False)} UTC" if g.expires_at else ""
        say(f"granted {g.actor!r} {g.role} {_grant_scope(g)}{ends}")


@actors.command("revoke")
@click.argument("name")
@click.argument("role")
@_scope_options
@json_option
@pass_ctx
def actors_revoke(
    c: Context,
    name: str,
    role: str,
    by: str | None,
    area: str | None,
    program: str | None,
    as_json: bool,
) -> None:
    """Withdraw exactly that grant (exit 3 if NAME does not hold it)."""
    g = c.engine().revoke(name, role, area=area, program=program, by=by)
    if as_json:
        emit_json(g.to_dict())
    else:
        say(f"revoked {g.actor!r} {g.role} {_grant_scope(g)}")


def _grant_scope(g: Grant) -> str:
    where = f"in area {g.area}" if g.area else "everywhere"
    return where + (f" for {g.program}" if g.program else " for every program")


@actors.command("list")
@click.option("--actor", help="Only this actor.")
@json_option
@pass_ctx
def actors_list(c: Context, actor: str | None, as_json: bool) -> None:
    """The actors and their grants."""
    grants = c.engine().grants(actor)
    if as_json:
        by_actor: dict[str, list[dict[str, Any]]] = {}
        for g in grants:
            by_actor.setdefault(g.actor, []).append(g.to_dict())
        emit_json([{"actor": a, "grants": gs} for a, gs in by_actor.items()])
        return
    table(
        None,
        ["actor", "role", "area", "program", "granted by", "granted at (UTC)", "ends (UTC)"],
        [
            (
                g.actor,
                g.role,
                _area_label(g.area),
                g.program or "(all)",
                g.granted_by,
                show_time(g.granted_at, False),
                (show_time(g.expires_at, False) + (" (expired)" if g.expired() else ""))
                if g.expires_at
                else "",
            )
            for g in grants
        ],
    )


def _area_label(code: str | None) -> str:
    if not code:
        return "(everywhere)"
    from workflow.areas import get

    a = get(code)
    return f"{a.code} {a.name_th} ({a.name_en})"
