"""The ``workflow`` command line: a thin layer over :class:`workflow.Engine`.

Each command opens an engine, calls the library and renders the result, as a table for
people or as JSON (``--json``) for scripts. Most make one library call; ``programs show``,
``programs diagram``, ``bulk-start`` and the CSV export still assemble what they print here.
Errors are one line on stderr with the contract's exit code (with ``--json``, one JSON
object ``{"error": {code, exit_code, message}}`` instead); a traceback only with
``--traceback``. Heavy imports (SQLAlchemy, transitions, rich) happen inside commands so that
``workflow --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from workflow.engine.facade import Engine
    from workflow.programs.model import Program
    from workflow.records import Event, Instance

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERNAL = 70


# --------------------------------------------------------------------------- plumbing


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

    def registry(self) -> Any:
        from workflow.programs.registry import Registry

        return Registry(self.definitions, allow_override=self.allow_override)


pass_ctx = click.make_pass_decorator(Context)


class _Errors:
    """How the error of this run is printed: as a JSON object on stderr when the command was
    asked for JSON (``--json``, ``audit log --format json``), else as one line of text."""

    as_json: bool | None = None  # None: not parsed yet (then the command line decides)


def _json_errors(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    # Called for the default too: once parsed, the option's value decides, not the argv.
    _Errors.as_json = value is True or value == "json"
    return value


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=_json_errors,
        help="Print JSON instead of a table (and errors as a JSON object on stderr).",
    )(f)


def be_option(f: F) -> F:
    return click.option(
        "--be", is_flag=True, help="Show dates with Buddhist-Era years (2564-02-17)."
    )(f)


def emit_json(data: Any) -> None:
    # UTF-8 bytes whatever the locale says: Thai text must survive a latin-1 or cp1252 pipe.
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    # json escapes C0 controls itself; C1 controls and bidi/format characters would reach the
    # terminal raw, so they are written as JSON escapes too (the same string once parsed).
    if not text.isascii():
        text = "".join(c if c.isprintable() or c == "\n" else f"\\u{ord(c):04x}" for c in text)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def say(text: object) -> None:
    """Print one message to a person: stored text in it is escaped (workflow.runtime.display)."""
    from workflow.runtime.display import printable

    click.echo(printable(text, multiline=True))


def cell(value: Any) -> str:
    """The text of one value in human-readable output (table cells and event blocks alike):
    the single place where a value becomes terminal text, with control characters escaped
    (workflow.runtime.display) so stored text never drives the terminal."""
    from workflow.runtime.display import printable

    return "" if value is None else printable(value, multiline=True)


def _width() -> int:
    """The width to render for: ``COLUMNS`` if set (also when piped), else the terminal's;
    piped output without ``COLUMNS`` gets room (160) rather than folding every cell."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return 160


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from workflow.runtime.display import printable

    # Cells are Text, not markup (a note "[red]" stays as typed), with control characters
    # escaped (workflow.runtime.display): stored text never drives the terminal.
    t = Table(
        title=None if title is None else Text(printable(title)),
        box=box.SIMPLE_HEAD,
        title_justify="left",
        show_lines=False,
    )
    for c in columns:
        t.add_column(Text(printable(c)), overflow="fold")
    for r in rows:
        t.add_row(*(Text(cell(v)) for v in r))
    Console(soft_wrap=False, width=_width()).print(t)


def _joined(parts: Sequence[str]) -> str:
    return "; ".join(parts)


def _words(text: str) -> list[str]:
    return text.split()


def event_view(columns: Sequence[str], rows: Sequence[Sequence[Any]], text: set[str]) -> None:
    """Events as a table when it fits the width, else as one block per event.

    A value is shown through :func:`cell`; a list (evidence fields) is several parts that a
    table joins with "; " and a block shows one per line.

    Columns not in ``text`` hold identifiers, times and states: they are never split, so
    the table needs their full width. ``text`` columns (evidence, notes) wrap at spaces
    only: they need their longest word. Thai is written without spaces between words, so a
    run of Thai counts as one word and is never cut inside a word or a grapheme cluster.
    When that does not fit, each event becomes a block with one field per line.
    """
    from rich.cells import cell_len

    shown = [[[cell(p) for p in (v if isinstance(v, list) else [v])] for v in r] for r in rows]
    width = _width()
    widths: list[int] = []
    room: list[int] = []  # how much wider each column could usefully be
    for i, name in enumerate(columns):
        values = [_joined(r[i]) for r in shown]
        widest = max([cell_len(name), *(cell_len(v) for v in values)])
        if name in text:
            longest = max((cell_len(w) for v in values for w in _words(v)), default=0)
            least = max(longest, min(cell_len(name), 12))
            widths.append(least)
            room.append(widest - least)
        else:
            widths.append(widest)
            room.append(0)
    spare = width - (sum(widths) + 3 * len(columns) + 1)  # rich's padding and rules
    if spare < 0:
        _event_blocks(columns, shown, width)
        return
    for i, extra in enumerate(room):
        grant = min(extra, spare)
        widths[i] += grant
        spare -= grant
    _event_table(columns, [[_joined(parts) for parts in r] for r in shown], text, widths, width)


