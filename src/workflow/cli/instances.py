"""The commands on instances: ``start``, ``bulk-start``, ``fire``, ``show``, ``list``, ``history``.

Each parses its options, calls the Engine and prints the record it returns (``to_dict()`` with
``--json``). Two still make a second call: ``bulk-start`` first expands ``--within`` into its
tambons (workflow.areas.tambons_within), and ``show --actor/--role`` asks
``Engine.available_triggers`` for that person's triggers, which ``Engine.get`` does not take.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from workflow.cli.context import Context, be_option, json_option, pass_ctx
from workflow.cli.render import emit_json, render_history, say, show_config, show_time, table

if TYPE_CHECKING:
    from workflow.records import Instance


def _render_instance(inst: Instance, be: bool) -> None:
    area = inst.area
    rows = [
        ("instance", inst.id),
        ("program", f"{inst.program} v{inst.program_version}"),
        ("area", f"{area.display('th')} / {area.display('en').split(' ', 1)[1]}"),
        ("fiscal year", inst.fiscal_year),
        ("title", inst.title or ""),
        ("state", inst.state + (" (final)" if inst.final else "")),
        ("active", "\n".join(inst.active) if len(inst.active) > 1 else inst.active[0]),
        ("version", inst.version),
        ("created", show_time(inst.created_at, be) + " UTC"),
        ("updated", show_time(inst.updated_at, be) + " UTC"),
        ("available", ", ".join(inst.available_triggers) or "(none)"),
    ]
    if inst.due_at is not None:
        late = " (OVERDUE)" if inst.overdue else ""
        rows.append(("due", show_time(inst.due_at, be) + " UTC" + late))
    if inst.corrected:
        rows.append(("corrected", ", ".join(
            f"#{seq} by {', '.join(f'#{c}' for c in by)}" for seq, by in inst.corrected)
            + " (history shows both)"))
    table(None, ["", ""], rows)


@click.command()
@click.argument("program")
@click.option("--area", required=True, help="DOPA code (16, 1601, 160117) or a Thai/English name.")
@click.option("--fiscal-year", required=True, help="Buddhist-Era fiscal year, e.g. 2564.")
@click.option("--actor", required=True, help="Who is acting (recorded in the audit trail).")
@click.option("--role", required=True, help="The role the actor acts in.")
@click.option("--title", help="A title for this instance.")
@click.option("--note", help="A note recorded with the start event.")
@click.option("--key", help="Idempotency key: the same key again returns the first result.")
@click.option(
    "--allow-duplicate",
    is_flag=True,
    help="Start even if PROGRAM already runs for this area and fiscal year.",
)
@json_option
@pass_ctx
def start(
    c: Context,
    program: str,
    area: str,
    fiscal_year: str,
    actor: str,
    role: str,
    title: str | None,
    note: str | None,
    key: str | None,
    allow_duplicate: bool,
    as_json: bool,
) -> None:
    """Start PROGRAM for an area and fiscal year; prints the new instance's id."""
    inst = c.engine().start(
        program,
        area=area,
        fiscal_year=fiscal_year,
        actor=actor,
        role=role,
        title=title,
        key=key,
        allow_duplicate=allow_duplicate,
        note=note,
    )
    if as_json:
        emit_json(inst.to_dict())
    else:
        say(inst.id)


@click.command("bulk-start")
@click.argument("program")
@click.option(
    "--within",
    required=True,
    help="Start for every tambon inside this province or district (code or name).",
)
@click.option("--fiscal-year", required=True, help="Buddhist-Era fiscal year, e.g. 2565.")
@click.option("--actor", required=True, help="Who is acting (recorded in the audit trail).")
@click.option("--role", required=True, help="The role the actor acts in.")
@click.option("--title", help="A title for every instance.")
@json_option
@pass_ctx
def bulk_start(
    c: Context,
    program: str,
    within: str,
    fiscal_year: str,
    actor: str,
    role: str,
    title: str | None,
    as_json: bool,
) -> None:
    """Start PROGRAM for every tambon of a district or province (tambons that already run
    it this fiscal year are skipped)."""
    from rich.progress import Progress

    from workflow.areas import tambons_within

    engine = c.engine()
    tambons = tambons_within(within)
    with Progress(transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"starting {program}", total=len(tambons))
        ids = engine.start_many(
            program,
            areas=tambons,
            fiscal_year=fiscal_year,
            actor=actor,
            role=role,
            title=title,
            progress=lambda n: bar.advance(task, n),
        )
    if as_json:
        emit_json({"started": ids, "skipped": len(tambons) - len(ids)})
    else:
        say(
            f"started {len(ids)} instances of {program} "
            f"({len(tambons) - len(ids)} tambons already had one)"
        )


