"""Thai administrative areas by DOPA code, for the instances and grants that name them.

Every instance runs for one area and every grant covers one, so the engine needs one way to turn
what people type ("160117", "ต.บางขันหมาก อ.เมือง จ.ลพบุรี", "Bang Khan Mak, Lop Buri") into a
code, and to tell whether one area lies inside another. The data and the name rules are those of
``geothai``; this module adds one type for the three levels, strict matching (a name that fits
several areas is an error that lists them, never a guess) and caching for the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import chain, combinations, pairwise
from typing import Literal

import geothai
from geothai._areas import is_district, is_province  # the name rules geothai.match() applies
from geothai._normalize import normalize  # geothai's own clean-up of names and queries
from geothai.types import District, Province, Subdistrict

from workflow.errors import AreaNotFound
from workflow.runtime.text import AREA_MAX, identifier

__all__ = [
    "Area",
    "Level",
    "children",
    "get",
    "resolve",
    "subdistricts_within",
    "tambons_within",
    "within",
]

Level = Literal["province", "district", "subdistrict"]

_LEVELS: dict[int, Level] = {2: "province", 4: "district", 6: "subdistrict"}

# The leading words geothai's normalize() drops, and the level each one names. Matching ignores
# them, so "อำเภอแคนดง" would fit both the district and its tambon แคนดง; the word says which.
_LEVEL_WORDS: tuple[tuple[str, Level], ...] = (
    ("จังหวัด", "province"),
    ("จ.", "province"),
    ("กิ่งอำเภอ", "district"),
    ("อำเภอ", "district"),
    ("เขต", "district"),
    ("อ.", "district"),
    ("ตำบล", "subdistrict"),
    ("แขวง", "subdistrict"),
    ("ต.", "subdistrict"),
)

# Thai documents often write codes in Thai digits.
_THAI_DIGITS = str.maketrans("๐๑๒๓๔๕๖๗๘๙", "0123456789")

# A name split at spaces is tried as (area, parent) and (subdistrict, district, province); more
# words than this are not a name anyone types, and would only cost time.
_MAX_WORDS = 12


@dataclass(frozen=True, slots=True)
class Area:
    """A province, district (amphoe/khet) or subdistrict (tambon/khwaeng), by DOPA code."""

    code: str
    name_th: str
    name_en: str
    level: Level
    province_code: str

    def display(self, lang: str = "en") -> str:
        """Code, name and parent names, e.g. ``160117 Bang Khanmak, Mueang Lop Buri, Lop Buri``.

        ``lang`` is ``"en"`` or ``"th"`` (Thai names).
        """
        if lang not in ("en", "th"):
            raise ValueError(f"lang must be 'en' or 'th', not {lang!r}")
        lineage = [self.code[:n] for n in (6, 4, 2) if n <= len(self.code)]
        names = [a.name_th if lang == "th" else a.name_en for a in map(_lookup, lineage) if a]
        return f"{self.code} {', '.join(names)}"


def resolve(query: str) -> Area:
    """The one area a code or a name means.

    Accepts a code of 2, 4 or 6 digits, or a Thai or English name of a province, district or
    subdistrict as geothai matches names (case, spaces, hyphens and a leading "จังหวัด",
    "อำเภอ", "ตำบล", "จ.", "อ.", "ต." do not matter; "เมือง"/"Mueang" with a province is its
    capital district). A leading Thai level word also limits the match to that level. A name
    may be followed by its parents, after commas or spaces: "Bang Khanmak, Lop Buri",
    "บางขันหมาก ลพบุรี", "ต.บางขันหมาก อ.เมือง จ.ลพบุรี".

    Raises:
        AreaNotFound: nothing matches, or several areas do (``candidates`` then lists them).
        TextRefused: the query holds control or invisible characters, or is too long.
    """
    # The canonical form every typed name takes (NFC; invisible and control characters
    # refused with exit 2), so a lookalike name never matches or fails silently.
    if not query.strip():
        raise AreaNotFound(query)
    query = identifier(query, "area", AREA_MAX)
    found = _matches(query)
    if len(found) == 1:
        return found[0]
    if found:
        raise AreaNotFound(query, candidates=[a.display() for a in found])
    raise AreaNotFound(query)


def get(code: str) -> Area:
    """The area with this DOPA code (2, 4 or 6 digits); names are not accepted.

    Raises:
        AreaNotFound: not the code of a current area.
    """
    clean = _as_code(code)
    area = _lookup(clean) if clean else None
    if area is None:
        raise AreaNotFound(code)
    return area


def children(code: str) -> tuple[Area, ...]:
    """The districts of a province, or the subdistricts of a district, by code; none for a
    subdistrict.

    Raises:
        AreaNotFound: not the code of a current area.
    """
    return _children(get(code).code)


def subdistricts_within(code: str) -> tuple[Area, ...]:
    """Every subdistrict inside a province or district, or the subdistrict itself, by code.

    Raises:
        AreaNotFound: not the code of a current area.
    """
    return _subdistricts_within(get(code).code)


def tambons_within(query: str) -> tuple[str, ...]:
    """The codes of every tambon (subdistrict) inside the province or district ``query``
    names (a code or a Thai/English name, as :func:`resolve` reads it), or of the tambon
    itself: the areas a program is started for in bulk (``Engine.start_many(areas=...)``).

    Raises:
        AreaNotFound: nothing matches, or several areas do (``candidates`` then lists them).
        TextRefused: the query holds control or invisible characters, or is too long.
    """
    return tuple(a.code for a in subdistricts_within(resolve(query).code))


def within(code: str, prefix: str) -> bool:
    """Whether area ``code`` is area ``prefix`` or lies inside it.

    Compares the codes only (DOPA codes nest by prefix): it does not check that the areas
    exist, and is false unless both are codes of 2, 4 or 6 ASCII digits.
    """
    return _is_code(code) and _is_code(prefix) and code.startswith(prefix)


# --- codes -------------------------------------------------------------------------------------


def _is_code(text: str) -> bool:
    return len(text) in _LEVELS and text.isascii() and text.isdigit()


def _as_code(text: str) -> str | None:
    """``text`` as a well-formed code (spaces dropped, Thai digits read), or ``None``."""
    clean = text.strip().translate(_THAI_DIGITS)
    return clean if _is_code(clean) else None


def _geothai(code: str) -> Province | District | Subdistrict | None:
    """geothai's record for a well-formed code, or ``None``."""
    if len(code) == 2:
        return geothai.province(code)
    if len(code) == 4:
        return geothai.district(code)
    return geothai.subdistrict(code)