def _event_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    text: set[str],
    widths: Sequence[int],
    width: int,
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, show_lines=False)
    for name, w in zip(columns, widths, strict=True):
        # Each width holds the column's longest word: text wraps at spaces, nothing folds.
        t.add_column(Text(name), width=w, no_wrap=name not in text, overflow="fold")
    for r in rows:
        t.add_row(*(Text(v) for v in r))  # Text, not markup: cell() already escaped them
    Console(soft_wrap=False, width=width).print(t)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken at spaces only (a longer word
    stays whole on a line of its own)."""
    from rich.cells import cell_len

    lines: list[str] = []
    line = ""
    for word in _words(text):
        if line and cell_len(line) + 1 + cell_len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return lines


def _event_blocks(
    columns: Sequence[str], rows: Sequence[Sequence[Sequence[str]]], width: int
) -> None:
    from rich.cells import cell_len

    label_width = max(cell_len(c) for c in columns)
    room = max(width - label_width - 2, 20)
    out: list[str] = []
    for n, r in enumerate(rows):
        if n:
            out.append("")
        for name, parts in zip(columns, r, strict=True):
            if not any(parts):
                continue  # an empty note is no field
            label = name + " " * (label_width - cell_len(name))
            lines = [line for part in parts for line in _wrap(part, room)] or [""]
            out.append(f"{label}  {lines[0]}".rstrip())
            out.extend(f"{' ' * label_width}  {line}".rstrip() for line in lines[1:])
    text = "\n".join(out) + "\n"
    sys.stdout.flush()
    # UTF-8 whatever the locale says, like emit_json: Thai text must survive any pipe.
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def show_time(at: str, be: bool) -> str:
    """A stored UTC timestamp shown to a person: to the second, optionally in BE."""
    text = at.replace("T", " ")[:19]
    if be:
        from workflow.runtime.evidence import to_be

        text = to_be(text[:10]) + text[10:]
    return text


def show_evidence(evidence: dict[str, Any], be: bool) -> list[str]:
    """Evidence as ``field=value`` parts (dates in BE with ``be``)."""
    from workflow.runtime.evidence import to_be

    parts = []
    for k, v in evidence.items():
        if be and isinstance(v, str) and len(v) == 10 and v[4] == "-" and v[7] == "-":
            v = to_be(v)
        parts.append(f"{k}={v}")
    return parts


def show_config(config: Sequence[str] | None) -> str:
    if not config:
        return "-"
    if len(config) == 1:
        return config[0]
    top = config[0].split(".")[0]
    return top + "{" + ", ".join(p.split(".", 1)[1] for p in config) + "}"


# --------------------------------------------------------------------------- the group


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


# --------------------------------------------------------------------------- init / demo


@cli.command()
@pass_ctx
def init(c: Context) -> None:
    """Create or upgrade the database schema (safe to run again)."""
    before, after = c.engine().init()
    if before == after:
        say(f"schema already at revision {after}: {c.engine().store.safe_url}")
    elif before is None:
        say(f"created schema revision {after}: {c.engine().store.safe_url}")
    else:
        say(f"upgraded schema {before} -> {after}: {c.engine().store.safe_url}")


@cli.command()
@pass_ctx
def demo(c: Context) -> None:
    """Load the stories of the source documents into the database and show them."""
    from workflow.engine.demo import load

    engine = c.engine()
    result = load(engine)
    say(
        f"Loaded {len(result.instances)} instances from the source documents into "
        f"{engine.store.safe_url} ({result.new_events} stages recorded by this run).\n"
    )
    _render_report(engine.report(), as_json=False)
    say(f"History of instance {result.featured} ({result.featured_story}):")
    _render_history(engine.history(result.featured), be=True)
    db = ""
    if c.db != "sqlite:///workflow.db":
        from workflow.storage.store import safe_url

        # Never the password (workflow.storage.store.safe_url), not even in a hint to copy.
        db = f" --db '{safe_url(c.db)}'"
        if safe_url(c.db) != c.db:
            say("(the password is shown as ***: give it with WORKFLOW_DB or a ~/.pgpass file)")
    first = result.instances[0]
    say("Try next:")
    for line in (
        f"workflow{db} list",
        f"workflow{db} show {first}",
        f"workflow{db} history {result.featured} --be",
        f"workflow{db} programs diagram khok-nong-na --instance {result.instances[-1]}",
        f"workflow{db} audit verify",
        f"workflow{db} audit log --format csv > audit.csv",
    ):
        say(f"  {line}")


# --------------------------------------------------------------------------- programs


@cli.group()
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
    from workflow.programs.loader import check_file
    from workflow.programs.registry import definition_files

    results = []
    for path in definition_files(paths):
        program, problems = check_file(path)
        results.append((str(path), program, problems))
    if not results:
        raise click.UsageError("no .yaml files found in the given paths")
    ok = all(not problems for _, _, problems in results)
    if as_json:
        emit_json(
            {
                "ok": ok,
                "files": [
                    {
                        "file": f,
                        "ok": not problems,
                        "program": p.id if p and not problems else None,
                        "version": p.version if p and not problems else None,
                        "problems": [
                            {"file": x.file, "line": x.line, "code": x.code, "message": x.message}
                            for x in problems
                        ],
                    }
                    for f, p, problems in results
                ],
            }
        )
    else:
        for f, p, problems in results:
            for x in problems:
                say(str(x))
            if not problems and p is not None:
                say(
                    f"{f}: ok ({p.id} v{p.version}, {len(p.all_states())} states, "
                    f"{len(p.transitions)} transitions)"
                )
    if not ok:
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

    active: Sequence[str] = ()
    visited: list[str] = []
    fired: list[tuple[str, str, str]] = []
    if instance_id is None:
        p = c.registry().get(program)
    else:
        engine = c.engine()
        p = engine.definition_of(instance_id)
        if p.id != program:
            raise click.UsageError(f"instance {instance_id} runs {p.id}, not {program}")
        inst = engine.get(instance_id)
        active = inst.active
        for e in engine.history(instance_id):
            visited.extend(e.to)
            fired.extend(_fired_edges(p, e))
    render = diagram.mermaid if fmt == "mermaid" else diagram.dot
    say(render(p, lang=lang, active=active, visited_states=visited, fired=fired))


def _fired_edges(p: Program, e: Event) -> list[tuple[str, str, str]]:
    if e.from_ is None:
        return []
    active: set[str] = set()
    for leaf in e.from_:
        parts = leaf.split(".")
        active.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [
        (src, e.trigger, t.dest)
        for t in p.transitions_for(e.trigger)
        for src in t.sources
        if src in active
    ][:1]


# --------------------------------------------------------------------------- instances


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
    table(None, ["", ""], rows)


@cli.command()
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


@cli.command("bulk-start")
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

    from workflow import areas

    engine = c.engine()
    tambons = [a.code for a in areas.subdistricts_within(areas.resolve(within).code)]
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


@cli.command()
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
    note: str | None,
    expect_version: int | None,
    key: str | None,
    be: bool,
    as_json: bool,
) -> None:
    """Fire TRIGGER on INSTANCE with its evidence."""
    from workflow.runtime.evidence import parse_assignments

    evidence = parse_assignments(assignments)
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


@cli.command()
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
    if role is not None or actor is not None:
        from dataclasses import replace

        inst = replace(
            inst, available_triggers=engine.available_triggers(instance, role=role, actor=actor)
        )
    if as_json:
        emit_json(inst.to_dict())
    else:
        _render_instance(inst, be)


@cli.command("list")
@click.option("--program", help="Only this program.")
@click.option("--state", help="Only instances in this top-level state.")
@click.option("--area", help="This area and everything inside it (code or name).")
@click.option("--fiscal-year", help="Only this Buddhist-Era fiscal year.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@json_option
@pass_ctx
def list_(
    c: Context,
    program: str | None,
    state: str | None,
    area: str | None,
    fiscal_year: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Instances, oldest first, with the contract's filters."""
    found = c.engine().list(
        program=program, state=state, area=area, fiscal_year=fiscal_year, limit=limit
    )
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


