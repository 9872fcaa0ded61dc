"""What every command receives: the global options as a :class:`Context`, and the options
many commands share (``--json``, ``--be``).

Its own module, not main.py, so that each command module can import it without importing the
root group (main.py imports the command modules to register them; ``python -m
workflow.cli.main`` would otherwise load a second copy of main.py with a state of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from workflow.engine.facade import Engine
    from workflow.programs.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """Global options, and the engine made from them on first use."""

    def __init__(
        self,
        db: str,
        definitions: Sequence[str],
        traceback: bool,
        lock_timeout: float | None = None,
        statement_timeout: float | None = None,
        allow_override: Sequence[str] = (),
    ) -> None:
        self.db = db
        self.definitions = list(definitions)
        self.traceback = traceback
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.allow_override = tuple(allow_override)
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        if self._engine is None:
            from workflow.engine.facade import Engine

            self._engine = Engine(
                self.db,
                self.definitions,
                allow_override=self.allow_override,
                lock_timeout=self.lock_timeout,
                statement_timeout=self.statement_timeout,
            )
        return self._engine

    def registry(self) -> Registry:
        """The program catalog alone, for commands that need no database."""
        from workflow.programs.registry import Registry

        return Registry(self.definitions, allow_override=self.allow_override)


pass_ctx = click.make_pass_decorator(Context)


class Errors:
    """How the error of this run is printed: as a JSON object on stderr when the command was
    asked for JSON (``--json``, ``audit log --format json``), else as one line of text."""

    as_json: bool | None = None  # None: not parsed yet (then the command line decides)


def json_errors(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """Option callback: JSON output asked for means errors as JSON too."""
    # Called for the default too: once parsed, the option's value decides, not the argv.
    Errors.as_json = value is True or value == "json"
    return value


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=json_errors,
        help="Print JSON instead of a table (and errors as a JSON object on stderr).",
    )(f)


def be_option(f: F) -> F:
    return click.option(
        "--be", is_flag=True, help="Show dates with Buddhist-Era years (2564-02-17)."
    )(f)
