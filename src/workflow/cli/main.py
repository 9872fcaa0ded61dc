"""The ``workflow`` command line: a skin over the library (:class:`workflow.Engine` and friends).

This module is the root: the group with the global options (``--db``, ``--definitions``...),
the registration of the command modules, and the one place errors become output: one line on
stderr with the contract's exit code (with JSON asked for, one object ``{"error": {code,
exit_code, message}}`` instead), a traceback only with ``--traceback``.

The commands live one module per group: schema (``init``), demo, programs, instances
(``start``, ``bulk-start``, ``fire``, ``show``, ``list``, ``history``), report, actors and
audit; cli/render.py prints, cli/context.py holds what they share. Each command parses its
options, calls the library and renders what it returns; the few that make a second call say
so in their module's docstring. Heavy imports (SQLAlchemy, transitions, rich, geothai) happen
inside commands so that ``workflow --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from workflow.cli.actors import actors
from workflow.cli.audit import audit
from workflow.cli.context import Context, Errors
from workflow.cli.demo import demo
from workflow.cli.evolution import COMMANDS as EVOLUTION_COMMANDS
from workflow.cli.instances import bulk_start, fire, history, list_, show, start
from workflow.cli.notify import COMMANDS as NOTIFY_COMMANDS
from workflow.cli.programs import programs
from workflow.cli.render import sane_terminal_size
from workflow.cli.report import report
from workflow.cli.schema import init
from workflow.cli.service import COMMANDS as SERVICE_COMMANDS

EXIT_INTERNAL = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    envvar="WORKFLOW_DB",
    default="sqlite:///workflow.db",
    show_default=True,
    help="SQLAlchemy database URL (env WORKFLOW_DB), e.g. postgresql+psycopg://user@host/dbname.",
)
@click.option(
    "--definitions",
    "definitions",
    multiple=True,
    type=click.Path(),
    help="Extra directory (or file) of program definitions; repeatable.",
)
@click.option(
    "--allow-override",
    "allow_override",
    multiple=True,
    metavar="PROGRAM",
    envvar="WORKFLOW_ALLOW_OVERRIDE",
    help="Let --definitions replace this bundled program with versions of its own; repeatable "
    "(env WORKFLOW_ALLOW_OVERRIDE, ids separated by spaces). Without it that is refused.",
)
@click.option("--traceback", is_flag=True, help="Show the Python traceback of an error.")
@click.option(
    "--lock-timeout",
    type=float,
    metavar="SECONDS",
    help="Give up (exit 6) after waiting this long for another session's lock "
    "(env WORKFLOW_LOCK_TIMEOUT; default 30).",
)
@click.option(
    "--statement-timeout",
    type=float,
    metavar="SECONDS",
    help="Cancel (exit 6) any PostgreSQL statement running longer than this "
    "(env WORKFLOW_STATEMENT_TIMEOUT; default: the server's setting).",
)
@click.version_option(package_name="workflow")
@click.pass_context
def cli(
    ctx: click.Context,
    db: str,
    definitions: tuple[str, ...],
    allow_override: tuple[str, ...],
    traceback: bool,
    lock_timeout: float | None,
    statement_timeout: float | None,
) -> None:
    """Run the programs of the Community Development Department (CDD) as persisted,
    audited state machines.

    Coordinators start a program for an area and fiscal year and fire its stages with
    evidence; auditors read and verify the trail. Start with `workflow demo`.
    """
    ctx.obj = Context(db, definitions, traceback, lock_timeout, statement_timeout, allow_override)


for command in (
    init,
    demo,
    programs,
    start,
    bulk_start,
    fire,
    show,
    list_,
    history,
    report,
    actors,
    audit,
    *SERVICE_COMMANDS,
    *EVOLUTION_COMMANDS,
    *NOTIFY_COMMANDS,
):
    cli.add_command(command)


# --------------------------------------------------------------------------- errors and exit


def _one_line(message: str) -> str:
    # One line, whatever the message quotes back: control characters (CR, ESC, NUL...) and
    # undecodable bytes from the command line are shown escaped, never sent to the terminal.
    from workflow.runtime.display import printable

    return printable(" ".join(message.split("\n")))


def _warn(message: str) -> None:
    click.echo(f"workflow: warning: {_one_line(message)}", err=True)


def _public_name(error: Exception) -> str:
    """The error's name as scripts see it: its nearest class in the public API (a refused
    text is the UsageError it derives from; TextRefused is an implementation detail)."""
    import workflow

    return next(c.__name__ for c in type(error).__mro__ if c.__name__ in workflow.__all__)


def _fail(
    message: str, code: int, name: str = "WorkflowError", warning: str | None = None
) -> NoReturn:
    """Print the error and exit with ``code``: one line of text (after a warning line, if
    any), or with JSON asked for, the object ``{"error": {"code": NAME, "exit_code": N,
    "message": ...}}`` on one line (the warning under ``"warning"``)."""
    if Errors.as_json:
        error: dict[str, Any] = {"code": name, "exit_code": code, "message": message}
        if warning is not None:
            error["warning"] = warning
        text = "".join(_json_escape(c) for c in json.dumps({"error": error}, ensure_ascii=False))
        sys.stderr.flush()
        # Undecodable command-line bytes (lone surrogates) become \udcXX: valid JSON too.
        sys.stderr.buffer.write((text + "\n").encode("utf-8", "backslashreplace"))
        sys.stderr.flush()
        sys.exit(code)
    if warning is not None:
        _warn(warning)
    click.echo(f"workflow: error: {_one_line(message)}", err=True)
    sys.exit(code)


def _print_traceback(args: Sequence[str]) -> None:
    """The current traceback on stderr, with the database URL's secrets masked."""
    urls = [os.environ.get("WORKFLOW_DB", "")]
    for i, arg in enumerate(args):
        if arg == "--db" and i + 1 < len(args):
            urls.append(args[i + 1])
        elif arg.startswith("--db="):
            urls.append(arg[len("--db=") :])
    text = traceback.format_exc()
    if any(urls):
        from workflow.storage.store import scrub, url_secrets

        for url in urls:
            text = scrub(text, url_secrets(url))
    sys.stderr.write(text)
    sys.stderr.flush()


