"""The next version (``NEXT``) of each bundled program, as a revision of the next fiscal year
would look: a renamed state, a merged state and a new optional stage each, and every date
declared ``within: fiscal_year``. Built from the bundled text of version ``BUNDLED`` (the
newest that ships, which new instances start on; so they follow it), written to a directory
the tests hand to ``Engine(definitions=..., allow_override=...)``.

- leader-development: kicked_off -> launched; evaluated + awarded -> assessed; new monitored
- khok-nong-na: evaluated -> reviewed; digital pending + underway -> underway; new audited
- one-plan: linked -> integrated; data_collected + forums_held -> consulted; new published
"""

from __future__ import annotations

import re
from pathlib import Path

from workflow.programs.registry import Registry

#: The --map of each migration from version 1 to 2.
MAPS: dict[str, dict[str, str]] = {
    "leader-development": {
        "kicked_off": "launched", "evaluated": "assessed", "awarded": "assessed",
    },
    "khok-nong-na": {
        "evaluated": "reviewed", "activities.digital.pending": "activities.digital.underway",
    },
    "one-plan": {
        "data_collected": "consulted", "forums_held": "consulted", "linked": "integrated",
    },
}
PROGRAMS = tuple(MAPS)
#: The newest bundled version (new instances start on it) and the fixtures' version.
BUNDLED = 2
NEXT = 3


def _within(text: str) -> str:
    """Every field named `date` declared within the fiscal year (where it is not yet)."""
    return re.sub(r"\n( +)date:\n( +)type: date\n(?!\2within)",
                  r"\n\1date:\n\2type: date\n\2within: fiscal_year\n", text)


def _sub(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text, old
    return text.replace(old, new, count)


def _drop_block(text: str, start: str) -> str:
    """Remove a transition block from ``start`` up to the next ``  - trigger:``."""
    i = text.index(start)
    j = text.index("\n  - trigger:", i + len(start))
    return text[:i] + text[j + 1:]


def _state_block(name: str, th: str, en: str) -> str:
    return f"  {name}:\n    th: \"{th}\"\n    en: \"{en}\"\n"


def _transition(trigger: str, src: str, dest: str, th: str, en: str, roles: str) -> str:
    return (f"  - trigger: {trigger}\n    from: {src}\n    to: {dest}\n"
            f"    label: {{th: \"{th}\", en: \"{en}\"}}\n    roles: [{roles}]\n"
            "    evidence:\n      date: {type: date, required: true, within: fiscal_year}\n\n")


def leader_v2(text: str) -> str:
    text = _sub(text, f"version: {BUNDLED}\n", f"version: {NEXT}\n")
    text = re.sub(r"  awarded: .*\n    th: .*\n    en: .*\n", "", text, count=1)
    text = _sub(text, '    en: "Implementing (food security)"\n',
                '    en: "Implementing (food security)"\n'
                + _state_block("monitored", "ติดตามในพื้นที่แล้ว", "Monitored on site"))
    text = re.sub(r"\bkicked_off\b", "launched", text)
    text = re.sub(r"\bevaluated\b", "assessed", text)
    text = re.sub(r"\bawarded\b", "assessed", text)
    text = _sub(text, "from: [assessed, assessed]", "from: assessed")
    text = _sub(text, "  - trigger: evaluate\n    from: implementing\n",
                _transition("monitor", "implementing", "monitored", "ติดตามในพื้นที่",
                            "On-site monitoring", "provincial_officer, coordinator")
                + "  - trigger: evaluate\n    from: [implementing, monitored]\n")
    return _within(text)


def khok_v2(text: str) -> str:
    text = _sub(text, f"version: {BUNDLED}\n", f"version: {NEXT}\n")
    text = re.sub(r"\bevaluated\b", "reviewed", text)
    digital = text.index("      digital:")
    head, tail = text[:digital], text[digital:]
    tail = _sub(tail, "initial: pending", "initial: underway")
    tail = re.sub(r"\n +pending: .*", "", tail, count=1)
    text = _drop_block(head + tail, "  - trigger: start_digital")
    text = _sub(text, "  closed:\n", _state_block("audited", "ตรวจสอบแล้ว", "Audited")
                + "  closed:\n")
    text = _sub(text, "  - trigger: close\n    from: reviewed\n",
                _transition("audit", "reviewed", "audited", "ตรวจสอบโครงการ", "Audit",
                            "provincial_officer")
                + "  - trigger: close\n    from: [reviewed, audited]\n")
    return _within(text)


def one_plan_v2(text: str) -> str:
    text = _sub(text, f"version: {BUNDLED}\n", f"version: {NEXT}\n")
    text = re.sub(r"  forums_held:.*\n    th: .*\n    en: .*\n", "", text, count=1)
    text = re.sub(r"\bdata_collected\b", "consulted", text)
    text = re.sub(r"\bforums_held\b", "consulted", text)
    text = re.sub(r"\blinked\b", "integrated", text)
    text = _sub(text, "  - trigger: train_committee\n    from: consulted\n",
                "  - trigger: train_committee\n    from: consulted\n"
                "    guards:\n      - happened: hold_forums\n")
    text = _sub(text, "  closed:\n", _state_block("published", "เผยแพร่แผนแล้ว", "Published")
                + "  closed:\n")
    text = _sub(text, "  - trigger: link_plans\n    from: approved\n",
                _transition("publish", "approved", "published", "เผยแพร่แผน", "Publish",
                            "coordinator")
                + "  - trigger: link_plans\n    from: [approved, published]\n")
    return _within(text)


MAKERS = {"leader-development": leader_v2, "khok-nong-na": khok_v2, "one-plan": one_plan_v2}


def write_v2(directory: Path, programs: tuple[str, ...] = PROGRAMS) -> Path:
    """Write version ``NEXT`` of ``programs`` into ``directory``; return it."""
    registry = Registry()
    directory.mkdir(parents=True, exist_ok=True)
    for pid in programs:
        text = MAKERS[pid](registry.get(pid, BUNDLED).source_text)
        (directory / f"{pid}-v2.yaml").write_text(text, encoding="utf-8")
    return directory
