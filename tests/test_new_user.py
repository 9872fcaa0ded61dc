"""What a new user trips over (issue 9, "small things"): unknown roles and states, evidence
problems one at a time, errors that ignore --json. On SQLite and PostgreSQL, through the
library and the command line."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest

from helpers import (
    KICKOFF,
    LOPBURI,
    OFFICER,
    dump_tables,
    open_engine,
    pop_denials,
    start_lopburi,
)
from reliability import cli_outcome as run_cli
from workflow import Engine, EvidenceInvalid, StateNotFound, UnknownRole
from workflow.cli.main import cli

# --------------------------------------------------------------------------- unknown role


def test_unknown_role_is_named_on_start_fire_and_show(engine: Engine) -> None:
    """A role the program does not declare is 'unknown role ... (roles: ...)', exit 4, on
    start, fire and available_triggers; the refusal is recorded as a denial, nothing else."""
    inst = start_lopburi(engine)
    before = dump_tables(engine.url)
    for attempt in (
        lambda: engine.start("leader-development", area="160101", fiscal_year=2564,
                             actor="u", role="officer"),
        lambda: engine.fire(inst.id, "kickoff", actor="u", role="officer", evidence=KICKOFF),
        lambda: engine.available_triggers(inst.id, role="officer"),
    ):
        with pytest.raises(UnknownRole) as caught:
            attempt()
        message = str(caught.value)
        assert message == ("unknown role 'officer' for program leader-development "
                           "(roles: coordinator, provincial_officer, inspector)")
        assert caught.value.exit_code == 4 and "grant" not in message
    after = dump_tables(engine.url)
    assert len(pop_denials(after)) == len(pop_denials(before)) + 2
    assert after == before


def test_unknown_role_on_the_command_line(engine: Engine,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """With real grants (the default policy) the CLI says 'unknown role', not 'no grant'."""
    with Engine(engine.url) as eng:
        eng.grant("udomrat", OFFICER)
        inst = start_lopburi(eng)
    code, out, err = run_cli(capsys, "--db", engine.url, "fire", str(inst.id), "kickoff",
                             "--actor", "udomrat", "--role", "provincial-officer")
    assert code == 4 and out == ""
    assert err == ("workflow: error: unknown role 'provincial-officer' for program "
                   "leader-development (roles: coordinator, provincial_officer, inspector)\n")


# --------------------------------------------------------------------------- unknown state


def test_list_refuses_a_state_no_program_has(engine: Engine,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`list --state` with a state no program (or not the given one) has is exit 3."""
    start_lopburi(engine)
    assert [i.state for i in engine.list(state="planned")] == ["planned"]
    assert engine.list(state="activities") == []  # khok-nong-na has it: a real, empty answer
    for state, program in (("plannned", None), ("activities", "leader-development")):
        with pytest.raises(StateNotFound) as caught:
            engine.list(state=state, program=program)
        assert caught.value.exit_code == 3 and repr(state) in str(caught.value)
        assert "planned" in caught.value.known
    code, out, err = run_cli(capsys, "--db", engine.url, "list", "--state", "plannned")
    assert code == 3 and out == "" and err.startswith("workflow: error: unknown state 'plannned'")
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- evidence


def test_every_evidence_problem_is_reported_at_once(engine: Engine) -> None:
    """Missing, invalid and undeclared fields are all named in one error (and its list)."""
    inst = start_lopburi(engine)
    before = dump_tables(engine.url)
    with pytest.raises(EvidenceInvalid) as caught:
        engine.fire(inst.id, "kickoff", actor="u", role=OFFICER, evidence={})
    assert caught.value.fields == ("date", "venue", "chair")
    assert all(reason == "required but missing" for _, reason in caught.value.problems)
    assert "'date'" in str(caught.value) and "'chair'" in str(caught.value)
    with pytest.raises(EvidenceInvalid) as caught:
        engine.fire(inst.id, "kickoff", actor="u", role=OFFICER,
                    evidence={"date": "2564-02-30", "venu": "x"})
    assert set(caught.value.fields) == {"date", "venu", "venue", "chair"}
    assert caught.value.exit_code == 4 and "\n" not in str(caught.value)
    assert dump_tables(engine.url) == before