def _json_escape(c: str) -> str:
    """A character of JSON text as it may reach a terminal: printable ones as they are,
    others (C1 controls, bidi overrides...) as \\u escapes, which JSON reads back the same."""
    if c.isprintable() or c == " ":
        return c
    n = ord(c)
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def _asks_for_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for JSON output, for errors raised before (or while)
    click parses it; once parsed, the options' own callback has the final word."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("--json", "--format=json") or (
            arg == "--format" and i + 1 < len(args) and args[i + 1] == "json"
        ):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI and turn errors into one line (text, or JSON when
    JSON was asked for) and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args or os.environ.get("WORKFLOW_TRACEBACK") == "1"
    sane_terminal_size()
    Errors.as_json = None
    try:
        cli.main(args=args, prog_name="workflow", standalone_mode=False)
    except BaseException as e:
        if Errors.as_json is None:
            Errors.as_json = _asks_for_json(args)
        _handle(e, show_traceback, args)


def _handle(e: BaseException, show_traceback: bool, args: Sequence[str]) -> NoReturn:
    try:
        raise e
    except click.exceptions.Abort:
        _fail("aborted", 130, "Aborted")
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        if show_traceback:
            _print_traceback(args)
        # One line like every other error, with where to look for the right usage.
        where = e.ctx.command_path if e.ctx is not None else "workflow"
        _fail(f"{e.format_message()} (see `{where} --help`)", e.exit_code, "UsageError")
    except click.ClickException as e:
        if show_traceback:
            _print_traceback(args)
        _fail(e.format_message(), e.exit_code, "UsageError")
    except KeyboardInterrupt:
        _fail("interrupted", 130, "Interrupted")
    except BrokenPipeError:
        sys.exit(0)
    except SystemExit:
        raise
    except Exception as e:
        from workflow.errors import WorkflowError

        if show_traceback:
            # The traceback, and still the contract's exit code.
            _print_traceback(args)
        if isinstance(e, WorkflowError):
            unrecorded = getattr(e, "denial_unrecorded", None)
            # Said, not swallowed; the refusal's own message and exit code follow.
            _fail(
                " ".join(str(e).split("\n")),
                e.exit_code,
                _public_name(e),
                f"this refusal could not be recorded as a denial: {unrecorded}"
                if unrecorded
                else None,
            )
        _fail(
            f"internal error: {type(e).__name__}: {e} (run with --traceback for details)",
            EXIT_INTERNAL,
            "InternalError",
        )


if __name__ == "__main__":  # pragma: no cover
    main()
