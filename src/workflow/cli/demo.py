"""``workflow demo``: load the source documents' stories and show what they left behind.

The stories themselves are the library's (workflow.engine.demo.load); this command then
reads the report and one instance's history (two more Engine calls) and prints them with the
commands to try next.
"""

from __future__ import annotations

import click

from workflow.cli.context import Context, pass_ctx
from workflow.cli.render import render_history, render_report, say


@click.command()
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
    render_report(engine.report(), as_json=False)
    say(f"History of instance {result.featured} ({result.featured_story}):")
    render_history(engine.history(result.featured), be=True)
    db = ""
    if c.db != "sqlite:///workflow.db":
        from workflow.storage.store import safe_url

        # Never the password (workflow.storage.store.safe_url), not even in a hint to copy.
        db = f" --db '{safe_url(c.db)}'"
        if safe_url(c.db) != c.db:
            say("(the password is shown as ***: give it with WORKFLOW_DB or a ~/.pgpass file)")
    first = result.instances[0]
    say("Demo accounts for the web pages (`workflow serve`, then http://127.0.0.1:8000/) -")
    say("DEMO ONLY: the passwords are printed here; never load the demo into a real database:")
    for name, password in result.accounts:
        shown = password if password else "(made by an earlier run; `workflow users passwd`)"
        say(f"  {name:<14} {shown}")
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
