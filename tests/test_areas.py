"""Tests of workflow.areas: DOPA codes and Thai/English names resolved with geothai."""

from __future__ import annotations

import geothai
import pytest
from geothai._normalize import normalize
from geothai.types import Subdistrict
from hypothesis import given
from hypothesis import strategies as st

from workflow.areas import (
    _LEVEL_WORDS,
    Area,
    children,
    get,
    resolve,
    subdistricts_within,
    within,
)
from workflow.errors import AreaNotFound, NotFound

ALL_PROVINCES = geothai.provinces()
ALL_DISTRICTS = [d for p in ALL_PROVINCES for d in geothai.districts(p.code)]
ALL_SUBDISTRICTS = [s for d in ALL_DISTRICTS for s in geothai.subdistricts(d.code)]
SUBDISTRICT_CODES = [s.code for s in ALL_SUBDISTRICTS]


def candidates_of(query: str) -> tuple[str, ...]:
    with pytest.raises(AreaNotFound) as caught:
        resolve(query)
    return caught.value.candidates


# --- the facts -----------------------------------------------------------------------------


def test_lop_buri_is_province_16() -> None:
    """Lop Buri is province 16 by code, Thai name and English name in any case."""
    expected = Area("16", "ลพบุรี", "Lop Buri", "province", "16")
    assert get("16") == expected
    for query in ("16", "ลพบุรี", "Lop Buri", "lop buri", "LOPBURI", "จังหวัดลพบุรี", "จ.ลพบุรี"):
        assert resolve(query) == expected


def test_mueang_lop_buri_is_district_1601() -> None:
    """Mueang Lop Buri is district 1601 of Lop Buri, also as "อ.เมือง จ.ลพบุรี"."""
    area = get("1601")
    assert (area.name_en, area.name_th, area.level) == ("Mueang Lop Buri", "เมืองลพบุรี", "district")
    assert area.province_code == "16"
    for query in ("Mueang Lop Buri", "อำเภอเมืองลพบุรี", "Mueang, Lop Buri", "อ.เมือง จ.ลพบุรี"):
        assert resolve(query).code == "1601"


def test_bang_khan_mak_is_a_tambon_of_mueang_lop_buri() -> None:
    """Tambon Bang Khan Mak (บางขันหมาก) is 160117, in Mueang Lop Buri."""
    area = resolve("บางขันหมาก")
    assert area == get("160117")
    assert area.level == "subdistrict"
    assert resolve("Bang Khan Mak") == area  # geothai spells it "Bang Khanmak"
    assert within(area.code, "1601")
    assert area in children("1601")


def test_buriram_and_khaen_dong() -> None:
    """Buri Ram is 31 and has district Khaen Dong (แคนดง), code 3122."""
    assert resolve("Buriram").code == "31"
    assert resolve("บุรีรัมย์").code == "31"
    khaen_dong = resolve("อำเภอแคนดง")
    assert (khaen_dong.code, khaen_dong.name_th) == ("3122", "แคนดง")
    assert khaen_dong.name_en == "Khaen Dong"
    assert khaen_dong in children("31")


def test_ratchaburi_ban_pong_khao_khlung() -> None:
    """Ratchaburi is 70, Ban Pong is its district 7005 and tambon Khao Khlung is 700513."""
    assert resolve("Ratchaburi").code == "70"
    ban_pong = resolve("อ.บ้านโป่ง จ.ราชบุรี")
    assert (ban_pong.code, ban_pong.name_en) == ("7005", "Ban Pong")
    khao_khlung = resolve("เขาขลุง")
    assert (khao_khlung.code, khao_khlung.name_en) == ("700513", "Khao Khlung")
    assert resolve("Khao Khlung, Ban Pong") == khao_khlung
    assert khao_khlung in children("7005")


def test_chai_nat_name_also_names_a_tambon() -> None:
    """Chai Nat is province 18 and a tambon of Mueang Chai Nat: the bare name is ambiguous."""
    assert candidates_of("Chai Nat") == (
        "18 Chai Nat",
        "180104 Chai Nat, Mueang Chai Nat, Chai Nat",
    )
    assert resolve("จังหวัดชัยนาท").code == "18"
    assert resolve("18").name_th == "ชัยนาท"


def test_chanthaburi_is_province_22() -> None:
    """Chanthaburi (จันทบุรี) is province 22."""
    assert resolve("Chanthaburi").code == "22"
    assert resolve("จันทบุรี").code == "22"


# --- codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["99", "1699", "169999", "100205", "1", "123", "1234567", "16a"])
def test_unknown_or_malformed_codes_are_not_found(query: str) -> None:
    """Codes of no current area (unknown, abolished, wrong length) raise AreaNotFound."""
    with pytest.raises(AreaNotFound) as caught:
        resolve(query)
    assert caught.value.candidates == ()
    assert caught.value.query == query
    with pytest.raises(AreaNotFound):
        get(query)


