"""Tests of workflow.runtime.evidence: converting what people type into typed, canonical values."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.errors import EvidenceInvalid, UsageError
from workflow.programs.model import EvidenceField, Label, Transition
from workflow.runtime.evidence import (
    BE_OFFSET,
    BE_THRESHOLD,
    check_fiscal_year,
    convert,
    fiscal_year_of,
    parse_assignments,
    parse_date,
    to_be,
    validate,
)


def field(type_: str, **kw: object) -> EvidenceField:
    return EvidenceField(name="f", type=type_, **kw)  # type: ignore[arg-type]


def transition(*fields: EvidenceField) -> Transition:
    return Transition(trigger="kickoff", sources=("planned",), dest="kicked_off",
                      label=Label("ประชุม", "Kick-off"), roles=("coordinator",),
                      evidence=fields)


KICKOFF = transition(
    EvidenceField("date", "date", required=True),
    EvidenceField("venue", "text", required=True),
    EvidenceField("participants", "integer", min=1),
    EvidenceField("score", "number", min=0, max=100),
    EvidenceField("video", "boolean"),
    EvidenceField("level", "choice", choices=("outstanding", "excellent")),
)


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(("given_", "stored"), [
    ("2564-02-17", "2021-02-17"),
    ("2021-02-17", "2021-02-17"),
    (" 2565-03-04 ", "2022-03-04"),
    ("2400-01-01", "1857-01-01"),   # the threshold is read as BE
    ("2257-12-31", "2257-12-31"),   # CE, the last year a date may have
    ("1857-01-01", "1857-01-01"),   # CE, the first
    ("2563-02-29", "2020-02-29"),   # BE 2563 = 2020, a leap year
    (dt.date(2021, 2, 17), "2021-02-17"),
    (dt.datetime(2021, 2, 17, 13, 30), "2021-02-17"),
])
def test_dates(given_: object, stored: str) -> None:
    assert convert(field("date"), given_) == stored


@pytest.mark.parametrize("bad", [
    "2564-02-30", "2021-02-29", "2564-13-01", "2564-00-10", "2021-2-17", "17/02/2564",
    "2564-02-17T10:00", "", "2564", "0000-01-01", 20210217, None, True, ["2021-02-17"],
    "2399-12-31", "2258-01-01", "1856-12-31", "2801-01-01", "0010-01-25",
    dt.date(1, 1, 1), dt.datetime(9999, 1, 1),
])
def test_invalid_dates(bad: object) -> None:
    """Malformed, unreal and implausible dates (a year no fiscal year has) are refused."""
    with pytest.raises(ValueError):
        convert(field("date"), bad)


def test_implausible_year_message_names_the_range() -> None:
    """A two-digit year typed into a form names the value and the years a date may have;
    other dates (a token's end: "2999-12-31" for never) are not held to that range."""
    with pytest.raises(ValueError, match=r"0010-01-25 is outside .*BE 2400-2800 \(CE 1857-2257\)"):
        convert(field("date"), "0010-01-25")
    assert parse_date("2999-12-31") == dt.date(2456, 12, 31)  # BE 2999, accepted


def test_invalid_date_message_names_the_value() -> None:
    with pytest.raises(ValueError, match="2564-02-30"):
        parse_date("2564-02-30")


def test_be_constants_and_helpers() -> None:
    assert (BE_OFFSET, BE_THRESHOLD) == (543, 2400)
    assert to_be("2021-02-17") == "2564-02-17"
    assert to_be("not a date") == "not a date"
    assert fiscal_year_of(dt.date(2020, 10, 1)) == 2564
    assert fiscal_year_of(dt.date(2021, 9, 30)) == 2564
    assert fiscal_year_of(dt.date(2021, 10, 1)) == 2565


@settings(max_examples=200, deadline=None)
@given(st.dates(dt.date(1900, 1, 1), dt.date(2200, 12, 31)))
def test_be_and_ce_spellings_agree(d: dt.date) -> None:
    ce = d.isoformat()
    be = f"{d.year + 543:04d}-{d.month:02d}-{d.day:02d}"
    assert convert(field("date"), ce) == convert(field("date"), be) == ce
    assert to_be(ce) == be


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(("given_", "stored"), [
    (1, 1), ("25", 25), (" 1,200 ", 1200), (3.0, 3), ("-0", 0),
])
def test_integers(given_: object, stored: int) -> None:
    value = convert(field("integer"), given_)
    assert value == stored and type(value) is int


@pytest.mark.parametrize("bad", [
    "many", "2.5", 2.5, True, False, None, "", "1e3", math.nan, math.inf, 2**53 + 1,
    -(2**53) - 1, "9" * 5000,
])
def test_invalid_integers(bad: object) -> None:
    with pytest.raises(ValueError):
        convert(field("integer"), bad)


def test_integer_bounds() -> None:
    f = field("integer", min=1, max=10)
    assert convert(f, 1) == 1 and convert(f, 10) == 10
    with pytest.raises(ValueError, match="minimum"):
        convert(f, 0)
    with pytest.raises(ValueError, match="maximum"):
        convert(f, "11")
    assert convert(field("integer", min=0), 0) == 0


@given(st.integers(-(2**53), 2**53))
def test_integers_round_trip(n: int) -> None:
    assert convert(field("integer"), n) == convert(field("integer"), str(n)) == n


@pytest.mark.parametrize(("given_", "stored"), [
    (1.5, 1.5), ("2.25", 2.25), (25, 25), (25.0, 25), ("1,000.5", 1000.5), ("-3", -3),
])
def test_numbers(given_: object, stored: float) -> None:
    value = convert(field("number"), given_)
    assert value == stored and type(value) is type(stored)


@pytest.mark.parametrize("bad", [
    math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "lots",
    True, None, "", [1],
])
def test_non_finite_and_non_numbers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        convert(field("number"), bad)


def test_number_bounds() -> None:
    f = field("number", min=0, max=100)
    assert convert(f, 0) == 0 and convert(f, 100.0) == 100 and convert(f, 99.5) == 99.5
    for bad in (-0.01, 100.01, "101"):
        with pytest.raises(ValueError):
            convert(f, bad)


def test_huge_integer_for_a_number_field_is_refused() -> None:
    # Was an OverflowError from math.isfinite escaping validate.
    t = transition(EvidenceField("budget", "number"))
    with pytest.raises(EvidenceInvalid):
        validate(t, {"budget": 10**400})


# --------------------------------------------------------------------------- booleans, choices


@pytest.mark.parametrize(("given_", "stored"), [
    (True, True), (False, False), ("true", True), ("FALSE", False), ("yes", True), ("no", False),
    ("y", True), ("n", False), ("1", True), ("0", False), ("on", True), ("off", False),
    (" Yes ", True), ("ใช่", True), ("ไม่ใช่", False),
])
def test_booleans(given_: object, stored: bool) -> None:
    assert convert(field("boolean"), given_) is stored


@pytest.mark.parametrize("bad", ["maybe", "2", 1, 0, None, "", "ture"])
def test_invalid_booleans(bad: object) -> None:
    with pytest.raises(ValueError):
        convert(field("boolean"), bad)


def test_choices() -> None:
    f = field("choice", choices=("outstanding", "excellent", "1"))
    assert convert(f, "excellent") == "excellent"
    assert convert(f, " outstanding ") == "outstanding"
    assert convert(f, 1) == "1"
    for bad in ("Excellent", "good", "", True, 1.0, None):
        with pytest.raises(ValueError, match="outstanding, excellent"):
            convert(f, bad)


# --------------------------------------------------------------------------- text


def test_text() -> None:
    assert convert(field("text"), "  ศาลาประชาคม  ") == "ศาลาประชาคม"
    assert convert(field("text"), 2564) == "2564"
    assert convert(field("text"), "a\nb") == "a\nb"


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "\x00", None, True, ["x"], {"a": 1}])
def test_invalid_text(bad: object) -> None:
    with pytest.raises(ValueError):
        convert(field("text"), bad)


