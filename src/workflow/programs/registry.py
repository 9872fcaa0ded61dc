"""Finding programs: the bundled definitions plus any directories the caller adds.

Programs are indexed by (id, version). The newest version of a program is the one new instances
start on; older versions stay loadable because instances keep the version they started with
(the engine also keeps each version's exact text in the database).

A bundled program id belongs to the bundled file: an extra directory that carries the same id
(a new version, or different rules) is refused with ``E070`` unless the caller names that id
in ``allow_override``. Otherwise anyone able to add a directory could hand a role extra rights
on a program everybody takes for the official one. Each program remembers its ``source``
(``bundled`` or the extra file's path), which the engine stores with the definition.

:func:`validate` checks files before anyone adds them: every problem of every file at once,
with the JSON ``programs validate --json`` prints (a review page would show the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from workflow.errors import DefinitionError, Problem, ProgramNotFound
from workflow.programs.loader import check_file, load_text
from workflow.programs.model import BUNDLED, Program
from workflow.runtime.text import ID_MAX, identifier


def bundled_files() -> list[Path]:
    """The YAML files shipped inside the package (``workflow.definitions``)."""
    root = resources.files("workflow.definitions")
    return sorted(
        Path(str(entry)) for entry in root.iterdir() if entry.name.endswith((".yaml", ".yml"))
    )


@dataclass(frozen=True)
class FileCheck:
    """One definition file checked: the program it defines (when it parsed) and its problems."""

    file: str
    program: Program | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """``file``, ``ok``, ``program`` and ``version`` (``None`` unless valid), ``problems``."""
        valid = self.program if self.ok else None
        return {
            "file": self.file,
            "ok": self.ok,
            "program": valid.id if valid else None,
            "version": valid.version if valid else None,
            "problems": [
                {"file": x.file, "line": x.line, "code": x.code, "message": x.message}
                for x in self.problems
            ],
        }


@dataclass(frozen=True)
class Validation:
    """Every file under the paths given, checked; ``ok`` when none has a problem."""

    files: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "files": [f.to_dict() for f in self.files]}


def validate(paths: Iterable[str | Path]) -> Validation:
    """Check each definition file under ``paths`` (directories give their YAML files) and
    collect every problem; nothing is registered. No files at all is an empty Validation
    (``ok``: the caller decides whether that is a mistake)."""
    checks = []
    for path in definition_files(paths):
        program, problems = check_file(path)
        checks.append(FileCheck(str(path), program, tuple(problems)))
    return Validation(tuple(checks))


def definition_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their YAML files; keep files as given (reading them later
    says what is wrong with one that is not a regular file)."""
    out: list[Path] = []
    for p in (Path(x) for x in paths):
        if p.is_dir():
            try:
                out.extend(sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml")))
            except OSError:
                out.append(p)  # unlistable: reading it names the problem
        else:
            out.append(p)
    return out


def shadow_problem(program: Program) -> Problem:
    """E070: an extra file carries a bundled program id without the operator's say-so."""
    match = re.search(r"^program\s*:", program.source_text, re.M)
    line = program.source_text.count("\n", 0, match.start()) + 1 if match else 1
    return Problem(
        program.source_file,
        line,
        "E070",
        f"program {program.id!r} (version {program.version}) is bundled with workflow; an "
        f"extra directory may not replace or extend it (allow it explicitly with "
        f"--allow-override {program.id}, or give the program another id)",
    )


class Registry:
    """The programs known to one engine.

    ``allow_override`` names bundled program ids that the extra ``directories`` may replace
    with versions of their own; any other bundled id in them is a problem (``E070``).
    """

    def __init__(
        self,
        directories: Sequence[str | Path] = (),
        *,
        bundled: bool = True,
        allow_override: Iterable[str] = (),
    ) -> None:
        self._programs: dict[tuple[str, int], Program] = {}
        self.allow_override = frozenset(allow_override)
        bundled_ids: set[str] = set()
        problems: list[Problem] = []
        for f in bundled_files() if bundled else []:
            program, found = check_file(f)
            problems.extend(found)
            if program is not None and not found:
                bundled_ids.add(program.id)
                problems.extend(self._add(replace(program, source=BUNDLED)))
        for f in definition_files(directories):
            # check_file names what is wrong with a path (missing, a link loop, a FIFO...).
            program, found = check_file(f)
            problems.extend(found)
            if program is None or found:
                continue
            program = replace(program, source=str(f.resolve()))
            if program.id in bundled_ids and program.id not in self.allow_override:
                same = self._programs.get((program.id, program.version))
                if same is not None and same.content_hash == program.content_hash:
                    continue  # a verbatim copy of the bundled file changes nothing
                problems.append(shadow_problem(program))
                continue
            problems.extend(self._add(program))
        if problems:
            raise DefinitionError(problems)

    def _add(self, program: Program) -> list[Problem]:
        key = (program.id, program.version)
        existing = self._programs.get(key)
        if existing is not None and existing.content_hash != program.content_hash:
            return [
                Problem(
                    program.source_file,
                    1,
                    "E060",
                    f"{program.id} version {program.version} is also defined, differently, "
                    f"in {existing.source_file}; give one of them a new version",
                )
            ]
        self._programs.setdefault(key, program)
        return []

    def add_text(self, text: str, filename: str, source: str = "") -> Program:
        """Load a definition from text (a stored definition) and remember it."""
        program = replace(load_text(text, filename), source=source)
        problems = self._add(program)
        if problems:
            raise DefinitionError(problems)
        return program

    def programs(self) -> list[Program]:
        """The newest version of every program, by id."""
        newest: dict[str, Program] = {}
        for (pid, _version), program in sorted(self._programs.items()):
            newest[pid] = program
        return [newest[k] for k in sorted(newest)]

    def versions(self, program_id: str) -> list[Program]:
        return [p for (pid, _), p in sorted(self._programs.items()) if pid == program_id]

    def get(self, program_id: str, version: int | None = None) -> Program:
        """The program as typed (canonical form of ``workflow.runtime.text``), newest unless
        ``version``; ProgramNotFound if unknown."""
        program_id = identifier(program_id, "program", ID_MAX)
        if version is None:
            versions = self.versions(program_id)
            if versions:
                return versions[-1]
        else:
            found = self._programs.get((program_id, version))
            if found is not None:
                return found
        raise ProgramNotFound(program_id, version, known=[p.id for p in self.programs()])

    def find(self, program_id: str, version: int) -> Program | None:
        return self._programs.get((program_id, version))