def test_codes_tolerate_spaces_and_thai_digits() -> None:
    """A code may have surrounding whitespace or be written in Thai digits."""
    assert resolve("  160117\n").code == "160117"
    assert get(" 1601 ").code == "1601"
    assert resolve("๑๖๐๑๑๗").code == "160117"


def test_get_takes_codes_only() -> None:
    """get() refuses names, even the name of exactly one area."""
    with pytest.raises(AreaNotFound):
        get("Lop Buri")


def test_area_not_found_is_a_not_found() -> None:
    """AreaNotFound is a NotFound, so the CLI exits with code 3."""
    with pytest.raises(NotFound) as caught:
        resolve("no such place")
    assert caught.value.exit_code == 3


def test_repeated_resolve_returns_the_cached_area() -> None:
    """resolve() of the same query returns the same object (the lookup is cached)."""
    assert resolve("160117") is resolve("160117")
    assert resolve("160117") is get("160117")


# --- names ---------------------------------------------------------------------------------


def test_ambiguous_tambon_name_lists_candidates() -> None:
    """หนองบัว names tambons in many provinces: the error lists every one, sorted by code."""
    found = candidates_of("หนองบัว")
    assert len(found) > 10
    assert "160207 Nong Bua, Phatthana Nikhom, Lop Buri" in found
    assert "180304 Nong Bua, Wat Sing, Chai Nat" in found
    assert list(found) == sorted(found)
    with pytest.raises(AreaNotFound, match="ambiguous"):
        resolve("หนองบัว")


def test_district_and_its_tambon_of_one_name_are_ambiguous() -> None:
    """แคนดง is both district 3122 and its tambon 312201; a Thai level word picks one."""
    assert candidates_of("แคนดง") == (
        "3122 Khaen Dong, Buri Ram",
        "312201 Khaen Dong, Khaen Dong, Buri Ram",
    )
    assert candidates_of("Khaen Dong, Buri Ram") == candidates_of("แคนดง")
    assert resolve("อำเภอแคนดง").code == "3122"
    assert resolve("อ. แคนดง").code == "3122"
    assert resolve("ตำบลแคนดง").code == "312201"
    assert resolve("ต.แคนดง บุรีรัมย์").code == "312201"


def test_qualified_names() -> None:
    """A name followed by its district and/or province, after commas or spaces, resolves."""
    for query in (
        "Bang Khan Mak, Lop Buri",
        "Bang Khan Mak, Mueang Lop Buri",
        "Bang Khan Mak, Mueang Lop Buri, Lop Buri",
        "bang khanmak, mueang, lop buri",
        "Bang Khan Mak Lop Buri",
        "บางขันหมาก ลพบุรี",
        "บางขันหมาก, เมืองลพบุรี, ลพบุรี",
        "ต.บางขันหมาก อ.เมือง จ.ลพบุรี",
        "ตำบลบางขันหมาก อำเภอเมืองลพบุรี จังหวัดลพบุรี",
        "บางขันหมาก อ. เมือง จ. ลพบุรี",
        "Bang Khan Mak, Lop Buri,",
    ):
        assert resolve(query).code == "160117", query


def test_qualifier_narrows_an_ambiguous_name() -> None:
    """หนองบัว with its province is the one tambon of that name there."""
    assert resolve("หนองบัว, ชัยนาท").code == "180304"
    assert resolve("Nong Bua, Phatthana Nikhom").code == "160207"


def test_wrong_parent_is_not_found() -> None:
    """A real name under a parent that does not contain it is not found."""
    with pytest.raises(AreaNotFound) as caught:
        resolve("Bang Khan Mak, Chanthaburi")
    assert caught.value.candidates == ()


def test_province_short_forms_from_geothai() -> None:
    """geothai's own short forms of provinces (กทม, อยุธยา) resolve."""
    assert resolve("กทม").code == "10"
    assert resolve("อยุธยา").code == "14"


@pytest.mark.parametrize("query", ["", "   ", ",", "xyz", "จังหวัด", "a, b, c, d"])
def test_empty_or_meaningless_queries_are_not_found(query: str) -> None:
    """Empty queries, bare level words and unknown names raise AreaNotFound, no candidates."""
    with pytest.raises(AreaNotFound) as caught:
        resolve(query)
    assert caught.value.candidates == ()


def test_level_words_are_those_geothai_drops() -> None:
    """Every level word the module reads is one geothai's normalize() drops from a name."""
    for word, _level in _LEVEL_WORDS:
        assert normalize(f"{word}ลพบุรี") == normalize("ลพบุรี"), word


