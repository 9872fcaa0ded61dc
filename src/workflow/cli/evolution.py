"""The commands that mend and move instances: ``comment``, ``correct``, ``revert``, ``migrate``.

Each appends events to the instance's chain (never rewrites one) through the Engine and prints
the result (``--json``: {``event``, ``instance``} as ``fire --json`` does; ``migrate``: its
plan). See docs/evolution.md.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from workflow.cli.context import Context, json_option, pass_ctx
from workflow.cli.render import emit_json, say, show_config, table

if TYPE_CHECKING:
    from workflow.engine.evolution import MigrationResult
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
@click.option(
    "--attach", "files", multiple=True, metavar="FIELD=PATH",
    help="The corrected file of a file field; repeatable.",
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
    files: tuple[str, ...],
    note: str | None,
    as_json: bool,
) -> None:
    """Correct the evidence or note of event SEQ of INSTANCE: a new `correct` event that
    names it; the original stays in the trail."""
    from workflow.engine.amend import KEEP

    evidence = evidence_of(assignments, files)
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


@click.command()
@click.argument("program")
@click.option("--to-version", type=int, required=True, help="The version to move to.")
@click.option("--from-version", type=int, help="Only instances on this version.")
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="OLD=NEW",
    help="A state of the old version and its state in the new one (dotted paths; a prefix "
    "maps everything under it, e.g. a parallel region); repeatable. Default: same ids.",
)
@click.option("--area", help="Only instances in this area and inside it (code or name).")
@click.option("--fiscal-year", help="Only instances of this Buddhist-Era fiscal year.")
@click.option("--state", help="Only instances in this top-level state.")
@_actor
@_role
@click.option("--dry-run", is_flag=True, help="Print the plan per instance; change nothing.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
    help="Instances migrated per transaction.",
)
@json_option
@pass_ctx
def migrate(
    c: Context,
    program: str,
    to_version: int,
    from_version: int | None,
    mapping: tuple[str, ...],
    area: str | None,
    fiscal_year: str | None,
    state: str | None,
    actor: str,
    role: str,
    dry_run: bool,
    batch_size: int,
    as_json: bool,
) -> None:
    """Move the running instances of PROGRAM to --to-version: each gets a `migrate` event.
    The plan is checked for every instance first; if any has a problem nothing changes
    (exit 4; with --dry-run, exit 1)."""
    from rich.progress import Progress

    engine = c.engine()
    with Progress(transient=True, disable=as_json or dry_run or not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"migrating {program}", total=None)
        result = engine.migrate(
            program,
            to_version,
            actor=actor,
            role=role,
            from_version=from_version,
            mapping=list(mapping),
            area=area,
            fiscal_year=fiscal_year,
            state=state,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=lambda n: bar.advance(task, n),
        )
    _plan(result, as_json)
    if dry_run and not result.ok:
        raise SystemExit(1)


def _plan(result: MigrationResult, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
        return
    if result.items:
        table(
            None,
            ["id", "from", "to", "ok", "problem"],
            [
                (
                    i.id,
                    f"v{i.from_version} {show_config(i.from_)}",
                    f"v{i.to_version} {show_config(i.to)}" if i.to else "-",
                    "yes" if i.ok else "NO",
                    i.problem or "",
                )
                for i in result.items
            ],
        )
    if result.dry_run:
        bad = sum(1 for i in result.items if not i.ok)
        say(
            f"dry run: {len(result.items)} instance(s) of {result.program} would move to "
            f"v{result.to_version}; {bad} with a problem; nothing changed"
        )
    else:
        say(f"migrated {result.migrated} instance(s) of {result.program} to v{result.to_version}")


def evidence_of(assignments: tuple[str, ...], attachments: tuple[str, ...]) -> dict[str, object]:
    """The evidence of ``--set FIELD=VALUE`` and ``--attach FIELD=PATH`` options together."""
    from workflow.runtime.evidence import parse_assignments

    evidence: dict[str, object] = dict(parse_assignments(assignments))
    evidence.update(read_attachments(attachments, evidence))
    return evidence


def read_attachments(items: tuple[str, ...], taken: Mapping[str, object]) -> dict[str, object]:
    """``--attach FIELD=PATH`` pairs as uploads (the file read whole, regular files only)."""
    from workflow.errors import UsageError
    from workflow.runtime.attachments import MAX_BYTES, Upload
    from workflow.runtime.files import read_regular_file
    from workflow.runtime.text import ID_MAX, identifier

    out: dict[str, object] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise UsageError(f"--attach expects FIELD=PATH, got {item!r}")
        name = identifier(name, "evidence field name", ID_MAX)
        if name in out or name in taken:
            raise UsageError(f"evidence field {name} given twice")
        out[name] = Upload(Path(path).name, read_regular_file(path, MAX_BYTES))
    return out


@click.group()
def attachments() -> None:
    """Files recorded as evidence (type file)."""


@attachments.command("get")
@click.argument("instance", type=int)
@click.argument("seq", type=int)
@click.argument("field")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True),
    help="Write the file here (default: standard output).",
)
@pass_ctx
def attachments_get(c: Context, instance: int, seq: int, field: str, output: str | None) -> None:
    """The file event SEQ of INSTANCE recorded as evidence FIELD (re-hashed first)."""
    value, data = c.engine().attachment(instance, seq, field)
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    Path(output).write_bytes(data)
    click.echo(
        f"wrote {output}: {value['name']}, {value['media_type']}, {value['bytes']} bytes",
        err=True,
    )


COMMANDS = (comment, correct, revert, migrate, attachments)
