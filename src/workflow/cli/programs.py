"""``workflow programs``: list, show, validate and draw program definitions.

The catalog (workflow.programs.registry), the JSON (``Program.to_dict``, ``Validation.to_dict``)
and the drawings (workflow.programs.diagram; with an instance's marks, ``Engine.diagram``, one
read) are the library's; these commands parse, call it and print.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from workflow.cli.context import Context, json_option, pass_ctx
from workflow.cli.render import emit_json, say, table


@click.group()
def programs() -> None:
    """List, show, validate and draw program definitions."""


@programs.command("list")
@json_option
@pass_ctx
def programs_list(c: Context, as_json: bool) -> None:
    """The available programs (bundled and from --definitions)."""
    found = c.registry().programs()
    if as_json:
        emit_json([p.summary_dict() for p in found])
        return
    table(
        None,
        ["program", "version", "title", "title (th)", "states", "triggers", "source"],
        [
            (
                p.id,
                p.version,
                p.title.en,
                p.title.th,
                len(p.all_states()),
                len(p.triggers),
                p.source,
            )
            for p in found
        ],
    )


@programs.command("show")
@click.argument("program")
@click.option("--version", "version", type=int, help="A specific version (default: newest).")
@click.option("--lang", type=click.Choice(["th", "en"]), default="en", show_default=True)
@json_option
@pass_ctx
def programs_show(c: Context, program: str, version: int | None, lang: str, as_json: bool) -> None:
    """States, transitions, roles and evidence of PROGRAM."""
    p = c.registry().get(program, version)
    if as_json:
        emit_json(p.to_dict())
        return
    say(f"{p.id} v{p.version}: {p.title.get(lang)} (source: {p.source})")
    say(
        f"roles: {', '.join(p.roles)}; started by: {', '.join(p.start_roles)}; initial: {p.initial}"
    )
    table(
        "States",
        ["state", "label", "final"],
        [(s.path, s.label.get(lang), "yes" if s.final else "") for s in p.all_states()],
    )

    def fields(t: Any) -> str:
        return ", ".join(f"{f.name}{'*' if f.required else ''}:{f.type}" for f in t.evidence)

    table(
        "Transitions (* = required evidence)",
        ["trigger", "from", "to", "roles", "evidence", "guards"],
        [
            (
                t.trigger,
                ", ".join(t.sources),
                t.dest,
                ", ".join(t.roles),
                fields(t),
                "; ".join(g.describe() for g in t.guards),
            )
            for t in p.transitions
        ],
    )


@programs.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@json_option
def programs_validate(paths: tuple[str, ...], as_json: bool) -> None:
    """Check definition files; print FILE:LINE: CODE message for each problem (exit 1)."""
    from workflow.programs.registry import validate

    result = validate(paths)
    if not result.files:
        raise click.UsageError("no .yaml files found in the given paths")
    if as_json:
        emit_json(result.to_dict())
    else:
        for f in result.files:
            for x in f.problems:
                say(str(x))
            if f.ok and f.program is not None:
                p = f.program
                say(
                    f"{f.file}: ok ({p.id} v{p.version}, {len(p.all_states())} states, "
                    f"{len(p.transitions)} transitions)"
                )
    if not result.ok:
        sys.exit(1)


@programs.command("diagram")
@click.argument("program")
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
@click.option("--lang", type=click.Choice(["th", "en"]), default="en", show_default=True)
@click.option(
    "--instance",
    "instance_id",
    type=int,
    help="Mark this instance's current state and the path it took.",
)
@pass_ctx
def programs_diagram(
    c: Context, program: str, fmt: str, lang: str, instance_id: int | None
) -> None:
    """Print PROGRAM as a Mermaid stateDiagram-v2 or a Graphviz DOT graph."""
    from workflow.programs import diagram

    if instance_id is None:
        # No database needed to draw a program.
        say(diagram.draw(c.registry().get(program), fmt, lang))
        return
    say(c.engine().diagram(program, fmt=fmt, lang=lang, instance=instance_id))