def test_text_max_length() -> None:
    f = field("text", max_length=5)
    assert convert(f, "12345") == "12345"
    assert convert(f, "  12345  ") == "12345"  # measured after stripping
    with pytest.raises(ValueError, match="at most 5"):
        convert(f, "123456")
    assert convert(field("text"), "x" * 2000) == "x" * 2000  # the default limit
    with pytest.raises(ValueError):
        convert(field("text"), "x" * 2001)


# --------------------------------------------------------------------------- validate


def test_validate_converts_and_orders_by_definition() -> None:
    typed = validate(KICKOFF, {"level": "excellent", "video": "yes", "score": "87.5",
                               "participants": "25", "venue": " บ้านสระบัว ",
                               "date": "2564-02-17"})
    assert typed == {"date": "2021-02-17", "venue": "บ้านสระบัว", "participants": 25,
                     "score": 87.5, "video": True, "level": "excellent"}
    assert list(typed) == ["date", "venue", "participants", "score", "video", "level"]


def test_optional_fields_may_be_left_out_or_empty() -> None:
    assert validate(KICKOFF, {"date": "2021-02-17", "venue": "x"}) == {
        "date": "2021-02-17", "venue": "x"}
    assert validate(KICKOFF, {"date": "2021-02-17", "venue": "x", "participants": "",
                              "level": None, "score": "  "}) == {
        "date": "2021-02-17", "venue": "x"}


@pytest.mark.parametrize("missing", ["date", "venue"])
def test_required_missing(missing: str) -> None:
    ev = {"date": "2564-02-17", "venue": "x"}
    for empty in (None, "", "  "):
        given_ = {**ev, missing: empty} if empty is not None else {
            k: v for k, v in ev.items() if k != missing}
        with pytest.raises(EvidenceInvalid) as caught:
            validate(KICKOFF, given_)
        assert caught.value.field == missing
        assert caught.value.trigger == "kickoff"
        assert "required" in caught.value.reason
        assert caught.value.exit_code == 4


