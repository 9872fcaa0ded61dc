"""The package's rooms keep their doors: each third-party engine is imported in one place.

Only ``workflow.storage`` touches SQLAlchemy and Alembic, only ``workflow.runtime.machine``
touches transitions, only ``workflow.cli`` touches click, only ``workflow.service`` touches
FastAPI, Starlette, uvicorn, Jinja2 and openpyxl. A newcomer who wants to change how rows are
written, how a program moves, how a command prints or how a request is answered (or a page
drawn) finds it in that one room.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "workflow"

#: Top-level module -> the part of the package (a folder or one file) that alone may import it.
ROOMS = {
    "sqlalchemy": "storage",
    "alembic": "storage",
    "transitions": "runtime/machine.py",
    "click": "cli",
    "fastapi": "service",
    "starlette": "service",
    "uvicorn": "service",
    "jinja2": "service",
    "openpyxl": "service",
}


def _imports(path: Path) -> set[str]:
    """The top-level modules a source file imports, wherever in the file the import sits."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", sorted(ROOMS))
def test_one_room_imports_each_engine(module: str) -> None:
    room = ROOMS[module]
    importers = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if module in _imports(path)
    }
    assert importers, f"nothing imports {module}: is the rule still needed?"
    outside = {p for p in importers if not (p == room or p.startswith(room + "/"))}
    assert outside == set(), f"{module} imported outside {room}"


def test_every_folder_is_a_package() -> None:
    """Each room is a package with a docstring saying what it owns."""
    for folder in SRC.iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            init = folder / "__init__.py"
            assert init.is_file(), folder
            assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init