def test_every_evidence_problem_on_the_command_line(engine: Engine,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's one line names every missing field; --json carries the same message."""
    inst = start_lopburi(engine)
    args = ["--db", engine.url, "fire", str(inst.id), "workshop", "--actor", "u", "--role",
            "coordinator"]
    engine.fire(inst.id, "kickoff", actor="u", role=OFFICER, evidence=KICKOFF)
    with Engine(engine.url) as eng:
        eng.grant("u", "coordinator")
    code, _, err = run_cli(capsys, *args, "--set", "participants=0")
    assert code == 4 and err.count("\n") == 1
    for name in ("'date'", "'venue'", "'participants'"):
        assert name in err


# --------------------------------------------------------------------------- JSON errors


#: A failing invocation of every command that takes --json (or --format json).
JSON_FAILURES: dict[str, tuple[list[str], int, str]] = {
    "start": (["start", "leader-development", "--area", "99", "--fiscal-year", "2564",
               "--actor", "u", "--role", OFFICER], 3, "AreaNotFound"),
    "bulk-start": (["bulk-start", "no-such", "--within", "16", "--fiscal-year", "2564",
                    "--actor", "u", "--role", OFFICER], 3, "ProgramNotFound"),
    "fire": (["fire", "999", "kickoff", "--actor", "u", "--role", OFFICER], 3,
             "InstanceNotFound"),
    "show": (["show", "999"], 3, "InstanceNotFound"),
    "list": (["list", "--state", "nowhere"], 3, "StateNotFound"),
    "history": (["history", "abc"], 2, "UsageError"),
    "report": (["report", "--fiscal-year", "12"], 2, "UsageError"),
    "programs list": (["--definitions", "/nonexistent/dir", "programs", "list"], 1,
                      "DefinitionError"),
    "programs show": (["programs", "show", "no-such"], 3, "ProgramNotFound"),
    "programs validate": (["programs", "validate", "--bogus"], 2, "UsageError"),
    "actors grant": (["actors", "grant", "u", "no_such_role"], 2, "UsageError"),
    "actors revoke": (["actors", "revoke", "u", OFFICER], 3, "GrantNotFound"),
    "actors list": (["actors", "list", "--actor", "a\x01b"], 2, "UsageError"),
    "audit log": (["audit", "log", "--since", "yesterday"], 2, "UsageError"),
    "audit verify": (["audit", "verify", "--digest", "/nonexistent.json"], 2, "UsageError"),
    "audit denials": (["audit", "denials", "--limit", "0"], 2, "UsageError"),
    "users list": (["users", "list", "--bogus"], 2, "UsageError"),
    "tokens create": (["tokens", "create", "nosuch"], 3, "AccountNotFound"),
    "tokens list": (["tokens", "list", "a\x01b"], 2, "UsageError"),
    "backup": (["backup", "/"], 2, "UsageError"),
    "audit check": (["audit", "check", "/nonexistent.json", "--public-key", "/nonexistent.pub"],
                    2, "UsageError"),
    "comment": (["comment", "999", "--actor", "u", "--role", OFFICER, "--text", "t"], 3,
                "InstanceNotFound"),
    "correct": (["correct", "999", "2", "--actor", "u", "--role", OFFICER, "--reason", "x"], 2,
                "UsageError"),
    "revert": (["revert", "999", "--actor", "u", "--role", OFFICER, "--reason", "x"], 3,
               "InstanceNotFound"),
    "migrate": (["migrate", "no-such", "--to-version", "2", "--actor", "u", "--role", OFFICER],
                3, "ProgramNotFound"),
    "tick": (["tick", "--now", "yesterday"], 2, "UsageError"),
    "deliver": (["deliver", "--once", "--max-attempts", "0"], 2, "UsageError"),
    "hooks add": (["hooks", "add", "ftp://x"], 2, "UsageError"),
    "hooks list": (["hooks", "list", "--bogus"], 2, "UsageError"),
    "outbox list": (["outbox", "list", "--bogus"], 2, "UsageError"),
}


def _json_commands() -> set[str]:
    found = set()

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix}{name}"
            if isinstance(command, click.Group):
                walk(command, path + " ")
            elif any(p.name == "as_json" or (p.name == "fmt" and "json" in getattr(
                    p.type, "choices", ())) for p in command.params):
                found.add(path)

    walk(cli, "")
    return found


def test_json_failures_cover_every_json_command() -> None:
    """The table below names every command that takes --json or --format json."""
    assert _json_commands() == set(JSON_FAILURES)


