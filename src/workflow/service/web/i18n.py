"""The pages' one translation catalogue (Thai first, English), Buddhist-Era dates, and the
engine's errors translated by their class.

Every text a page shows comes from :data:`TEXTS` through :func:`tr` (``{name}`` placeholders
filled from keyword arguments); a key missing from the catalogue is a bug the tests catch
(``tr`` raises ``KeyError``). Dates are shown as "17 ก.พ. 2564" (Thai) or "17 Feb 2564"
(English: still the Buddhist-Era year, as the source documents write it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from workflow.runtime.evidence import BE_OFFSET, fiscal_year_of

LANGS = ("th", "en")
DEFAULT_LANG = "th"

MONTHS_TH = ("มกราคม", "กุมภาพันธ์", "มีนาคม", "เมษายน", "พฤษภาคม", "มิถุนายน", "กรกฎาคม",
             "สิงหาคม", "กันยายน", "ตุลาคม", "พฤศจิกายน", "ธันวาคม")
MONTHS_TH_SHORT = ("ม.ค.", "ก.พ.", "มี.ค.", "เม.ย.", "พ.ค.", "มิ.ย.", "ก.ค.", "ส.ค.", "ก.ย.",
                   "ต.ค.", "พ.ย.", "ธ.ค.")
MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December")

#: key -> (Thai, English)
TEXTS: dict[str, tuple[str, str]] = {
    # frame
    "app": ("ระบบติดตามโครงการ กรมการพัฒนาชุมชน", "CDD programme tracker"),
    "skip": ("ข้ามไปยังเนื้อหา", "Skip to content"),
    "nav": ("เมนูหลัก", "Main menu"),
    "nav.work": ("งานของฉัน", "My work"),
    "nav.start": ("เริ่มโครงการ", "Start"),
    "nav.report": ("สรุปภาพรวม", "Dashboard"),
    "nav.audit": ("ตรวจสอบ", "Audit"),
    "nav.verify": ("ตรวจความถูกต้อง", "Verify"),
    "nav.admin": ("ผู้ดูแลระบบ", "Admin"),
    "nav.logout": ("ออกจากระบบ", "Log out"),
    "lang.switch": ("English", "ภาษาไทย"),
    "lang.label": ("เปลี่ยนภาษา", "Change language"),
    "signed_in": ("เข้าสู่ระบบในชื่อ {name}", "Signed in as {name}"),
    # login
    "login.title": ("เข้าสู่ระบบ", "Log in"),
    "login.name": ("ชื่อผู้ใช้", "User name"),
    "login.password": ("รหัสผ่าน", "Password"),
    "login.submit": ("เข้าสู่ระบบ", "Log in"),
    "login.expired": ("แบบฟอร์มหมดอายุ กรุณาเข้าสู่ระบบอีกครั้ง",
                      "The form expired; please log in again."),
    "login.wrong": ("ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง", "Wrong name or password."),
    "login.throttled": ("เข้าสู่ระบบผิดหลายครั้งเกินไป กรุณาลองใหม่ภายหลัง",
                        "Too many failed attempts; try again later."),
    "logout.title": ("ออกจากระบบ", "Log out"),
    "logout.confirm": ("ต้องการออกจากระบบหรือไม่", "Log out now?"),
    # my work
    "work.title": ("งานของฉัน", "My work"),
    "work.intro": ("โครงการที่คุณบันทึกขั้นตอนถัดไปได้ตอนนี้",
                   "Instances where you can record the next step now"),
    "work.none": ("ไม่มีงานที่รอคุณตามเงื่อนไขนี้", "Nothing waits for you with these filters."),
    "work.count": ("{n} รายการ", "{n} items"),
    "work.next": ("ขั้นตอนถัดไป: {step}", "Next step: {step}"),
    "work.open": ("เปิด", "Open"),
    "work.more": ("และอีก {n} รายการ (ใช้ตัวกรองเพื่อดูเพิ่ม)", "and {n} more (filter to see them)"),
    "work.widened": ("ไม่มีงานในปีงบประมาณ {fy} จึงแสดงงานของทุกปี",
                     "Nothing in fiscal year {fy}; showing every year."),
    "filter.title": ("ตัวกรอง", "Filters"),
    "filter.area": ("พื้นที่ (ชื่อหรือรหัส)", "Area (name or code)"),
    "filter.fy": ("ปีงบประมาณ (พ.ศ.)", "Fiscal year (BE)"),
    "filter.fy_all": ("ทุกปี", "All years"),
    "filter.state": ("สถานะ", "State"),
    "filter.program": ("โครงการ", "Program"),
    "filter.any": ("ทั้งหมด", "Any"),
    "filter.apply": ("กรอง", "Apply"),
    "filter.actor": ("ผู้บันทึก", "Actor"),
    "filter.since": ("บันทึกตั้งแต่", "Recorded from"),
    "filter.until": ("บันทึกถึง", "Recorded until"),
    "filter.date_from": ("วันที่กิจกรรมตั้งแต่", "Activity date from"),
    "filter.date_to": ("วันที่กิจกรรมถึง", "Activity date to"),
    # instance
    "inst.title": ("{program} · {area}", "{program} · {area}"),
    "inst.program": ("โครงการ", "Program"),
    "inst.area": ("พื้นที่", "Area"),
    "inst.fy": ("ปีงบประมาณ", "Fiscal year"),
    "inst.state": ("สถานะ", "State"),
    "inst.version": ("ฉบับที่", "Version"),
    "inst.tracker": ("ความคืบหน้า", "Progress"),
    "inst.lanes": ("กิจกรรม", "Activities"),
    "inst.actions": ("สิ่งที่คุณทำได้", "What you can do"),
    "inst.no_actions": ("ตอนนี้คุณไม่มีขั้นตอนที่บันทึกได้ในโครงการนี้",
                        "You have nothing to record on this instance now."),
    "inst.timeline": ("ประวัติการบันทึก", "Timeline"),
    "inst.diagram": ("แผนภาพขั้นตอน", "Diagram"),
    "inst.recorded": ("บันทึกแล้ว: {step}", "Recorded: {step}"),
    "inst.conflict": ("มีผู้อื่นเพิ่งบันทึก \u201c{step}\u201d ในโครงการนี้ กรุณาโหลดหน้าใหม่แล้วตรวจสอบอีกครั้ง",
                      "Someone else just recorded \u201c{step}\u201d on this instance; "
                      "reload and check before recording again."),
    "inst.reload": ("โหลดหน้าใหม่", "Reload"),
    "inst.fix": ("กรุณาแก้ไขช่องที่มีข้อความเตือน", "Please correct the fields marked below."),
    "step.done": ("เสร็จแล้ว", "done"),
    "step.current": ("ขั้นปัจจุบัน", "current"),
    "step.todo": ("ยังไม่ถึง", "to do"),
    "lane.pending": ("รอดำเนินการ", "pending"),
    "lane.underway": ("กำลังดำเนินการ", "underway"),
    "lane.done": ("เสร็จแล้ว", "done"),
    "ev.who": ("ผู้บันทึก", "Who"),
    "ev.role": ("บทบาท", "Role"),
    "ev.when": ("เมื่อ", "When"),
    "ev.evidence": ("หลักฐาน", "Evidence"),
    "ev.note": ("หมายเหตุ", "Note"),
    "ev.hash": ("แฮช", "Hash"),
    "ev.step": ("ขั้นตอน", "Step"),
    "ev.start": ("เริ่มโครงการ", "Started"),
    "ev.comment": ("ความเห็น", "Comment"),
    "ev.correct": ("แก้ไขบันทึก", "Correction"),
    "ev.revert": ("ย้อนขั้นตอน", "Step taken back"),
    "ev.migrate": ("ย้ายไปใช้โครงการฉบับใหม่", "Moved to a new program version"),
    "ev.overdue": ("เลยกำหนด", "Overdue"),
    "ev.corrected_by": ("แก้ไขโดยรายการ {seqs}", "corrected by {seqs}"),
    "ev.download": ("ดาวน์โหลด", "Download"),
    "ev.file": ("{name} ({size}, {media_type})", "{name} ({size}, {media_type})"),
    "ev.file_corrected": ("ไฟล์ที่แก้ไขแล้ว", "corrected file"),
    "ev.original": ("ที่บันทึกไว้เดิม", "As first recorded"),
    # mending (CONTRACT §8)
    "mend.title": ("แก้ไขและความเห็น", "Comments and corrections"),
    "mend.comment": ("เพิ่มความเห็น", "Add a comment"),
    "mend.comment_text": ("ความเห็น", "Comment"),
    "mend.comment_submit": ("บันทึกความเห็น", "Save comment"),
    "mend.correct": ("แก้ไขบันทึกที่ผ่านมา", "Correct an earlier record"),
    "mend.correct_intro": ("เลือกรายการและช่องที่ต้องการแก้ไข ข้อมูลเดิมยังคงอยู่ในประวัติ",
                           "Pick the record and the field to correct; the original stays in "
                           "the timeline."),
    "mend.target": ("รายการและช่องที่แก้ไข", "Record and field"),
    "mend.value": ("ค่าใหม่", "New value"),
    "mend.value_hint": ("วันที่ให้พิมพ์ วว/ดด/ปปปป (พ.ศ.) เช่น 8/3/2564; เว้นว่างเพื่อลบช่องที่ไม่บังคับ",
                        "Type a date as dd/mm/yyyy (BE), e.g. 8/3/2564; leave empty to "
                        "remove an optional field."),
    "mend.file": ("ไฟล์ใหม่", "New file"),
    "mend.file_hint": ("สำหรับช่องที่เป็นไฟล์ (รูปถ่าย เอกสาร): ไฟล์นี้แทนไฟล์เดิม ซึ่งยังอยู่ในประวัติ",
                       "For a file field (a photo, a document): this file replaces the one "
                       "recorded, which stays in the timeline."),
    "mend.file_missing": ("เลือกไฟล์ใหม่สำหรับช่องที่เป็นไฟล์",
                          "choose the new file for a file field"),
    "mend.reason": ("เหตุผล", "Reason"),
    "mend.correct_submit": ("บันทึกการแก้ไข", "Save correction"),
    "mend.correct_this": ("แก้ไขรายการนี้", "Correct this record"),
    "mend.revert": ("ย้อนขั้นตอนล่าสุด", "Take back the last step"),
    "mend.revert_intro": ("ย้อนกลับ {step}: โครงการจะกลับไปสถานะก่อนขั้นตอนนั้น "
                          "โดยประวัติยังคงอยู่ครบ",
                          "Take back {step}: the instance returns to the state before it; "
                          "the timeline keeps everything."),
    "mend.revert_submit": ("ย้อนขั้นตอน", "Take it back"),
    "mend.change": ("{old} → {new}", "{old} → {new}"),
    "mend.back_to": ("กลับไปที่", "Back to"),
    "mend.versions": ("ฉบับ", "Versions"),
    "mend.from": ("จาก", "From"),
    "mend.to": ("เป็น", "To"),
    "mend.refused": ("ระบบปฏิเสธ: {detail}", "Refused: {detail}"),
    "mend.pick": ("เลือกรายการและช่องที่ต้องการแก้ไข", "pick the record and field to correct"),
    "inst.due": ("กำหนดเสร็จ", "Due"),
    "due.by": ("กำหนด {when}", "due {when}"),
    "due.overdue": ("เลยกำหนด", "Overdue"),
    "due.escalated": ("ส่งต่อถึงคุณ ({roles})", "Escalated to you ({roles})"),
    "work.overdue_first": ("{n} รายการเลยกำหนด แสดงไว้ก่อน", "{n} overdue, shown first"),
    # forms
    "form.as_role": ("บันทึกในบทบาท", "Record as"),
    "form.note": ("หมายเหตุ (ถ้ามี)", "Note (optional)"),
    "form.more": ("ข้อมูลเพิ่มเติม (ไม่บังคับ)", "More details (optional)"),
    "form.required": ("จำเป็น", "required"),
    "form.submit": ("บันทึก", "Record"),
    "form.yes": ("ใช่", "Yes"),
    "form.no": ("ไม่ใช่", "No"),
    "form.unset": ("— ไม่ระบุ —", "— not given —"),
    "form.choose": ("— เลือก —", "— choose —"),
    "form.day": ("วัน", "Day"),
    "form.month": ("เดือน", "Month"),
    "form.year": ("ปี พ.ศ.", "Year (BE)"),
    "form.min": ("ไม่น้อยกว่า {n}", "at least {n}"),
    "form.max": ("ไม่เกิน {n}", "at most {n}"),
    "form.date_incomplete": ("กรอกวัน เดือน และปี พ.ศ. ให้ครบ",
                             "give the day, month and BE year"),
    "form.file_max": ("ขนาดไม่เกิน {size}", "at most {size}"),
    "form.file_types": ("ชนิดไฟล์: {types}", "file types: {types}"),
    "form.file_too_big": ("ไฟล์ใหญ่เกินไป รับได้ไม่เกิน {size}",
                          "the file is too large; at most {size}"),
    "form.file_again": ("ไฟล์ที่เลือกไว้: {name} (ยังไม่ได้บันทึก กรุณาเลือกไฟล์อีกครั้ง)",
                        "You chose {name} (not recorded; choose the file again)"),
    # field problems (the engine's reasons, by their shape)
    "err.required": ("จำเป็นต้องกรอก", "required"),
    "err.not_date": ("ไม่ใช่วันที่ที่ถูกต้อง", "not a real date"),
    "err.not_int": ("ต้องเป็นจำนวนเต็ม", "must be a whole number"),
    "err.not_number": ("ต้องเป็นตัวเลข", "must be a number"),
    "err.below": ("ต่ำกว่าค่าต่ำสุด {n}", "below the minimum {n}"),
    "err.above": ("สูงกว่าค่าสูงสุด {n}", "above the maximum {n}"),
    "err.choice": ("ต้องเลือกจากรายการ", "must be one of the choices"),
    "err.too_long": ("ยาวเกินไป", "too long"),
    "err.file_empty": ("ไฟล์ว่างเปล่า", "the file is empty"),
    "err.file_size": ("ไฟล์มีขนาด {size} รับได้ไม่เกิน {limit}",
                      "the file is {size}; at most {limit}"),
    "err.file_type": ("ไฟล์นี้เป็นชนิด {found} (ตรวจจากเนื้อไฟล์) รับเฉพาะ {allowed}",
                      "this file is {found} (by its content); allowed: {allowed}"),
    "err.file_expected": ("กรุณาเลือกไฟล์", "choose a file"),
    "err.file_missing": ("ไม่พบไฟล์ที่อ้างถึงในระบบ", "names a file that is not stored"),
    # errors by class (the API's `code`)
    "code.EvidenceInvalid": ("ข้อมูลหลักฐานไม่ถูกต้อง", "The evidence is not valid."),
    "code.GuardFailed": ("ยังไม่ตรงเงื่อนไขของขั้นตอนนี้: {detail}",
                         "This step's condition is not met: {detail}"),
    "code.TriggerNotAllowed": ("ขั้นตอนนี้บันทึกไม่ได้ในสถานะปัจจุบัน",
                               "This step cannot be recorded in the current state."),
    "code.RoleNotAllowed": ("บทบาทนี้บันทึกขั้นตอนนี้ไม่ได้", "This role may not record this step."),
    "code.UnknownRole": ("โครงการนี้ไม่มีบทบาทดังกล่าว", "The program has no such role."),
    "code.PermissionDenied": ("คุณไม่มีสิทธิ์ในพื้นที่หรือโครงการนี้ (ระบบบันทึกการปฏิเสธไว้แล้ว)",
                              "You hold no permission for this area or program "
                              "(the refusal was recorded)."),
    "code.NotAuthenticated": ("กรุณาเข้าสู่ระบบ", "Please log in."),
    "code.VersionConflict": ("มีผู้อื่นเพิ่งบันทึกในโครงการนี้ กรุณาโหลดหน้าใหม่",
                             "Someone else just recorded on this instance; reload."),
    "code.DuplicateInstance": ("พื้นที่นี้มีโครงการนี้ในปีงบประมาณนี้แล้ว (รายการที่ {existing})",
                               "This area already runs this program this fiscal year "
                               "(instance {existing})."),
    "code.AreaNotFound": ("ไม่พบพื้นที่ หรือชื่อซ้ำกันหลายแห่ง กรุณาระบุรหัส",
                          "Unknown or ambiguous area; give its code."),
    "code.InstanceNotFound": ("ไม่พบรายการนี้", "No such instance."),
    "code.ProgramNotFound": ("ไม่พบโครงการนี้", "No such program."),
    "code.StateNotFound": ("ไม่มีสถานะนี้", "No such state."),
    "code.AccountNotFound": ("ไม่พบบัญชีผู้ใช้นี้", "No such account."),
    "code.AccountExists": ("มีบัญชีชื่อนี้แล้ว", "An account of that name exists already."),
    "code.GrantNotFound": ("ไม่มีสิทธิ์นี้อยู่", "No such grant."),
    "code.TokenNotFound": ("ไม่พบโทเค็นนี้", "No such token."),
    "code.UsageError": ("ข้อมูลที่ส่งมาไม่ถูกต้อง: {detail}", "Invalid input: {detail}"),
    "code.TextRefused": ("ข้อความไม่ถูกต้อง: {detail}", "Text refused: {detail}"),
    "code.StorageError": ("ฐานข้อมูลไม่พร้อมใช้งาน กรุณาลองใหม่", "The database is unavailable; "
                          "try again."),
    "code.Conflict": ("ข้อมูลขัดแย้งกับที่บันทึกไว้", "This conflicts with what is stored."),
    "code.Refused": ("ระบบปฏิเสธคำขอนี้", "Refused."),
    "code.NotFound": ("ไม่พบ", "Not found."),
    "code.WorkflowError": ("เกิดข้อผิดพลาด", "Something went wrong."),
    "code.CsrfRefused": ("แบบฟอร์มหมดอายุหรือไม่ได้มาจากหน้านี้ กรุณาโหลดหน้าใหม่",
                         "The form expired or did not come from this site; reload the page."),
    "detail": ("รายละเอียด: {detail}", "Details: {detail}"),
    # error pages
    "page.forbidden": ("ไม่มีสิทธิ์เข้าถึง", "Not allowed"),
    "page.not_found": ("ไม่พบหน้านี้", "Not found"),
    "page.error": ("เกิดข้อผิดพลาด", "Error"),
    "page.back": ("กลับไปหน้างานของฉัน", "Back to My work"),
    # start
    "start.title": ("เริ่มโครงการ", "Start a program"),
    "start.program": ("โครงการ", "Program"),
    "start.area": ("ตำบล (ชื่อหรือรหัส 6 หลัก)", "Tambon (name or 6-digit code)"),
    "start.area_hint": ("พิมพ์ชื่อภาษาไทยหรืออังกฤษ เช่น \u201cบางขันหมาก ลพบุรี\u201d หรือรหัส 160117",
                        "Type a Thai or English name, e.g. \u201cBang Khan Mak, Lop Buri\u201d, "
                        "or the code 160117"),
    "start.fy": ("ปีงบประมาณ (พ.ศ.)", "Fiscal year (BE)"),
    "start.role": ("ในบทบาท", "As role"),
    "start.title_field": ("ชื่อเรื่อง (ถ้ามี)", "Title (optional)"),
    "start.submit": ("เริ่มโครงการ", "Start"),
    "start.bulk": ("เริ่มทุกตำบลในอำเภอ", "Start for every tambon of a district"),
    "start.district": ("อำเภอ (ชื่อหรือรหัส 4 หลัก)", "District (name or 4-digit code)"),
    "start.bulk_submit": ("เริ่มทุกตำบล", "Start them all"),
    "start.bulk_done": ("เริ่มแล้ว {n} ตำบล (ข้าม {skipped} ตำบลที่มีอยู่แล้ว)",
                        "Started {n} tambons ({skipped} already running were skipped)"),
    "start.migrate": ("มีโครงการฉบับใหม่? ย้ายโครงการที่ดำเนินอยู่ไปใช้ฉบับใหม่",
                      "A program has a new version? Move running instances to it"),
    "migrate.title": ("ย้ายไปใช้โครงการฉบับใหม่", "Migrate to a new program version"),
    "migrate.intro": ("ตรวจแผนก่อน: แต่ละโครงการจะอยู่ที่ขั้นใดในฉบับใหม่ และติดอะไร "
                      "จากนั้นจึงย้าย ทุกการย้ายบันทึกเป็นเหตุการณ์ในประวัติของโครงการ",
                      "Check the plan first: where each instance would stand in the new "
                      "version, and what stops it; then migrate. Each move is an event in the "
                      "instance's trail."),
    "migrate.program": ("โครงการ", "Program"),
    "migrate.to_version": ("ย้ายไปฉบับที่", "To version"),
    "migrate.from_version": ("จากฉบับที่ (ถ้าระบุ)", "From version (optional)"),
    "migrate.role": ("ในบทบาท", "Acting as"),
    "migrate.area": ("พื้นที่ (ถ้าระบุ)", "Area (optional)"),
    "migrate.fy": ("ปีงบประมาณ (ถ้าระบุ)", "Fiscal year (optional)"),
    "migrate.map": ("จับคู่ขั้นตอน (ถ้ามี)", "State map (if any)"),
    "migrate.map_hint": ("บรรทัดละหนึ่งคู่ ขั้นเดิม=ขั้นใหม่ เช่น kicked_off=launched",
                         "One OLD=NEW per line, e.g. kicked_off=launched"),
    "migrate.check": ("ตรวจแผน", "Check the plan"),
    "migrate.apply": ("ย้าย", "Migrate"),
    "migrate.plan": ("แผนการย้าย", "The plan"),
    "migrate.instance": ("โครงการ", "Instance"),
    "migrate.from": ("ตอนนี้", "Now"),
    "migrate.to": ("หลังย้าย", "After"),
    "migrate.ok": ("ย้ายได้", "Can move"),
    "migrate.moved": ("ย้ายแล้ว", "moved"),
    "migrate.planned": ("แผนสำหรับ {n} โครงการ (ยังไม่มีการเปลี่ยนแปลง)",
                        "A plan for {n} instances (nothing changed yet)."),
    "migrate.blocked": ("มีโครงการที่ย้ายไม่ได้ ต้องแก้ก่อนจึงจะย้ายได้",
                        "Some cannot move: nothing is migrated until they can."),
    "migrate.done": ("ย้ายแล้ว {n} โครงการ", "Migrated {n} instances."),
    "start.none": ("คุณไม่มีสิทธิ์เริ่มโครงการใด", "You may not start any program."),
    # report
    "report.title": ("สรุปภาพรวม", "Dashboard"),
    "report.province": ("จังหวัด", "Province"),
    "report.total": ("รวม", "Total"),
    "report.none": ("ไม่มีข้อมูล", "No instances."),
    "report.chart": ("แผนภูมิจำนวนตามสถานะ", "Chart of counts by state"),
    "list.title": ("รายการโครงการ", "Instances"),
    "list.more": ("หน้าถัดไป", "Next page"),
    # audit
    "audit.title": ("บันทึกการตรวจสอบ", "Audit log"),
    "audit.csv": ("ดาวน์โหลด CSV", "Download CSV"),
    "audit.xlsx": ("ดาวน์โหลด Excel (XLSX)", "Download Excel (XLSX)"),
    "audit.none": ("ไม่มีเหตุการณ์ตามเงื่อนไขนี้", "No events match."),
    "audit.instance": ("รายการ", "Instance"),
    "audit.denials": ("การปฏิเสธสิทธิ์", "Denials"),
    "audit.action": ("การกระทำ", "Action"),
    "audit.reason": ("เหตุผล", "Reason"),
    "audit.shown": ("แสดง {n} รายการล่าสุด", "Showing the latest {n}"),
    "verify.title": ("ตรวจความถูกต้องของบันทึก", "Verify the trail"),
    "verify.run": ("ตรวจเดี๋ยวนี้", "Verify now"),
    "verify.ok": ("ถูกต้องทั้งหมด: ตรวจ {events} เหตุการณ์ ใน {instances} รายการ",
                  "All intact: {events} events in {instances} instances checked"),
    "verify.broken": ("พบความผิดปกติ {n} รายการ", "{n} problems found"),
    "verify.first": ("เหตุการณ์แรกที่ผิดปกติ", "First broken event"),
    "verify.digest": ("ดาวน์โหลดไดเจสต์ (JSON)", "Download digest (JSON)"),
    "verify.digest_file": ("ไฟล์ไดเจสต์ (JSON) ที่ดาวน์โหลดไว้ก่อนหน้า",
                           "A digest file (JSON) downloaded earlier"),
    "verify.digest_hint": ("ตรวจว่าไม่มีสิ่งใดที่ไดเจสต์ครอบคลุมถูกลบหรือแก้ไข",
                           "Checks that nothing the digest covered was removed or changed."),
    "verify.digest_run": ("ตรวจเทียบกับไดเจสต์", "Verify against the digest"),
    "verify.digest_ok": ("และตรงกับไดเจสต์", "and the digest matches."),
    "verify.no_file": ("กรุณาเลือกไฟล์ไดเจสต์", "Choose a digest file."),
    "verify.trail": ("บันทึกรวม", "the trail"),
    # admin
    "admin.title": ("ผู้ดูแลระบบ", "Administration"),
    "admin.accounts": ("บัญชีผู้ใช้", "Accounts"),
    "admin.name": ("ชื่อผู้ใช้", "Name"),
    "admin.display": ("ชื่อที่แสดง", "Display name"),
    "admin.admin": ("ผู้ดูแล", "Admin"),
    "admin.disabled": ("ระงับแล้ว", "Disabled"),
    "admin.add": ("เพิ่มบัญชี", "Add account"),
    "admin.disable": ("ระงับ", "Disable"),
    "admin.enable": ("เปิดใช้", "Enable"),
    "admin.password": ("รหัสผ่านใหม่ (อย่างน้อย {n} ตัวอักษร)", "New password (at least {n} "
                       "characters)"),
    "admin.reset": ("ตั้งรหัสผ่านใหม่", "Reset password"),
    "admin.tokens": ("โทเค็น API", "API tokens"),
    "admin.token_label": ("ชื่อโทเค็น", "Label"),
    "admin.token_create": ("สร้างโทเค็น", "Create token"),
    "admin.token_once": ("โทเค็นใหม่ (แสดงครั้งเดียว คัดลอกเก็บไว้):", "New token (shown once; "
                         "copy it now):"),
    "admin.revoke": ("เพิกถอน", "Revoke"),
    "admin.expires": ("หมดอายุ", "Expires"),
    "admin.grants": ("สิทธิ์", "Grants"),
    "admin.role": ("บทบาท", "Role"),
    "admin.grant": ("ให้สิทธิ์", "Grant"),
    "admin.everywhere": ("ทุกพื้นที่", "everywhere"),
    "admin.all_programs": ("ทุกโครงการ", "all programs"),
    "admin.until": ("สิ้นสุดสิทธิ์", "Until"),
    "admin.until_hint": ("ไม่บังคับ สิทธิ์จะสิ้นสุดเมื่อหมดวันนั้น (เวลาประเทศไทย) "
                         "ถ้าไม่กรอกจะไม่มีวันสิ้นสุด",
                         "Optional: the grant ends at the end of that day (Thai time); "
                         "leave empty for a grant without an end."),
    "admin.no_end": ("ไม่มีกำหนด", "no end"),
    "admin.expired": ("หมดอายุแล้ว", "expired"),
    "admin.done": ("บันทึกแล้ว", "Done."),
    "admin.hooks": ("ผู้รับการแจ้งเตือน (เว็บฮุก อีเมล)",
                    "Notification receivers (webhooks, e-mail)"),
    "admin.hook_url": ("ปลายทาง", "URL"),
    "admin.hook_trigger": ("เฉพาะเหตุการณ์", "Trigger"),
    "admin.hook_secret": ("มีรหัสลงนาม", "Signed"),
    "admin.any": ("ทั้งหมด", "any"),
    "admin.no_hooks": ("ยังไม่มีผู้รับการแจ้งเตือน (เพิ่มด้วยคำสั่ง workflow hooks add)",
                       "No receivers yet (add one with workflow hooks add)"),
    "admin.dead": ("การแจ้งเตือนที่ส่งไม่สำเร็จ", "Failed deliveries (given up)"),
    "admin.no_dead": ("ไม่มีการแจ้งเตือนที่ส่งไม่สำเร็จ", "No failed deliveries"),
    "admin.delivery": ("รายการ", "Delivery"),
    "admin.hook": ("ผู้รับ", "Receiver"),
    "admin.event": ("เหตุการณ์", "Event"),
    "admin.attempts": ("จำนวนครั้งที่ส่ง", "Attempts"),
    "admin.last_error": ("ข้อผิดพลาดล่าสุด", "Last error"),
    "admin.retry": ("ส่งใหม่", "Retry"),
    "yes": ("ใช่", "yes"),
    "no": ("ไม่", "no"),
}


def lang_of(value: str | None) -> str:
    return value if value in LANGS else DEFAULT_LANG


def tr(lang: str, key: str, **values: object) -> str:
    """The text of ``key`` in ``lang`` with ``{name}`` placeholders filled."""
    th, en = TEXTS[key]
    text = th if lang == "th" else en
    return text.format(**values) if values else text


def error_text(lang: str, code: str, detail: str = "", **values: object) -> str:
    """An engine error in the reader's language, by its class (``code``); an unknown class
    falls back to its public parent's text with the engine's own words as the detail."""
    key = f"code.{code}" if f"code.{code}" in TEXTS else "code.WorkflowError"
    needed = dict(values)
    needed.setdefault("detail", detail)
    needed.setdefault("existing", "?")
    return tr(lang, key, **needed)


def field_problem(lang: str, reason: str) -> str:
    """One evidence problem (the engine's reason for one field) in the reader's language,
    keeping the engine's words for anything not recognised."""
    if lang == "en":
        return reason
    simple = {
        "required but missing": "err.required",
        "is empty": "err.required",
    }
    if reason in simple:
        return tr(lang, simple[reason])
    for start, key in (("expected a whole number", "err.not_int"),
                       ("expected a number", "err.not_number"),
                       ("expected a finite number", "err.not_number"),
                       ("expected a date", "err.not_date"),
                       ("must be one of", "err.choice")):
        if reason.startswith(start):
            return tr(lang, key)
    if "is not a real date" in reason:
        return tr(lang, "err.not_date")
    if " is below the minimum " in reason:
        return tr(lang, "err.below", n=reason.rsplit(" ", 1)[-1])
    if " is above the maximum " in reason:
        return tr(lang, "err.above", n=reason.rsplit(" ", 1)[-1])
    if "characters long" in reason:
        return tr(lang, "err.too_long")
    return _file_problem(lang, reason) or reason


_FILE_SIZE = re.compile(r"^is (\d+) bytes; at most (\d+) allowed$")
_FILE_TYPE = re.compile(r"^is (\S+) \(by its content\); allowed: (.+)$")


def _file_problem(lang: str, reason: str) -> str | None:
    """A ``file`` field's problem (``workflow.runtime.attachments.describe``) in Thai."""
    if reason == "is an empty file":
        return tr(lang, "err.file_empty")
    if reason.startswith("expected a file"):
        return tr(lang, "err.file_expected")
    if reason == "names a file that is not stored":
        return tr(lang, "err.file_missing")
    m = _FILE_SIZE.match(reason)
    if m:
        return tr(lang, "err.file_size", size=file_size(int(m.group(1)), lang),
                  limit=file_size(int(m.group(2)), lang))
    m = _FILE_TYPE.match(reason)
    if m:
        return tr(lang, "err.file_type", found=m.group(1), allowed=m.group(2))
    return None


def file_size(n: int, lang: str) -> str:
    """A size in bytes as people read it: "512 ไบต์", "2 KB", "1.5 MB"."""
    if n < 1024:
        return f"{n} ไบต์" if lang == "th" else f"{n} bytes"
    for unit, scale in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3)):
        if n < scale * 1024 or unit == "GB":
            value = n / scale
            text = f"{value:.1f}".removesuffix(".0") if value < 10 else f"{value:.0f}"
            return f"{text} {unit}"
    return str(n)  # pragma: no cover