def test_every_province_and_district_resolves_by_qualified_thai_name() -> None:
    """Each province by code and "จังหวัด…", each district by "อำเภอ…, province", is itself."""
    for p in ALL_PROVINCES:
        assert resolve(f"จังหวัด{p.name_th}").code == p.code
        assert resolve(p.code).name_th == p.name_th
    for d in ALL_DISTRICTS:
        province = geothai.province(d.province_code)
        assert province is not None
        # Bangkok's district names already start with "เขต", which names the level.
        name = d.name_th if d.name_th.startswith("เขต") else f"อำเภอ{d.name_th}"
        assert resolve(f"{name}, {province.name_th}").code == d.code
        assert resolve(f"{name}, {province.name_en}").code == d.code


# --- display -------------------------------------------------------------------------------


def test_display_includes_parents_in_the_chosen_language() -> None:
    """display() shows code, name and parent names, in English or Thai."""
    assert get("160117").display() == "160117 Bang Khanmak, Mueang Lop Buri, Lop Buri"
    assert get("160117").display("th") == "160117 บางขันหมาก, เมืองลพบุรี, ลพบุรี"
    assert get("1601").display() == "1601 Mueang Lop Buri, Lop Buri"
    assert get("1601").display("th") == "1601 เมืองลพบุรี, ลพบุรี"
    assert get("16").display() == "16 Lop Buri"
    assert get("16").display("th") == "16 ลพบุรี"


def test_display_refuses_unknown_language() -> None:
    """display() accepts only "en" and "th"."""
    with pytest.raises(ValueError, match="lang"):
        get("16").display("fr")


# --- hierarchy -----------------------------------------------------------------------------


def test_children_of_each_level() -> None:
    """children() gives a province's districts, a district's tambons, a tambon nothing."""
    districts = children("16")
    assert [a.code for a in districts] == [d.code for d in geothai.districts("16")]
    assert all(a.level == "district" and a.province_code == "16" for a in districts)
    tambons = children("1601")
    assert [a.code for a in tambons] == [s.code for s in geothai.subdistricts("1601")]
    assert all(a.level == "subdistrict" and within(a.code, "1601") for a in tambons)
    assert children("160117") == ()


def test_children_of_unknown_code_is_not_found() -> None:
    """children() and subdistricts_within() of an unknown code raise AreaNotFound."""
    with pytest.raises(AreaNotFound):
        children("99")
    with pytest.raises(AreaNotFound):
        subdistricts_within("1699")


def test_subdistricts_within_each_level() -> None:
    """subdistricts_within() gives every tambon of a province or district, or the tambon itself."""
    in_province = subdistricts_within("16")
    assert [a.code for a in in_province] == [
        s.code for d in geothai.districts("16") for s in geothai.subdistricts(d.code)
    ]
    assert all(a.level == "subdistrict" and within(a.code, "16") for a in in_province)
    assert subdistricts_within("1601") == children("1601")
    assert subdistricts_within("160117") == (get("160117"),)
    total = sum(len(subdistricts_within(p.code)) for p in ALL_PROVINCES)
    assert total == len(ALL_SUBDISTRICTS)


@pytest.mark.parametrize(
    ("code", "prefix", "expected"),
    [
        ("160117", "16", True),
        ("160117", "1601", True),
        ("160117", "160117", True),
        ("1601", "16", True),
        ("16", "16", True),
        ("16", "1601", False),
        ("160117", "1602", False),
        ("160117", "17", False),
        ("160117", "1", False),
        ("160117", "", False),
        ("16011", "16", False),
        ("abcdef", "ab", False),
    ],
)
def test_within(code: str, prefix: str, expected: bool) -> None:
    """within() is true when code is the area prefix or inside it, by whole DOPA levels."""
    assert within(code, prefix) is expected


# --- every area ----------------------------------------------------------------------------


@given(st.sampled_from(SUBDISTRICT_CODES))
def test_every_subdistrict_code_resolves_to_itself(code: str) -> None:
    """Any subdistrict code resolves to itself and lies within its province and district."""
    area = resolve(code)
    assert area.code == code
    assert area.level == "subdistrict"
    assert area.province_code == code[:2]
    assert within(code, code[:2])
    assert within(code, code[:4])
    assert area in children(code[:4])


@given(st.sampled_from(ALL_SUBDISTRICTS))
def test_every_subdistrict_resolves_by_thai_name_district_province(s: Subdistrict) -> None:
    """Any tambon's "name, district, province" in Thai resolves to that tambon."""
    district = geothai.district(s.district_code)
    province = geothai.province(s.province_code)
    assert district is not None and province is not None
    assert resolve(f"{s.name_th}, {district.name_th}, {province.name_th}").code == s.code