@pytest.mark.parametrize("command", sorted(JSON_FAILURES))
def test_errors_are_json_when_json_is_asked(engine: Engine, command: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """With --json, an error is one JSON object on stderr {error: {code, exit_code,
    message}} with the usual exit code; without it, the usual one line of text."""
    args, exit_code, name = JSON_FAILURES[command]
    flag = ["--format", "json"] if command == "audit log" else ["--json"]
    code, out, err = run_cli(capsys, "--db", engine.url, *args, *flag)
    assert (code, out) == (exit_code, ""), err
    assert err.count("\n") == 1
    error: dict[str, Any] = json.loads(err)
    assert set(error) == {"error"} and set(error["error"]) == {"code", "exit_code", "message"}
    assert error["error"]["code"] == name and error["error"]["exit_code"] == exit_code
    assert error["error"]["message"] and "Traceback" not in err
    code, _, text = run_cli(capsys, "--db", engine.url, *args)
    assert code == exit_code and text.startswith("workflow: error: ")
    assert error["error"]["message"] in text


def test_json_error_when_the_flag_comes_before_a_usage_error(
        engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error found while parsing is JSON too when --json is on the command line,
    and an option value that merely reads '--json' does not switch the format."""
    code, _, err = run_cli(capsys, "--db", engine.url, "show", "--json", "--no-such")
    assert code == 2 and json.loads(err)["error"]["code"] == "UsageError"
    inst = start_lopburi(open_engine(engine.url))
    code, _, err = run_cli(capsys, "--db", engine.url, "fire", str(inst.id), "nope",
                           "--actor", "u", "--role", OFFICER, "--note", "--json")
    assert code == 4 and err.startswith("workflow: error: ")


def test_engine_fixture_area_is_lopburi() -> None:
    """The helpers' area is the tambon the stories use (guards the cases above)."""
    assert LOPBURI == "160117"


# --------------------------------------------------------------------------- Graphviz font


def test_dot_names_a_thai_font_on_graph_nodes_and_edges(
        engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`programs diagram --format dot` (with and without --instance) sets a Thai-capable
    fontname with fallbacks on the graph, the node defaults and the edge defaults."""
    inst = start_lopburi(engine)
    font = '"Noto Sans Thai, Loma, Garuda, sans-serif"'
    for extra in ([], ["--instance", str(inst.id)]):
        code, out, err = run_cli(capsys, "--db", engine.url, "programs", "diagram",
                                 "leader-development", "--format", "dot", "--lang", "th",
                                 *extra)
        assert code == 0, err
        lines = out.splitlines()
        assert f"    fontname={font};" in lines
        assert any(line.startswith("    node [") and f"fontname={font}" in line
                   for line in lines)
        assert any(line.startswith("    edge [") and f"fontname={font}" in line
                   for line in lines)


# --------------------------------------------------------------------------- audit log dates


def test_audit_log_filters_recorded_time_and_evidence_date_apart(
        engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """--since/--until select by recording time, --date-from/--date-to by the evidence
    date (CE or BE, inclusive); a bad bound is exit 2 and changes nothing."""
    inst = start_lopburi(engine)
    engine.fire(inst.id, "kickoff", actor="u", role=OFFICER, evidence=KICKOFF)  # 2021-02-17
    engine.fire(inst.id, "workshop", actor="u", role="coordinator",
                evidence={"date": "2021-03-03", "venue": "v", "participants": 25})

    def triggers(**kwargs: Any) -> list[str]:
        return [e.trigger for e in engine.audit_log(**kwargs)]

    assert triggers(since="2564-03-01") == ["start", "kickoff", "workshop"]  # recorded today
    assert triggers(date_from="2564-03-01") == ["workshop"]
    assert triggers(date_from="2021-02-17", date_to="2564-02-17") == ["kickoff"]
    assert triggers(date_to="2021-02-16") == []
    assert triggers(date_from="2021-01-01", limit=1) == ["kickoff"]
    base = ["--db", engine.url, "audit", "log", "--format", "json"]
    code, out, err = run_cli(capsys, *base, "--date-from", "2564-02-18")
    assert code == 0, err
    assert [e["trigger"] for e in json.loads(out)] == ["workshop"]
    code, out, err = run_cli(capsys, *base, "--since", "2564-02-18")
    assert code == 0 and len(json.loads(out)) == 3
    before = dump_tables(engine.url)
    code, out, err = run_cli(capsys, "--db", engine.url, "audit", "log", "--date-to", "2564-13-01")
    assert code == 2 and out == "" and err.startswith("workflow: error: date_to: ")
    assert dump_tables(engine.url) == before
