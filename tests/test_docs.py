"""The documentation stays true: diagrams in docs/programs.md match the definitions, every
validation code is documented, the README's commands exist, and every ``sh`` and ``python``
block of README.md and docs/*.md runs as written (blocks of other kinds, such as ``text``
output samples, are illustrations; a block that truly cannot run is preceded by
``<!-- docs-test: skip REASON -->``, and ``<!-- docs-test: setup COMMAND -->`` anywhere in a
document runs COMMAND before its blocks, for pages written against an existing database).

Run ``python tests/test_docs.py`` to refresh the diagrams after changing a definition.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow.cli.main import cli
from workflow.programs import diagram
from workflow.programs.registry import Registry

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


# --------------------------------------------------------------------------- runnable blocks

#: The documents whose code blocks are run: README.md and every page under docs/.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->\s*\Z", re.S)
SETUP = re.compile(r"<!--\s*docs-test:\s*setup\s+(.*?)\s*-->")
#: Also run on PostgreSQL (each command costs a process start, so not every page twice): the
#: README's sessions touch every kind of command that writes.
ON_POSTGRES = {"README.md"}
RUN = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}


@dataclass(frozen=True)
class Block:
    """A fenced code block of a document, with where it starts and how it is treated."""

    file: Path
    line: int
    language: str
    code: str
    skip: str | None  # the reason given by a `<!-- docs-test: skip REASON -->` marker

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``; a block right after a skip marker carries its reason."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        before = text[: m.start()]
        marker = SKIP.search(before)
        found.append(Block(path, before.count("\n") + 1, m.group(1).lower(), m.group(2),
                           marker.group(1) or "(no reason given)" if marker else None))
    return found


def script(path: Path) -> str:
    """One bash script running the document's sh and python blocks in order, stopping at
    the first failure and saying which block it was (shell variables carry over)."""
    out = ["set -euo pipefail"]
    for setup in SETUP.findall(path.read_text(encoding="utf-8")):
        out.append(f"echo 'docs-test: setup {setup}' >&2\n{setup} >/dev/null")
    for b in blocks(path):
        kind = RUN.get(b.language)
        if kind is None or b.skip is not None:
            continue
        out.append(f"echo 'docs-test: block {b.where}' >&2")
        if kind == "sh":
            out.append(b.code)
        else:
            out.append(f"python - <<'DOCS_TEST_PYTHON'\n{b.code}DOCS_TEST_PYTHON")
    return "\n".join(out) + "\n"


def test_skip_markers_are_rare_and_give_a_reason() -> None:
    """Blocks marked not to run say why, and stay few."""
    skipped = [b for p in DOCUMENTS for b in blocks(p) if b.skip is not None]
    assert all(b.skip and b.skip != "(no reason given)" for b in skipped), skipped
    assert len(skipped) <= 5, [b.where for b in skipped]
    runnable = [b for p in DOCUMENTS for b in blocks(p) if RUN.get(b.language)]
    assert len(runnable) >= 15


RUNNABLE = [d for d in DOCUMENTS
            if any(RUN.get(b.language) and b.skip is None for b in blocks(d))]
CASES = [
    *(pytest.param(d, "sqlite", id=f"sqlite-{d.name}") for d in RUNNABLE),
    *(pytest.param(d, "postgres", id=f"postgres-{d.name}", marks=pytest.mark.postgres)
      for d in RUNNABLE if d.name in ON_POSTGRES),
]


@pytest.mark.parametrize(("document", "db_kind"), CASES, indirect=["db_kind"])
def test_code_blocks_run_as_written(document: Path, backend: str, tmp_path: Path) -> None:
    """Every sh and python block of the document runs, in order, in an empty directory
    with the venv's `workflow` first on PATH, against a fresh database (WORKFLOW_DB: SQLite
    in that directory, or the PostgreSQL scratch database)."""
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["WORKFLOW_DB"] = backend if backend.startswith("postgresql") else "sqlite:///workflow.db"
    env["PYTHONIOENCODING"] = "utf-8"
    # A block that serves (`workflow serve --port "${PORT:-8000}"`) gets a free port, so that
    # runs on several workers never collide.
    env["PORT"] = str(free_port())
    p = subprocess.run(["bash", "-c", script(document)], cwd=work, env=env, text=True,
                       encoding="utf-8", capture_output=True, timeout=600, check=False)
    where = [line for line in p.stderr.splitlines() if line.startswith("docs-test: ")]
    assert p.returncode == 0, (
        f"{where[-1] if where else document} failed (exit {p.returncode}):\n"
        f"{p.stderr[-3000:]}")
