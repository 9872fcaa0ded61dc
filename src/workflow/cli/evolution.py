"""The commands that mend and move instances: ``comment``, ``correct``, ``revert``, ``migrate``.

Each appends events to the instance's chain (never rewrites one) through the Engine and prints
the result (``--json``: {``event``, ``instance``} as ``fire --json`` does; ``migrate``: its
plan). See docs/evolution.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from workflow.cli.context import Context, json_option, pass_ctx
from workflow.cli.render import emit_json, say, show_config

if TYPE_CHECKING:
    from workflow.records import FireResult


def _done(result: FireResult, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
        return
    e, inst = result.event, result.instance
    moved = (
        f"{show_config(e.from_)} -> {show_config(e.to)}"
        if e.from_ != e.to
        else f"state unchanged ({show_config(e.to)})"
    )
    say(f"instance {inst.id}: {e.trigger} (seq {e.seq}) {moved} (version {inst.version})")


_actor = click.option("--actor", required=True, help="Who is acting (recorded in the trail).")
_role = click.option("--role", required=True, help="The role the actor acts in.")


@click.command()
@click.argument("instance", type=int)
@_actor
@_role
@click.option("--text", required=True, help="The comment (recorded as the event's note).")
@json_option
@pass_ctx
def comment(c: Context, instance: int, actor: str, role: str, text: str, as_json: bool) -> None:
    """Append a comment to INSTANCE; its state does not change."""
    _done(c.engine().comment(instance, actor=actor, role=role, text=text), as_json)


@click.command()
@click.argument("instance", type=int)
@click.argument("seq", type=int)
@_actor
@_role
@click.option("--reason", required=True, help="Why the record is corrected (required).")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="The corrected value of an evidence field (FIELD= removes an optional one); "
    "repeatable.",
)
@click.option("--note", help="The corrected note of event SEQ.")
@json_option
@pass_ctx
def correct(
    c: Context,
    instance: int,
    seq: int,
    actor: str,
    role: str,
    reason: str,
    assignments: tuple[str, ...],
    note: str | None,
    as_json: bool,
) -> None:
    """Correct the evidence or note of event SEQ of INSTANCE: a new `correct` event that
    names it; the original stays in the trail."""
    from workflow.engine.amend import KEEP
    from workflow.runtime.evidence import parse_assignments

    evidence = parse_assignments(assignments)
    result = c.engine().correct(
        instance,
        seq,
        actor=actor,
        role=role,
        reason=reason,
        evidence=evidence,
        note=KEEP if note is None else note,
    )
    _done(result, as_json)


@click.command()
@click.argument("instance", type=int)
@_actor
@_role
@click.option("--reason", required=True, help="Why the step is taken back (required).")
@click.option("--expect-version", type=int, help="Refuse (exit 5) unless at this version.")
@json_option
@pass_ctx
def revert(
    c: Context,
    instance: int,
    actor: str,
    role: str,
    reason: str,
    expect_version: int | None,
    as_json: bool,
) -> None:
    """Take back the last state change of INSTANCE: a `revert` event returning it to the
    configuration before that step."""
    result = c.engine().revert(
        instance, actor=actor, role=role, reason=reason, expect_version=expect_version
    )
    _done(result, as_json)


COMMANDS = (comment, correct, revert)
