"""Area names for the pages: an area with its district and province, and the typeahead.

The names are geothai's, through ``workflow.areas``. The typeahead matches a typed fragment
against the Thai and English names of every province, district and tambon (a few thousand
strings, indexed once per process); what a person finally submits is still resolved by
``workflow.areas.resolve`` in the engine, strictly.
"""

from __future__ import annotations

import contextlib
from functools import cache

from workflow import areas
from workflow.areas import Area
from workflow.errors import AreaNotFound

_PREFIX_TH = {"province": "จ.", "district": "อ.", "subdistrict": "ต."}
_PREFIX_BKK = {"province": "", "district": "เขต", "subdistrict": "แขวง"}


def _lineage(area: Area) -> list[Area]:
    out = [area]
    for n in (4, 2):
        if len(area.code) > n:
            with contextlib.suppress(AreaNotFound):
                out.append(areas.get(area.code[:n]))
    return out


def full_name(area: Area, lang: str) -> str:
    """"ต.บางขันหมาก อ.เมืองลพบุรี จ.ลพบุรี" / "Bang Khan Mak, Mueang Lop Buri, Lop Buri"."""
    if lang == "th":
        prefixes = _PREFIX_BKK if area.province_code == "10" else _PREFIX_TH
        return " ".join(f"{prefixes[a.level]}{a.name_th}" for a in _lineage(area))
    return ", ".join(a.name_en for a in _lineage(area))


def full_name_of(code: str, lang: str) -> str:
    """:func:`full_name` of an area code (the code itself when it is unknown)."""
    try:
        return full_name(areas.get(code), lang)
    except AreaNotFound:
        return code


@cache
def province_name(code: str, lang: str) -> str:
    try:
        a = areas.get(code)
    except AreaNotFound:
        return code
    return a.name_th if lang == "th" else a.name_en


@cache
def _index() -> tuple[tuple[str, str, str, str], ...]:
    """(code, Thai full name, English full name, lower-case search text) of every area."""
    out = []
    for p in range(10, 100):
        try:
            province = areas.get(f"{p:02d}")
        except AreaNotFound:
            continue
        for a in (province, *(d for d in areas.children(province.code)),
                  *areas.subdistricts_within(province.code)):
            th, en = full_name(a, "th"), full_name(a, "en")
            out.append((a.code, th, en, f"{a.code} {th} {en} {a.name_th} {a.name_en}".lower()))
    return tuple(out)


def suggest(query: str, lang: str, limit: int = 15) -> list[tuple[str, str]]:
    """Up to ``limit`` (code, name) pairs whose names contain every word of ``query``;
    provinces and districts before tambons."""
    words = [w for w in query.lower().replace(",", " ").split() if w]
    if not words or len(query) > 100:
        return []
    found = [(code, th if lang == "th" else en) for code, th, en, text in _index()
             if all(w in text for w in words)]
    found.sort(key=lambda x: (len(x[0]), x[0]))
    return found[:limit]
