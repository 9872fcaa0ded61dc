"""``workflow audit``: read, export and verify the audit trail.

Each command makes one Engine call (``audit_log``, ``verify``, ``digest``, ``denials``) and
prints the result; the CSV file is the library's (workflow.audit.export), so a download from
the web pages is the same file, and ``verify --digest`` reads the digest file with
workflow.audit.chain.read_digest first.
"""

from __future__ import annotations

import sys

import click

from workflow.cli.context import Context, be_option, json_errors, json_option, pass_ctx
from workflow.cli.render import (
    emit_json,
    event_view,
    say,
    show_evidence,
    show_time,
    table,
    write_bytes,
)


@click.group()
def audit() -> None:
    """Read and verify the audit trail."""


@audit.command("log")
@click.option("--actor", help="Only events by this actor.")
@click.option("--program", help="Only events of this program.")
@click.option("--area", help="Only events of instances in this area (and inside it).")
@click.option("--instance", type=int, help="Only events of this instance.")
@click.option(
    "--since",
    help="Recorded from this date (YYYY-MM-DD, CE or BE, UTC) or ISO timestamp.",
)
@click.option(
    "--until",
    help="Recorded up to and including this date, or before this ISO timestamp.",
)
@click.option(
    "--date-from",
    help="Only events whose evidence date (the day it happened) is on or after this date "
    "(CE or BE).",
)
@click.option(
    "--date-to",
    help="Only events whose evidence date is on or before this date (CE or BE).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    callback=json_errors,
    help="json also prints errors as a JSON object on stderr.",
)
@be_option
@pass_ctx
def audit_log(
    c: Context,
    actor: str | None,
    program: str | None,
    area: str | None,
    instance: int | None,
    since: str | None,
    until: str | None,
    date_from: str | None,
    date_to: str | None,
    fmt: str,
    be: bool,
) -> None:
    """Events across instances, in the order they were recorded.

    --since/--until filter on when an event was recorded; --date-from/--date-to on the
    evidence date, the day the activity happened."""
    events = c.engine().audit_log(
        actor=actor,
        program=program,
        area=area,
        since=since,
        until=until,
        instance=instance,
        date_from=date_from,
        date_to=date_to,
    )
    if fmt == "json":
        emit_json([e.to_dict() for e in events])
    elif fmt == "csv":
        from workflow.audit.export import csv_bytes

        write_bytes(csv_bytes(events))
    else:
        event_view(
            [
                "at (UTC)",
                "instance",
                "seq",
                "program",
                "area",
                "trigger",
                "actor",
                "role",
                "evidence",
            ],
            [
                (
                    show_time(e.at, be),
                    e.instance,
                    e.seq,
                    e.program,
                    e.area,
                    e.trigger,
                    e.actor,
                    e.role,
                    show_evidence(dict(e.evidence), be),
                )
                for e in events
            ],
            text={"evidence"},
        )


@audit.command("verify")
@click.option(
    "--digest",
    "digest_file",
    type=click.Path(dir_okay=False),
    help="Also prove nothing this digest (from `audit digest`) covered was removed or changed.",
)
@json_option
@pass_ctx
def audit_verify(c: Context, digest_file: str | None, as_json: bool) -> None:
    """Re-compute every hash chain; exit 1 naming the first broken event."""
    from workflow.audit.chain import read_digest

    digest = read_digest(digest_file) if digest_file is not None else None
    result = c.engine().verify(digest)
    if as_json:
        emit_json(result.to_dict())
    else:
        for n in result.non_bundled:
            click.echo(
                f"note: instance {n.instance} runs {n.program} v{n.program_version} "
                f"from {n.source}, not a bundled definition"
            )
        what = " and the digest" if result.digest_checked else ""
        if result.ok:
            say(
                f"ok: {result.events_checked} events of {result.instances_checked} "
                f"instances verified{what}"
            )
        else:
            for p in result.problems:
                if p.instance is not None:
                    where = f"instance {p.instance} seq {p.seq}"
                else:  # the reason says which chain: "grants:", "denials:", "keys:" or none
                    where = "trail" if p.seq is None else f"trail seq {p.seq}"
                say(f"BROKEN {where}: {p.reason}")
            say(
                f"{len(result.problems)} problem(s) in {result.events_checked} events of "
                f"{result.instances_checked} instances"
            )
    if not result.ok:
        sys.exit(1)


@audit.command("denials")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@json_option
@pass_ctx
def audit_denials(c: Context, limit: int | None, as_json: bool) -> None:
    """Attempts refused for want of a permission: who, what, when, why."""
    found = c.engine().denials(limit)
    if as_json:
        emit_json([d.to_dict() for d in found])
        return
    table(
        None,
        ["at (UTC)", "actor", "role", "action", "instance", "program", "area", "reason"],
        [
            (
                show_time(d.at, False),
                d.actor,
                d.role,
                d.action,
                d.instance or "",
                d.program,
                d.area,
                d.reason,
            )
            for d in found
        ],
    )


@audit.command("digest")
@pass_ctx
def audit_digest(c: Context) -> None:
    """Print a JSON digest of the whole trail for a later `audit verify --digest`."""
    emit_json(c.engine().digest().to_dict())