def _render_history(events: Sequence[Event], be: bool) -> None:
    event_view(
        ["seq", "at (UTC)", "trigger", "from", "to", "actor", "role", "evidence", "note"],
        [
            (
                e.seq,
                show_time(e.at, be),
                e.trigger,
                show_config(e.from_),
                show_config(e.to),
                e.actor,
                e.role,
                show_evidence(dict(e.evidence), be),
                e.note or "",
            )
            for e in events
        ],
        text={"evidence", "note"},
    )


@cli.command()
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
        _render_history(events, be)


def _render_report(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    fy = f" fiscal year {report.fiscal_year}" if report.fiscal_year else ""
    table(
        f"Instances by program, province and state{fy} (total {report.total})",
        ["program", "province", "state", "count", "regions done"],
        [
            (
                r.program,
                f"{r.province.code} {r.province.name_th} ({r.province.name_en})",
                r.state,
                r.count,
                ", ".join(f"{k} {v}" for k, v in r.regions_done.items()),
            )
            for r in report.rows
        ],
    )


@cli.command()
@click.option("--program", help="Only this program.")
@click.option("--fiscal-year", help="Only this Buddhist-Era fiscal year.")
@json_option
@pass_ctx
def report(c: Context, program: str | None, fiscal_year: str | None, as_json: bool) -> None:
    """Instances per program and state, by province."""
    _render_report(c.engine().report(program=program, fiscal_year=fiscal_year), as_json)


# --------------------------------------------------------------------------- actors


@cli.group()
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
@json_option
@pass_ctx
def actors_grant(
    c: Context,
    name: str,
    role: str,
    by: str | None,
    area: str | None,
    program: str | None,
    as_json: bool,
) -> None:
    """Let NAME act as ROLE (in --area and inside it, on --program)."""
    g = c.engine().grant(name, role, area=area, program=program, by=by)
    if as_json:
        emit_json(g.to_dict())
    else:
        say(f"granted {g.actor!r} {g.role} {_grant_scope(g)}")


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


def _grant_scope(g: Any) -> str:
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
        ["actor", "role", "area", "program", "granted by", "granted at (UTC)"],
        [
            (
                g.actor,
                g.role,
                _area_label(g.area),
                g.program or "(all)",
                g.granted_by,
                show_time(g.granted_at, False),
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


# --------------------------------------------------------------------------- audit


@cli.group()
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
    callback=_json_errors,
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
        _write_csv(events)
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


def _write_csv(events: Sequence[Event]) -> None:
    """Events as CSV for spreadsheets (workflow.runtime.display neutralises the cells)."""
    import csv
    import io

    from workflow.runtime.display import csv_cell

    buf = io.StringIO()
    # A BOM so that Excel opens the UTF-8 Thai text correctly.
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(
        [
            "id",
            "instance",
            "seq",
            "program",
            "area",
            "trigger",
            "from",
            "to",
            "actor",
            "role",
            "os_user",
            "at",
            "evidence",
            "note",
            "prev_hash",
            "hash",
        ]
    )
    for e in events:
        d = e.to_dict()
        # No cell runs as a spreadsheet formula; workflow.runtime.display.csv_value reads one back.
        w.writerow(
            csv_cell(v)
            for v in [
                e.id,
                e.instance,
                e.seq,
                e.program,
                e.area,
                e.trigger,
                json.dumps(d["from"], ensure_ascii=False),
                json.dumps(d["to"], ensure_ascii=False),
                e.actor,
                e.role,
                e.os_user,
                e.at,
                json.dumps(d["evidence"], ensure_ascii=False, sort_keys=True),
                e.note or "",
                e.prev_hash,
                e.hash,
            ]
        )
    sys.stdout.buffer.write(buf.getvalue().encode("utf-8"))
    sys.stdout.flush()


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


# --------------------------------------------------------------------------- entry point


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
    if _Errors.as_json:
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
    _Errors.as_json = None
    try:
        cli.main(args=args, prog_name="workflow", standalone_mode=False)
    except BaseException as e:
        if _Errors.as_json is None:
            _Errors.as_json = _asks_for_json(args)
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


# --------------------------------------------------------------------------- service (issue 11)
from workflow.cli.service import COMMANDS as _SERVICE_COMMANDS  # noqa: E402

for _command in _SERVICE_COMMANDS:
    cli.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
