"""The documentation stays true: diagrams in docs/programs.md match the definitions, every
validation code is documented, and the README's commands exist.

Run ``python tests/test_docs.py`` to refresh the diagrams after changing a definition.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from workflow import diagram
from workflow.cli import cli
from workflow.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS_MD = ROOT / "docs" / "programs.md"
BLOCK = re.compile(
    r"<!-- diagram:([a-z0-9-]+) -->\n(?:```mermaid\n.*?```\n<!-- /diagram -->\n)?", re.S
)


def rendered(text: str) -> str:
    """docs/programs.md with each diagram placeholder filled from the current definitions."""
    registry = Registry()

    def fill(m: re.Match[str]) -> str:
        program = registry.get(m.group(1))
        return (f"<!-- diagram:{program.id} -->\n```mermaid\n{diagram.mermaid(program)}\n```\n"
                "<!-- /diagram -->\n")

    return BLOCK.sub(fill, text)


def test_programs_md_diagrams_are_current() -> None:
    """Every Mermaid diagram in docs/programs.md is what `programs diagram` prints today."""
    text = PROGRAMS_MD.read_text(encoding="utf-8")
    assert BLOCK.findall(text), "docs/programs.md has no diagram blocks"
    assert rendered(text) == text, "diagrams are stale: run `python tests/test_docs.py`"


def test_readme_commands_exist() -> None:
    """Every `workflow SUBCOMMAND` named in README.md is a real command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = set(re.findall(r"^\s*(?:ID=\$\()?workflow (?:--\S+ \S+ )*([a-z][a-z-]*)", readme, re.M))
    assert names, "README.md names no workflow commands"
    assert names <= set(cli.commands), names - set(cli.commands)


if __name__ == "__main__":
    PROGRAMS_MD.write_text(rendered(PROGRAMS_MD.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
