"""``workflow tick``, ``hooks``, ``deliver``, ``outbox`` (CONTRACT §10): deadlines and
notifications, each one call of the library (``Engine.tick``, ``Engine.notifications``)."""

from __future__ import annotations

import sys

import click

from workflow.cli.context import Context, json_option, pass_ctx
from workflow.cli.render import emit_json, say, table


@click.command()
@click.option("--now", help="The time to judge due dates by (ISO 8601; for tests).")
@json_option
@pass_ctx
def tick(c: Context, now: str | None, as_json: bool) -> None:
    """Record one `overdue` event per instance past due in its current state entry."""
    result = c.engine().tick(now)
    if as_json:
        emit_json(result.to_dict())
    else:
        say(f"{len(result.recorded)} overdue event(s) recorded")


@click.group()
def hooks() -> None:
    """Receivers of every event: webhooks and e-mail."""


@hooks.command("add")
@click.argument("url")
@click.option("--program", help="Only events of this program.")
@click.option("--trigger", help="Only events with this trigger.")
@click.option("--secret-stdin", is_flag=True, help="Read the HMAC secret from stdin.")
@json_option
@pass_ctx
def hooks_add(
    c: Context,
    url: str,
    program: str | None,
    trigger: str | None,
    secret_stdin: bool,
    as_json: bool,
) -> None:
    """Add URL (http(s)://... or mailto:ADDRESS; SMTP from WORKFLOW_SMTP_URL)."""
    secret = sys.stdin.readline().rstrip("\r\n") if secret_stdin else None
    hook = c.engine().notifications.add_hook(
        url, program=program, trigger=trigger, secret=secret
    )
    if as_json:
        emit_json(hook.to_dict())
    else:
        say(str(hook.id))


@hooks.command("list")
@json_option
@pass_ctx
def hooks_list(c: Context, as_json: bool) -> None:
    """The receivers."""
    found = c.engine().notifications.hooks()
    if as_json:
        emit_json([h.to_dict() for h in found])
        return
    table(
        None,
        ["id", "url", "program", "trigger", "secret", "added"],
        [
            (h.id, h.url, h.program or "*", h.trigger or "*", "yes" if h.has_secret else "no",
             h.created_at)
            for h in found
        ],
    )


@hooks.command("remove")
@click.argument("hook_id", metavar="ID", type=int)
@pass_ctx
def hooks_remove(c: Context, hook_id: int) -> None:
    """Remove a receiver (its pending deliveries are no longer sent)."""
    c.engine().notifications.remove_hook(hook_id)
    say(f"hook {hook_id} removed")


@click.command()
@click.option("--once", is_flag=True, help="One pass over what is due now, then exit.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=8, show_default=True,
              help="Tries before a delivery is marked dead.")
@click.option("--batch", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for a receiver.")
@click.option("--backoff", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="First retry delay in seconds (doubled each try, with jitter).")
@json_option
@pass_ctx
def deliver(
    c: Context,
    once: bool,
    max_attempts: int,
    batch: int,
    timeout: float,
    backoff: float,
    as_json: bool,
) -> None:
    """Deliver pending outbox entries (keeps running unless --once)."""
    stats = c.engine().notifications.deliver(
        once=once, max_attempts=max_attempts, batch=batch, timeout=timeout, backoff=backoff
    )
    if as_json:
        emit_json(stats.to_dict())
    else:
        say(f"{stats.delivered} delivered, {stats.failed} to retry, {stats.dead} dead")


@click.group()
def outbox() -> None:
    """Deliveries not yet made."""


@outbox.command("list")
@click.option("--dead", is_flag=True, help="Only deliveries given up on.")
@json_option
@pass_ctx
def outbox_list(c: Context, dead: bool, as_json: bool) -> None:
    """Pending (or dead) deliveries, oldest first."""
    found = c.engine().notifications.outbox(dead=dead)
    if as_json:
        emit_json([d.to_dict() for d in found])
        return
    table(
        None,
        ["id", "hook", "event", "status", "attempts", "next", "last error"],
        [
            (d.id, d.hook, d.event, d.status, d.attempts, d.next_at, d.last_error or "")
            for d in found
        ],
    )


@outbox.command("retry")
@click.argument("delivery_id", metavar="ID", type=int)
@pass_ctx
def outbox_retry(c: Context, delivery_id: int) -> None:
    """Put a dead or pending delivery back in line now."""
    c.engine().notifications.retry(delivery_id)
    say(f"outbox entry {delivery_id} queued again")


COMMANDS = (tick, hooks, deliver, outbox)