@click.command()
@click.argument("instance", type=int)
@click.argument("trigger")
@click.option("--actor", required=True, help="Who is acting (recorded in the audit trail).")
@click.option("--role", required=True, help="The role the actor acts in.")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Evidence; repeatable. Dates YYYY-MM-DD, CE or BE (2564-02-17).",
)
@click.option(
    "--attach",
    "attachments",
    multiple=True,
    metavar="FIELD=PATH",
    help="A file as the evidence FIELD (type file); repeatable.",
)
@click.option("--note", help="A free-text note recorded with the event.")
@click.option(
    "--expect-version",
    type=int,
    help="Refuse (exit 5) unless the instance is at this version (not checked again when "
    "--key repeats a recorded request: the first result is returned).",
)
@click.option(
    "--key",
    help="Idempotency key: the same key again (even at once, or with a stale "
    "--expect-version) returns the first result and changes nothing.",
)
@be_option
@json_option
@pass_ctx
def fire(
    c: Context,
    instance: int,
    trigger: str,
    actor: str,
    role: str,
    assignments: tuple[str, ...],
    attachments: tuple[str, ...],
    note: str | None,
    expect_version: int | None,
    key: str | None,
    be: bool,
    as_json: bool,
) -> None:
    """Fire TRIGGER on INSTANCE with its evidence."""
    from workflow.cli.evolution import evidence_of

    evidence = evidence_of(assignments, attachments)
    result = c.engine().fire(
        instance,
        trigger,
        actor=actor,
        role=role,
        evidence=evidence,
        note=note,
        expect_version=expect_version,
        key=key,
    )
    if as_json:
        emit_json(result.to_dict())
        return
    e, inst = result.event, result.instance
    again = " (already recorded with this key; nothing changed)" if result.replayed else ""
    say(
        f"instance {inst.id}: {e.trigger} {show_config(e.from_)} -> "
        f"{show_config(e.to)} (version {inst.version}){again}"
    )
    say(f"next: {', '.join(inst.available_triggers) or '(none: final)'}")


@click.command()
@click.argument("instance", type=int)
@click.option("--actor", help="Only what this actor may fire next (by their grants).")
@click.option("--role", help="Only the triggers this role may fire.")
@be_option
@json_option
@pass_ctx
def show(
    c: Context, instance: int, actor: str | None, role: str | None, be: bool, as_json: bool
) -> None:
    """Current state, version and available triggers of INSTANCE."""
    engine = c.engine()
    inst = engine.get(instance)
    escalated: tuple[str, ...] = ()
    if actor is not None and inst.overdue:
        from workflow.engine.work import escalated_roles

        escalated = escalated_roles(engine, inst, actor)
    if role is not None or actor is not None:
        from dataclasses import replace

        inst = replace(
            inst, available_triggers=engine.available_triggers(instance, role=role, actor=actor)
        )
    if as_json:
        out = inst.to_dict()
        if actor is not None:
            out["escalated_to"] = list(escalated)
        emit_json(out)
    else:
        _render_instance(inst, be)
        if escalated:
            say(f"escalated: overdue since {inst.due_at}; {actor} sees it as "
                f"{', '.join(escalated)}")


@click.command("list")
@click.option("--program", help="Only this program.")
@click.option("--state", help="Only instances in this top-level state.")
@click.option("--area", help="This area and everything inside it (code or name).")
@click.option("--fiscal-year", help="Only this Buddhist-Era fiscal year.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@click.option("--overdue", is_flag=True, help="Only instances past a due time.")
@json_option
@pass_ctx
def list_(
    c: Context,
    program: str | None,
    state: str | None,
    area: str | None,
    fiscal_year: str | None,
    limit: int | None,
    overdue: bool,
    as_json: bool,
) -> None:
    """Instances, oldest first, with the contract's filters."""
    found = c.engine().list(
        program=program,
        state=state,
        area=area,
        fiscal_year=fiscal_year,
        limit=None if overdue else limit,
    )
    if overdue:
        found = [i for i in found if i.overdue][:limit]
    if as_json:
        emit_json([i.to_dict() for i in found])
        return
    table(
        None,
        ["id", "program", "area", "name", "FY", "state", "version", "next"],
        [
            (
                i.id,
                i.program,
                i.area.code,
                f"{i.area.name_th} ({i.area.name_en})",
                i.fiscal_year,
                i.state,
                i.version,
                ", ".join(i.available_triggers),
            )
            for i in found
        ],
    )


@click.command()
@click.argument("instance", type=int)
@be_option
@json_option
@pass_ctx
def history(c: Context, instance: int, be: bool, as_json: bool) -> None:
    """The events of INSTANCE, oldest first."""
    events = c.engine().history(instance)
    if as_json:
        emit_json([e.to_dict() for e in events])
    else:
        render_history(events, be)