def _lookup(code: str) -> Area | None:
    """The current area with a well-formed code, or ``None``."""
    return None if _geothai(code) is None else _area(code)


@cache
def _area(code: str) -> Area:
    """The area with a code geothai knows (so the cache holds real areas only)."""
    found = _geothai(code)
    if found is None:
        raise AreaNotFound(code)
    return _from_geothai(found)


def _from_geothai(found: Province | District | Subdistrict) -> Area:
    return Area(found.code, found.name_th, found.name_en, _LEVELS[len(found.code)], found.code[:2])


@cache
def _children(code: str) -> tuple[Area, ...]:
    if len(code) == 2:
        return tuple(_area(d.code) for d in geothai.districts(code))
    if len(code) == 4:
        return tuple(_area(s.code) for s in geothai.subdistricts(code))
    return ()


@cache
def _subdistricts_within(code: str) -> tuple[Area, ...]:
    if len(code) == 6:
        return (_area(code),)
    if len(code) == 4:
        return _children(code)
    return tuple(s for d in _children(code) for s in _children(d.code))


# --- names -------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _matches(query: str) -> tuple[Area, ...]:
    """Every area ``query`` may mean, sorted by code (cached: resolve() is on the hot path)."""
    text = query.strip()
    code = _as_code(text)
    if code is not None:
        area = _lookup(code)
        return () if area is None else (area,)
    if "," in text:
        return _named([part.strip() for part in text.split(",") if part.strip()])
    whole = _named([text])
    words = text.split()
    if whole or len(words) > _MAX_WORDS:
        return whole
    cuts = range(1, len(words))
    found: dict[str, Area] = {}
    for cut in chain(combinations(cuts, 1), combinations(cuts, 2)):
        bounds = (0, *cut, len(words))
        parts = [" ".join(words[start:end]) for start, end in pairwise(bounds)]
        found.update((a.code, a) for a in _named(parts))
    return tuple(found[c] for c in sorted(found))


def _named(parts: list[str]) -> tuple[Area, ...]:
    """The areas named ``parts[0]`` inside the areas named by the rest, sorted by code.

    One part: any level. Two: a district in a province, or a subdistrict in a district or a
    province. Three: a subdistrict, its district, its province.
    """
    keys = [normalize(part) for part in parts]
    if not 1 <= len(parts) <= 3 or not all(keys):
        return ()
    hints = [_level_word(part) for part in parts]
    name, key, want = parts[0], keys[0], hints[0]
    found: list[Province | District | Subdistrict] = []
    if len(parts) == 1:
        if want in (None, "province"):
            found += [p for p in geothai.provinces() if is_province(p, key)]
        if want in (None, "district"):
            found += [d for d in _all_districts() if is_district(d, key)]
        if want in (None, "subdistrict"):
            found += [a.subdistrict for a in geothai.match(name)]
    elif len(parts) == 2:
        parent, parent_key, parent_level = parts[1], keys[1], hints[1]
        if want in (None, "district") and parent_level in (None, "province"):
            for p in geothai.provinces():
                if is_province(p, parent_key):
                    found += [d for d in geothai.districts(p.code) if is_district(d, key)]
        if want in (None, "subdistrict"):
            if parent_level in (None, "district"):
                found += [a.subdistrict for a in geothai.match(name, district=parent)]
            if parent_level in (None, "province"):
                found += [a.subdistrict for a in geothai.match(name, province=parent)]
    elif (
        want in (None, "subdistrict")
        and hints[1] in (None, "district")
        and hints[2] in (None, "province")
    ):
        matched = geothai.match(name, district=parts[1], province=parts[2])
        found += [a.subdistrict for a in matched]
    codes = sorted({f.code for f in found})
    return tuple(_area(c) for c in codes)


def _level_word(text: str) -> Level | None:
    """The level a leading Thai word such as "อำเภอ" or "ต." names, if the text starts with one."""
    start = text.lstrip()
    for word, level in _LEVEL_WORDS:
        if start.startswith(word):
            return level
    return None


@cache
def _all_districts() -> tuple[District, ...]:
    return tuple(d for p in geothai.provinces() for d in geothai.districts(p.code))