def test_undeclared_field_is_refused() -> None:
    with pytest.raises(EvidenceInvalid) as caught:
        validate(KICKOFF, {"date": "2564-02-17", "venue": "x", "particpants": 3})
    assert caught.value.field == "particpants"
    assert "not declared" in caught.value.reason
    assert "participants" in caught.value.reason  # lists what is declared
    # Even an empty value for an undeclared field is refused: a typo must not pass silently.
    with pytest.raises(EvidenceInvalid):
        validate(KICKOFF, {"date": "2564-02-17", "venue": "x", "chairr": None})
    with pytest.raises(EvidenceInvalid) as caught:
        validate(transition(), {"anything": "x"})
    assert "none" in caught.value.reason


@pytest.mark.parametrize(("name", "value"), [
    ("date", "2564-02-30"), ("participants", 0), ("participants", "ten"), ("score", "nan"),
    ("score", 101), ("video", "maybe"), ("level", "good"), ("venue", "a\x00b"),
])
def test_invalid_values_name_the_field(name: str, value: object) -> None:
    with pytest.raises(EvidenceInvalid) as caught:
        validate(KICKOFF, {"date": "2564-02-17", "venue": "x", name: value})
    assert caught.value.field == name
    assert name in str(caught.value) and "kickoff" in str(caught.value)


def test_validate_with_nothing() -> None:
    assert validate(transition(), None) == {}
    assert validate(transition(), {}) == {}
    with pytest.raises(EvidenceInvalid):
        validate(KICKOFF, None)


# --------------------------------------------------------------------------- fiscal years


@pytest.mark.parametrize(("given_", "year"), [(2564, 2564), ("2565", 2565), (" 2564 ", 2564),
                                              (2400, 2400), (2800, 2800)])
def test_fiscal_years(given_: object, year: int) -> None:
    assert check_fiscal_year(given_) == year


def test_ce_fiscal_year_is_refused_with_a_hint() -> None:
    with pytest.raises(UsageError) as caught:
        check_fiscal_year(2021)
    assert "2564" in str(caught.value)
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError, match="2565"):
        check_fiscal_year("2022")


@pytest.mark.parametrize("bad", [2399, 2801, 0, -2564, 99999, "two", "", "2564.0", 2564.5,
                                 True, None])
def test_invalid_fiscal_years(bad: object) -> None:
    with pytest.raises(UsageError):
        check_fiscal_year(bad)


# --------------------------------------------------------------------------- --set FIELD=VALUE


def test_parse_assignments() -> None:
    assert parse_assignments(["date=2564-02-17", "venue=ศาลา = กลาง", "note=", " n =3"]) == {
        "date": "2564-02-17", "venue": "ศาลา = กลาง", "note": "", "n": "3"}
    assert parse_assignments(()) == {}


@pytest.mark.parametrize("items", [["venue"], ["=x"], [" =x"], ["a=1", "a=2"], ["a=1", " a =2"]])
def test_parse_assignments_errors(items: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_assignments(items)
    assert caught.value.exit_code == 2


# --------------------------------------------------------------------------- any input

_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**400), 10**400) | st.floats()
    | st.text(max_size=20) | st.dates().map(str)
    | st.sampled_from(["2564-02-17", " 25 ", "1,000", "yes", "excellent", "nan", "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=5,
)
_FIELDS = [field("text"), field("text", max_length=3), field("integer"),
           field("integer", min=0, max=10), field("number"), field("number", min=-1, max=1.5),
           field("date"), field("boolean"), field("choice", choices=("excellent", "1"))]
_PY_TYPES = {"text": str, "integer": int, "number": (int, float), "date": str,
             "boolean": bool, "choice": str}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_FIELDS), _ANY)
def test_convert_returns_the_type_or_raises_value_error(f: EvidenceField, value: object) -> None:
    try:
        out = convert(f, value)
    except ValueError:
        return
    assert isinstance(out, _PY_TYPES[f.type])
    assert not (f.type in ("integer", "number", "text", "date", "choice")
                and isinstance(out, bool))
    # The canonical form is a fixed point (except CE years from 2400 on, which only a BE year
    # from 2943 on produces, and which read back as BE: a known, harmless ambiguity).
    if not (f.type == "date" and int(str(out)[:4]) >= BE_THRESHOLD):
        assert convert(f, out) == out
    if f.type == "number":
        assert math.isfinite(out)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["date", "venue", "participants", "score", "video",
                                        "level", "other"]), _ANY, max_size=6))
def test_validate_refuses_only_with_evidence_invalid(raw: dict[str, object]) -> None:
    try:
        typed = validate(KICKOFF, raw)
    except EvidenceInvalid:
        return
    assert {"date", "venue"} <= set(typed) <= set(raw)
