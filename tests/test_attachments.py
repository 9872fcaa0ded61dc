"""Files as evidence (CONTRACT §8: type `file`, `--attach`, `attachments get`): stored
content-addressed (a directory beside a SQLite file, in the database for PostgreSQL, or a
directory given), the media type sniffed, limits enforced, verify re-hashing every file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import LOPBURI, OFFICER, dump_tables, execute, sql_engine
from workflow import Engine, EvidenceInvalid
from workflow.runtime.attachments import Upload, sniff

PROGRAM = """\
program: kickoff-files
version: 1
title: {th: "ประชุมพร้อมหลักฐาน", en: "Kick-off with files"}
roles: [provincial_officer]
initial: planned
states:
  planned: {th: "วางแผน", en: "Planned"}
  kicked_off: {th: "ประชุมแล้ว", en: "Kicked off", final: true}
transitions:
  - trigger: kickoff
    from: planned
    to: kicked_off
    label: {th: "ประชุม", en: "Kick-off"}
    roles: [provincial_officer]
    evidence:
      date: {type: date, required: true}
      photo: {type: file, max_bytes: 2000, media_types: ["image/*"]}
      attendance: {type: file, media_types: [application/pdf]}
"""
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 2
PDF = b"%PDF-1.7\n" + "ใบลงชื่อผู้เข้าร่วมประชุม".encode() * 10 + b"\n%%EOF\n"


def test_media_type_is_sniffed_from_content() -> None:
    """JPEG, PNG, PDF, text, Office documents, unknown bytes."""
    assert sniff(JPEG) == "image/jpeg"
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff(PDF) == "application/pdf"
    assert sniff("สรุปผล".encode()) == "text/plain"
    assert sniff(b"PK\x03\x04....word/document.xml").endswith("wordprocessingml.document")
    assert sniff(b"\x00\x01\x02\xfe") == "application/octet-stream"


@pytest.fixture
def files_engine(engine: Engine, tmp_path: Path) -> Any:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "files.yaml").write_text(PROGRAM, encoding="utf-8")
    with Engine(engine.url, [tmp_path / "defs"], policy=engine.policy) as eng:
        yield eng


def _kickoff(eng: Engine) -> int:
    inst = eng.start("kickoff-files", area=LOPBURI, fiscal_year=2564, actor="u", role=OFFICER)
    r = eng.fire(inst.id, "kickoff", actor="u", role=OFFICER,
                 evidence={"date": "2564-03-01", "photo": Upload("kickoff.jpg", JPEG),
                           "attendance": Upload("C:\\scan\\ใบลงชื่อ.pdf", PDF)})
    return r.event.instance or 0


def test_files_are_recorded_stored_and_handed_back(files_engine: Engine) -> None:
    """The event records sha256, name, media type and size; the bytes come back intact."""
    iid = _kickoff(files_engine)
    event = files_engine.history(iid)[1]
    assert event.evidence["photo"] == {
        "sha256": Upload("x", JPEG).sha256, "name": "kickoff.jpg",
        "media_type": "image/jpeg", "bytes": len(JPEG)}
    assert event.evidence["attendance"]["name"] == "ใบลงชื่อ.pdf"  # type: ignore[index]
    value, data = files_engine.attachment(iid, 2, "attendance")
    assert data == PDF and value["media_type"] == "application/pdf"
    assert files_engine.verify().ok


def test_limits_and_sniffed_types_are_enforced(files_engine: Engine) -> None:
    """Too large, a PDF named .jpg, a text value for a file field: refused, nothing stored."""
    inst = files_engine.start("kickoff-files", area=LOPBURI, fiscal_year=2564, actor="u",
                              role=OFFICER)
    before = dump_tables(files_engine.url)
    cases = [
        {"photo": Upload("big.jpg", JPEG * 10)},
        {"photo": Upload("photo.jpg", PDF)},
        {"attendance": "ใบลงชื่อ.pdf"},
    ]
    for extra in cases:
        with pytest.raises(EvidenceInvalid):
            files_engine.fire(inst.id, "kickoff", actor="u", role=OFFICER,
                              evidence={"date": "2564-03-01", **extra})
    assert dump_tables(files_engine.url) == before


def _tamper(url: str, store_dir: Path | None, sha: str, data: bytes | None) -> None:
    """Change (or with None remove) a stored file, as someone with the disk or SQL would."""
    if store_dir is not None:
        path = store_dir / sha[:2] / sha
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    if data is None:
        execute(url, "DELETE FROM workflow_attachments WHERE sha256 = :s", params={"s": sha})
    else:
        import sqlalchemy as sa

        eng = sql_engine(url)
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE workflow_attachments SET content = :c WHERE sha256 = :s"),
                         {"c": data, "s": sha})
        eng.dispose()


@pytest.mark.parametrize("change", ["altered", "removed"])
def test_verify_rehashes_stored_files(files_engine: Engine, change: str) -> None:
    """A stored file changed or removed is named by verify, with the event naming it."""
    iid = _kickoff(files_engine)
    sha = Upload("x", PDF).sha256
    directory = files_engine.store.attachments_dir
    assert (directory is None) == files_engine.url.startswith("postgresql")
    _tamper(files_engine.url, directory, sha, PDF.replace(b"1.7", b"1.4") if change == "altered"
            else None)
    problems = files_engine.verify().problems
    assert any(p.instance == iid and p.seq == 2 and "attendance" in p.reason
               and ("changed" if change == "altered" else "missing") in p.reason
               for p in problems), problems


def test_a_directory_can_be_given(engine: Engine, tmp_path: Path) -> None:
    """Engine(attachments=DIR) keeps the bytes there, on either backend."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "files.yaml").write_text(PROGRAM, encoding="utf-8")
    with Engine(engine.url, [tmp_path / "defs"], policy=engine.policy,
                attachments=tmp_path / "files") as eng:
        _kickoff(eng)
        sha = Upload("x", JPEG).sha256
        assert (tmp_path / "files" / sha[:2] / sha).read_bytes() == JPEG
        assert eng.verify().ok


def test_cli_attach_and_get(engine: Engine, tmp_path: Path, capsys: Any) -> None:
    """`fire --attach FIELD=PATH` and `attachments get ... -o PATH`."""
    from workflow.cli.main import main

    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "files.yaml").write_text(PROGRAM, encoding="utf-8")
    (tmp_path / "list.pdf").write_bytes(PDF)
    base = ["--db", engine.url, "--definitions", str(tmp_path / "defs")]

    def run(*args: str) -> int:
        try:
            main([*base, *args])
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    run("actors", "grant", "u", OFFICER)
    assert run("start", "kickoff-files", "--area", LOPBURI, "--fiscal-year", "2564",
               "--actor", "u", "--role", OFFICER) == 0
    iid = capsys.readouterr().out.strip().splitlines()[-1]
    assert run("fire", iid, "kickoff", "--actor", "u", "--role", OFFICER, "--set",
               "date=2564-03-01", "--attach", f"attendance={tmp_path / 'list.pdf'}") == 0
    assert run("attachments", "get", iid, "2", "attendance", "-o",
               str(tmp_path / "back.pdf")) == 0
    assert (tmp_path / "back.pdf").read_bytes() == PDF
    assert run("attachments", "get", iid, "2", "photo") == 3
    assert run("fire", iid, "kickoff", "--actor", "u", "--role", OFFICER, "--attach",
               f"photo={tmp_path / 'missing.jpg'}") == 2