def months(lang: str) -> tuple[str, ...]:
    return MONTHS_TH if lang == "th" else MONTHS_EN


def be_date(value: str | dt.date | None, lang: str) -> str:
    """A CE date (``YYYY-MM-DD`` or a date) as "17 ก.พ. 2564" / "17 Feb 2564"."""
    if value is None or value == "":
        return ""
    try:
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return str(value)
    month = MONTHS_TH_SHORT[day.month - 1] if lang == "th" else MONTHS_EN[day.month - 1][:3]
    return f"{day.day} {month} {day.year + BE_OFFSET}"


def be_datetime(value: str | None, lang: str) -> str:
    """A stored UTC timestamp as a BE date and the time in Thailand (UTC+7)."""
    if not value:
        return ""
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    local = moment.astimezone(dt.timezone(dt.timedelta(hours=7)))
    return f"{be_date(local.date(), lang)} {local:%H:%M} น." if lang == "th" else (
        f"{be_date(local.date(), lang)} {local:%H:%M}")


def be_due(value: str | None, lang: str) -> str:
    """A due time (UTC) as the day it falls due in Thailand: a due time at midnight is the end
    of the day before (``fiscal_date`` deadlines), shown as that date alone; any other time is
    shown with it."""
    if not value:
        return ""
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    local = moment.astimezone(dt.timezone(dt.timedelta(hours=7)))
    if local.time() == dt.time(0, 0):
        return be_date(local.date() - dt.timedelta(days=1), lang)
    return be_datetime(value, lang)


def current_fiscal_year(today: dt.date | None = None) -> int:
    return fiscal_year_of(today or dt.date.today())


def catalogue(lang: str) -> Mapping[str, str]:
    """Every text in one language (for the templates' ``t`` helper)."""
    return {k: (v[0] if lang == "th" else v[1]) for k, v in TEXTS.items()}
