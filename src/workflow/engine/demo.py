"""The stories of the five source documents, loaded as real instances through the engine.

Every start and fire carries an idempotency key, so running the demo twice changes nothing
the second time. Where a story begins mid-program (a workshop needs a kick-off first), the
earlier stages are recorded with a note saying the document does not give them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from workflow.engine.facade import Engine

#: Where a stage is needed to reach the documented one but the document does not record it.
NOT_IN_SOURCE = "ขั้นตอนก่อนหน้า ไม่ปรากฏในเอกสารต้นทาง (demo: preceding stage, not in the source)"

Step = tuple[str, str, str, dict[str, Any], str | None]  # trigger, actor, role, evidence, note

STORIES: list[dict[str, Any]] = [
    {
        "key": "lopburi",
        "story": "seed 000: Lopburi, Bang Khan Mak kick-off, 17 Feb 2564",
        "program": "leader-development",
        "area": "160117",
        "fiscal_year": 2564,
        "title": "ตำบลนำร่อง บางขันหมาก (Kong Thanu model)",
        "actor": "อุดมรัตน์ อมรเทพ",
        "role": "provincial_officer",
        "steps": [
            (
                "kickoff",
                "อุดมรัตน์ อมรเทพ",
                "provincial_officer",
                {
                    "date": "2564-02-17",
                    "venue": "ศูนย์เรียนรู้ ๙ ตามพ่อ หมู่ที่ 1 ตำบลบางขันหมาก",
                    "chair": "นายสินาทร โอ่เอี่ยม นายอำเภอเมืองลพบุรี",
                    "reporter": "นางอุดมรัตน์ อมรเทพ รักษาราชการแทนพัฒนาการจังหวัดลพบุรี",
                    "village": 1,
                    "partners": "อบต.โก่งธนู (โก่งธนูโมเดล)",
                },
                "Kick off ตำบลนำร่อง",
            ),
        ],
    },
    {
        "key": "buriram",
        "story": "seed 001: Buriram, Khaen Dong PLC workshop, 3-4 Mar 2565, 25 leaders",
        "program": "leader-development",
        "area": "312203",
        "fiscal_year": 2565,
        "title": "ผู้นำการเปลี่ยนแปลง บ้านสระบัว อำเภอแคนดง",
        "actor": "เดโช วันทนาพิทักษ์",
        "role": "provincial_officer",
        "steps": [
            (
                "kickoff",
                "เดโช วันทนาพิทักษ์",
                "provincial_officer",
                {
                    "date": "2565-03-03",
                    "venue": "สวนนาย่าการ์เด้น บ้านสระบัว อำเภอแคนดง",
                    "chair": "นายเดโช วันทนาพิทักษ์ พัฒนาการจังหวัดบุรีรัมย์",
                    "reporter": "นางรัชนี สาระวิถี ผอ.กลุ่มงานส่งเสริมฯ",
                },
                "ประธานเปิดโครงการฯ 08.30 น.",
            ),
            (
                "workshop",
                "รัชนี สาระวิถี",
                "provincial_officer",
                {
                    "date": "2565-03-03",
                    "end_date": "2565-03-04",
                    "venue": "สวนนาย่าการ์เด้น บ้านสระบัว อำเภอแคนดง",
                    "participants": 25,
                    "method": "Professional Learning Community (PLC)",
                    "topics": "วิสัยทัศน์/พันธกิจ ภาคี 7 ภาคี; หลักสูตรการให้บริการ วิทยากร แผนปฏิบัติการ",
                },
                None,
            ),
        ],
    },
    {
        "key": "ratchaburi",
        "story": "seed 002: Ratchaburi, Khao Khlung selected; kick-off set for 1 Mar 2564",
        "program": "leader-development",
        "area": "700513",
        "fiscal_year": 2564,
        "title": "ตำบลต้นแบบสารสนเทศ เขาขลุง",
        "actor": "ยุพิน เศรษฐศักดาศิริ",
        "role": "provincial_officer",
        "note": "ประชุม 18 ม.ค. 2564: คัดเลือกเป็นตำบลต้นแบบ; กำหนด kick off 1 มี.ค. 2564 "
        "ณ บ้านหนองไม้เฝ้า หมู่ที่ 4",
        "steps": [],
    },
    {
        "key": "chainat",
        "story": "seed 003: Chainat, One Plan committee workshop, 26 Nov 2564, 21 people",
        "program": "one-plan",
        "area": "18",
        "fiscal_year": 2565,
        "title": "แผนพัฒนาตำบล One Plan จังหวัดชัยนาท",
        "actor": "จำเรียงรัตน์ กล่ำมี",
        "role": "provincial_officer",
        "steps": [
            ("collect_data", "พัฒนากร ชัยนาท", "coordinator", {"date": "2564-10-15"}, NOT_IN_SOURCE),
            (
                "hold_forums",
                "พัฒนากร ชัยนาท",
                "coordinator",
                {"date": "2564-11-01", "villages": 8, "participants": 8},
                NOT_IN_SOURCE,
            ),
            (
                "train_committee",
                "จำเรียงรัตน์ กล่ำมี",
                "provincial_officer",
                {
                    "date": "2564-11-26",
                    "venue": "ห้องประชุมสำนักงานพัฒนาชุมชนจังหวัดชัยนาท ชั้น 2 ศาลากลางจังหวัดชัยนาทหลังเก่า",
                    "participants": 21,
                    "video_conference": True,
                    "topics": "การขับเคลื่อนและเชื่อมโยงแผน One Plan; กระบวนการแผนชุมชน; "
                    "แผนปฏิบัติการสนับสนุนการจัดทำแผนพัฒนาตำบล",
                },
                "ศอช.จ. 5 คน, ศอช.อ. 8 คน, นักวิชาการพัฒนาชุมชน 8 คน",
            ),
        ],
    },
    {
        "key": "chanthaburi",
        "story": "seed 004: Chanthaburi, Khok Nong Na drive, 13 Jan 2564",
        "program": "khok-nong-na",
        "area": "22",
        "fiscal_year": 2564,
        "title": "โคก หนอง นา โมเดล จังหวัดจันทบุรี",
        "actor": "พัฒนาการจังหวัดจันทบุรี",
        "role": "provincial_officer",
        "steps": [
            (
                "enroll",
                "พัฒนาการจังหวัดจันทบุรี",
                "provincial_officer",
                {"date": "2564-01-13", "households": 1},
                "ประชุมขับเคลื่อนผ่าน Video Conference ประธาน: อธิบดีกรมการพัฒนาชุมชน "
                "(จำนวนครัวเรือนไม่ปรากฏในเอกสาร)",
            ),
            (
                "start_training",
                "พัฒนากร จันทบุรี",
                "coordinator",
                {"date": "2564-01-13", "organizer": "สถาบันการพัฒนาชุมชน"},
                None,
            ),
            (
                "start_learning_areas",
                "พัฒนากร จันทบุรี",
                "coordinator",
                {"date": "2564-01-13", "organizer": "กองคลัง"},
                None,
            ),
            (
                "start_employment",
                "พัฒนากร จันทบุรี",
                "coordinator",
                {"date": "2564-01-13", "organizer": "กองการเจ้าหน้าที่"},
                None,
            ),
        ],
    },
]


#: The grants the stories need: each officer acts in their own province only.
GRANTS: list[tuple[str, str, str | None, str | None]] = [
    ("อุดมรัตน์ อมรเทพ", "provincial_officer", "16", None),
    ("เดโช วันทนาพิทักษ์", "provincial_officer", "31", None),
    ("รัชนี สาระวิถี", "provincial_officer", "31", None),
    ("ยุพิน เศรษฐศักดาศิริ", "provincial_officer", "70", None),
    ("จำเรียงรัตน์ กล่ำมี", "provincial_officer", "18", None),
    ("พัฒนากร ชัยนาท", "coordinator", "18", "one-plan"),
    ("พัฒนาการจังหวัดจันทบุรี", "provincial_officer", "22", None),
    ("พัฒนากร จันทบุรี", "coordinator", "22", "khok-nong-na"),
    ("ผู้ตรวจสอบภายใน", "auditor", None, None),
]


#: Accounts for trying the web pages on the demo database, and their grants. DEMO ONLY: their
#: passwords are printed on the terminal; never run `workflow demo` on a real database.
DEMO_ACCOUNTS: list[tuple[str, str, bool, list[tuple[str, str | None]]]] = [
    (
        "demo-officer",
        "เจ้าหน้าที่ทดลอง (demo only)",
        False,
        [
            ("provincial_officer", None),
            ("coordinator", None),
            ("inspector", None),
            ("committee", "one-plan"),
        ],
    ),
    ("demo-auditor", "ผู้ตรวจสอบทดลอง (demo only)", False, [("auditor", None)]),
    ("demo-admin", "ผู้ดูแลระบบทดลอง (demo only)", True, []),
]


@dataclass(frozen=True)
class DemoResult:
    instances: tuple[int, ...]
    new_events: int  # stages recorded by this run (0 when the demo was already loaded)
    featured: int
    featured_story: str
    #: (account, password) of each demo account this run created; (account, None) for one that
    #: existed already (its password was printed when it was created).
    accounts: tuple[tuple[str, str | None], ...] = ()


def load(engine: Engine) -> DemoResult:
    """Create (or find again) the demo instances; safe to run any number of times."""
    engine.init()
    for actor, role, area, program in GRANTS:
        engine.grant(actor, role, area=area, program=program, by="workflow demo")
    ids: list[int] = []
    new = 0
    for story in STORIES:
        key = f"demo:{story['key']}"
        inst = engine.start(
            story["program"],
            area=story["area"],
            fiscal_year=story["fiscal_year"],
            actor=story["actor"],
            role=story["role"],
            title=story["title"],
            note=story.get("note"),
            key=f"{key}:start",
            # The key makes a second run find the first; other instances for the same area
            # and year (the user's own) must not stop the demo.
            allow_duplicate=True,
        )
        for n, (trigger, actor, role, evidence, note) in enumerate(story["steps"], start=1):
            result = engine.fire(
                inst.id,
                trigger,
                actor=actor,
                role=role,
                evidence=evidence,
                note=note,
                key=f"{key}:{n}:{trigger}",
            )
            new += 0 if result.replayed else 1
        ids.append(inst.id)
    return DemoResult(tuple(ids), new, ids[1], STORIES[1]["story"], _demo_accounts(engine))


def _demo_accounts(engine: Engine) -> tuple[tuple[str, str | None], ...]:
    """Create the demo accounts that do not exist yet, each with a fresh random password."""
    existing = {a.name for a in engine.accounts.list()}
    made: list[tuple[str, str | None]] = []
    for name, display, admin, grants in DEMO_ACCOUNTS:
        for role, program in grants:
            engine.grant(name, role, program=program, by="workflow demo")
        if name in existing:
            made.append((name, None))
            continue
        password = secrets.token_urlsafe(12)
        engine.accounts.add(
            name, password, by="workflow demo", admin=admin, display_name=display
        )
        made.append((name, password))
    return tuple(made)
